import sys
from pathlib import Path

# the worktree's src/ first, as tests/conftest.py does (this folder's tests must not import another checkout)
SRC = str(Path(__file__).resolve().parents[2] / "src")
if sys.path[:1] != [SRC]:
    sys.path.insert(0, SRC)
