import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


@pytest.fixture
def make_png():
    """Write a small grayscale PNG whose content depends on `seed` (so hashes differ)."""

    def _make(path: Path, seed: int = 0, size=(20, 30), mode="L") -> Path:
        rng = np.random.default_rng(seed)
        arr = rng.integers(0, 256, size=(size[1], size[0]) + ((3,) if mode == "RGB" else ()), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr, mode).save(path)
        return path

    return _make
