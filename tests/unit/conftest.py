"""Unit tests: import genediag from this worktree's src/ (first on sys.path), whatever else is installed."""

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
if sys.path[:1] != [SRC]:
    if SRC in sys.path:
        sys.path.remove(SRC)
    sys.path.insert(0, SRC)
