"""Unit tests import this worktree's src/ (not whichever genediag the shared virtualenv has installed)."""

import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
SRC = str(Path(__file__).resolve().parents[2] / "src")
if sys.path[:1] != [SRC]:
    sys.path.insert(0, SRC)
