"""Augmentation that keeps a karyogram's layout: every chromosome stays in its slot.

A karyogram's meaning is positional (chromosome 21 is always in row 4, slot 3), so only pixel-level changes
are allowed — brightness ±25 %, noise on up to 5 % of the pixels, Gaussian blur — and never flips, rotations,
crops or shifts. Every change is drawn as explicit parameters (:func:`sample_params`) and applied by
:func:`apply_params`, so the balancing stage can record exactly what it generated and any generated image can
be re-created from its record.

``augment`` config (all optional; types, ranges and defaults: ``genediag.schema.KARYOGRAM_AUGMENT``)::

    brightness: 0.25        # factor drawn uniformly from [1 − b, 1 + b], pixel values multiplied by it
    noise_fraction: 0.05    # share of pixels drawn uniformly from [0, f]; those get Gaussian noise
    noise_sigma: 40.0       # s.d. of that noise, grey levels
    blur_prob: 0.5          # probability of a Gaussian blur
    blur_sigma: [0.3, 1.2]  # its s.d., px (drawn uniformly)

:func:`layout_preserved` is the check that no content moved: the augmented image must correlate better with
the original than with any flip, 90° rotation or small shift of it. The balancing stage runs it on every image
it generates.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def sample_params(rng: np.random.Generator, cfg: dict[str, Any]) -> dict[str, Any]:
    """Draw one augmentation (JSON-ready): brightness factor, noise share/s.d./seed, blur s.d. (0 = none)."""
    b = float(cfg["brightness"])
    blur = float(rng.uniform(*cfg["blur_sigma"])) if rng.random() < float(cfg["blur_prob"]) else 0.0
    return {
        "brightness": round(float(rng.uniform(1.0 - b, 1.0 + b)), 6),
        "blur_sigma": round(blur, 6),
        "noise_fraction": round(float(rng.uniform(0.0, float(cfg["noise_fraction"]))), 6),
        "noise_sigma": float(cfg["noise_sigma"]),
        "noise_seed": int(rng.integers(0, 2**31 - 1)),
    }


def apply_params(img: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Apply a recorded augmentation to a uint8 image (H×W or H×W×C): brightness, then blur, then noise.

    Pixel-level only: output pixel (y, x) is computed from the input around (y, x)."""
    import cv2

    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    out = img.astype(np.float32) * float(params["brightness"])
    if params["blur_sigma"] > 0:
        out = cv2.GaussianBlur(out, (0, 0), float(params["blur_sigma"]), borderType=cv2.BORDER_REFLECT)
    h, w = img.shape[:2]
    k = int(round(float(params["noise_fraction"]) * h * w))
    if k > 0:
        rng = np.random.default_rng(int(params["noise_seed"]))
        flat = rng.choice(h * w, size=k, replace=False)
        ys, xs = np.unravel_index(flat, (h, w))
        noise = rng.normal(0.0, float(params["noise_sigma"]), size=(k,) + img.shape[2:]).astype(np.float32)
        out[ys, xs] += noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def augment(img: np.ndarray, rng: np.random.Generator, cfg: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    params = sample_params(rng, cfg)
    return apply_params(img, params), params


def blank_top(img: np.ndarray, fraction: float, value: int = 255) -> np.ndarray:
    """Set the top `fraction` of the rows to `value` (the background); a copy."""
    out = np.array(img, copy=True)
    rows = int(round(float(fraction) * out.shape[0]))
    if rows > 0:
        out[:rows] = value
    return out


# ------------------------------------------------------------------------------------------- layout check
def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift content by (dy, dx) pixels, repeating the edge (no wrap-around)."""
    h, w = a.shape
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return a[np.ix_(ys, xs)]


def layout_candidates(img: np.ndarray, max_shift: int = 3) -> dict[str, np.ndarray]:
    """The image and its moved versions: flips, 90°/180°/270° rotations, transposes, shifts by 1..max_shift px."""
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 3:
        a = a.mean(axis=2)
    out = {"identity": a, "flip_lr": a[:, ::-1], "flip_ud": a[::-1], "rot180": a[::-1, ::-1]}
    if a.shape[0] == a.shape[1]:
        out.update(rot90=np.rot90(a, 1), rot270=np.rot90(a, 3), transpose=a.T, antitranspose=np.rot90(a, 2).T)
    for d in range(1, max_shift + 1):
        for dy, dx in ((d, 0), (-d, 0), (0, d), (0, -d)):
            out[f"shift({dy},{dx})"] = _shift(a, dy, dx)
    return out


def best_layout_match(original: np.ndarray, augmented: np.ndarray, max_shift: int = 3) -> str:
    """Which version of `original` (identity, a flip, a rotation, a shift) `augmented` resembles most."""
    b = np.asarray(augmented, dtype=np.float32)
    if b.ndim == 3:
        b = b.mean(axis=2)
    scores = {k: _ncc(v, b) for k, v in layout_candidates(original, max_shift).items()}
    return max(scores, key=scores.get)


def layout_preserved(original: np.ndarray, augmented: np.ndarray, max_shift: int = 3) -> bool:
    """True when `augmented` is best explained by `original` in place (no flip, rotation or shift)."""
    return best_layout_match(original, augmented, max_shift) == "identity"
