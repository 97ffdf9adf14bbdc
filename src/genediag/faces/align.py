"""Alignment: a similarity transform (rotation, uniform scale, translation; least squares, Umeyama 1991) takes the
5 landmarks of each photo onto a template, and the photo is resampled into the template's frame.

Templates (x, y of left eye, right eye, nose, mouth left, mouth right, in the image's left-right sense):
- ``sphereface``: 96×112 (W×H), the template of the A-softmax (SphereFace) work — the default;
- ``arcface``: 112×112, InsightFace's ArcFace template (the SphereFace one shifted 8 px right);
- ``facenet``: 160×160, the ArcFace layout scaled to 160 px, for FaceNet (Inception-ResNet-v1) inputs.
``scale`` resizes the template (0.5: 48×56 crops for the small default run; 1.0: the paper's size).

:mod:`genediag.faces.prepare` calls :func:`align_face` for every photo during ingest; the crops are the dataset's
image cache. Crops are decoded pixels only: EXIF and every other metadata of the photo are dropped (orientation is
applied first).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from genediag.config import ConfigError

log = logging.getLogger(__name__)

TEMPLATES: dict[str, dict[str, Any]] = {
    "sphereface": {"size": (96, 112), "points": [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                                                 [33.5493, 92.3655], [62.7299, 92.2041]]},
    "arcface": {"size": (112, 112), "points": [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                               [41.5493, 92.3655], [70.7299, 92.2041]]},
}
# facenet: 160×160 for FaceNet (Inception-ResNet-v1); the ArcFace layout scaled to 160 px
TEMPLATES["facenet"] = {"size": (160, 160), "points": [[x * 160 / 112, y * 160 / 112]
                                                        for x, y in TEMPLATES["arcface"]["points"]]}


def template(name: str, scale: float = 1.0) -> tuple[np.ndarray, tuple[int, int]]:
    """(5×2 template points, (W, H)) for a template name at a scale."""
    if name not in TEMPLATES:
        raise ConfigError(f"template: unknown '{name}' ({', '.join(TEMPLATES)})")
    t = TEMPLATES[name]
    w, h = t["size"]
    return np.asarray(t["points"], dtype=np.float64) * scale, (int(round(w * scale)), int(round(h * scale)))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 matrix M of the least-squares similarity with M·[src;1] ≈ dst (Umeyama; no reflection)."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var = (s0**2).sum() / len(src)
    if var <= 0:
        raise ValueError("landmarks are all at one point")
    cov = d0.T @ s0 / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[1, 1] = -1
    R = U @ D @ Vt
    c = (S * np.diag(D)).sum() / var
    t = mu_d - c * R @ mu_s
    return np.hstack([c * R, t[:, None]])


def align_face(image: np.ndarray, points: np.ndarray, name: str = "sphereface", scale: float = 1.0,
               border: str = "constant") -> np.ndarray:
    """The aligned crop (H×W×3 uint8) of `image` whose 5 landmarks are `points` (5×2, original pixels).

    A face much larger than the template is first reduced with area averaging, so the crop is not aliased."""
    import cv2

    dst, (w, h) = template(name, scale)
    pts = np.asarray(points, dtype=np.float64).reshape(5, 2)
    M = similarity_transform(pts, dst)
    shrink = 1.0 / np.sqrt(abs(np.linalg.det(M[:, :2])))  # photo px per template px
    if shrink > 1.5:
        oh, ow = image.shape[:2]
        nw, nh = max(1, round(ow / shrink)), max(1, round(oh / shrink))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        # pixel centres: x_new + 0.5 = (x_old + 0.5) · nw / ow
        pts = (pts + 0.5) * np.array([nw / ow, nh / oh]) - 0.5
        M = similarity_transform(pts, dst)
    mode = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT101}
    if border not in mode:
        raise ConfigError(f"border: '{border}' is not one of {list(mode)}")
    return cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=mode[border], borderValue=(0, 0, 0))
