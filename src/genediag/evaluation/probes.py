"""Out-of-distribution probes: inputs a classifier must refer to a human instead of labelling.

Four kinds, ``n`` of each, seeded: ``uniform_noise`` and ``smooth_noise`` (random pixels, and random blobs),
``blank`` (one grey level everywhere: an empty slide, a failed capture), and ``natural`` (crops of public-domain
photographs shipped with scikit-image and matplotlib — people, a cat, coins, text, a rocket — another kind of
picture altogether). Each is prepared the way the model's training images were (mode, square cache or face crop,
inversion, input size), so the probe tests the model, not the preprocessing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NATURAL = ("astronaut", "camera", "coins", "chelsea", "coffee", "page", "text", "rocket", "moon", "clock")


def _natural_pictures() -> list[np.ndarray]:
    import skimage.data as sk

    out = []
    for name in NATURAL:
        try:
            img = getattr(sk, name)()
        except Exception:  # an image that needs a download (not on this machine): skip it
            continue
        out.append(np.asarray(img, dtype=np.uint8))
    if not out:
        raise RuntimeError("no scikit-image sample picture is available for the natural-image probes")
    return out


def _as_mode(img: np.ndarray, mode: str) -> np.ndarray:
    import cv2

    if mode == "L":
        return img if img.ndim == 2 else cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else img[..., :3]


def probe_images(mode: str, n: int = 50, seed: int = 0, side: int = 128) -> dict[str, list[np.ndarray]]:
    """{kind: [uint8 images H×W (mode L) or H×W×3 (RGB)]}, before the dataset's own resizing."""
    import cv2

    rng = np.random.default_rng(seed)
    chans = () if mode == "L" else (3,)
    out: dict[str, list[np.ndarray]] = {"uniform_noise": [], "smooth_noise": [], "blank": [], "natural": []}
    pictures = _natural_pictures()
    for _ in range(n):
        out["uniform_noise"].append(rng.integers(0, 256, (side, side) + chans, dtype=np.uint8))
        coarse = rng.integers(0, 256, (8, 8) + chans, dtype=np.uint8).astype(np.float32)
        out["smooth_noise"].append(np.clip(cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC), 0, 255)
                                   .astype(np.uint8).reshape((side, side) + chans))
        out["blank"].append(np.full((side, side) + chans, int(rng.integers(0, 256)), np.uint8))
        pic = _as_mode(pictures[int(rng.integers(len(pictures)))], mode)
        h, w = pic.shape[:2]
        s = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        out["natural"].append(np.ascontiguousarray(pic[y:y + s, x:x + s]))
    return out


def prepare_probe(img: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """A probe in the model's cache representation (square cache with the dataset's resize/pad, or a face-template
    sized crop), as ingest would have stored it."""
    import cv2

    from genediag.data.decode import fit_square

    cache = spec.get("cache") or {}
    if spec.get("kind") == "face":
        h, w = spec["crop_shape"][:2]
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return fit_square(img, int(cache.get("size", spec["size"])), cache.get("resize", "pad"),
                      int(cache.get("pad_value", 255)), cache.get("scale"))
