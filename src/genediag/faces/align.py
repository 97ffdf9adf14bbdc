"""Alignment: a similarity transform (rotation, uniform scale, translation; least squares, Umeyama 1991) takes the
5 landmarks of each photo onto a template, and the photo is resampled into the template's frame.

Templates (x, y of left eye, right eye, nose, mouth left, mouth right, in the image's left-right sense):
- ``sphereface``: 96×112 (W×H), the template of the A-softmax (SphereFace) work — the default;
- ``arcface``: 112×112, InsightFace's ArcFace template (the SphereFace one shifted 8 px right).
``scale`` resizes the template (0.5: 48×56 crops for the small default run; 1.0: the paper's size).

The output is an image cache in the ingest format (``manifest.csv`` + ``images.npy`` N×H×W×3 uint8 +
``summary.json``), so :func:`genediag.data.ingest.load_ingested`, the split and the datasets read it as they read
any ingested dataset. Crops are decoded pixels only: EXIF and every other metadata of the photo are dropped
(orientation is applied first). Photos without usable landmarks (no face, excluded by the reviewer) are listed
with the reason in ``excluded.csv``: nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genediag.config import ConfigError, check_keys
from genediag.faces.detect import POINT_COLUMNS, read_photo

log = logging.getLogger(__name__)

TEMPLATES: dict[str, dict[str, Any]] = {
    "sphereface": {"size": (96, 112), "points": [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                                                 [33.5493, 92.3655], [62.7299, 92.2041]]},
    "arcface": {"size": (112, 112), "points": [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                               [41.5493, 92.3655], [70.7299, 92.2041]]},
}
DEFAULTS: dict[str, Any] = {"template": "sphereface", "scale": 1.0, "border": "constant"}
USABLE = ("detected", "manual_box", "manual_landmarks")


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


def align_dataset(detect_dir: str | Path, cfg: dict[str, Any], out_dir: str | Path, where: str = "faces_align") -> dict:
    """Align every usable detection of a dataset into an ingest-format cache."""
    from tqdm import tqdm

    check_keys(cfg, set(DEFAULTS), where)
    cfg = {**DEFAULTS, **cfg}
    pts_t, (w, h) = template(cfg["template"], float(cfg["scale"]))
    det = pd.read_csv(Path(detect_dir) / "detections.csv", dtype={"label": str, "group_id": str}, keep_default_na=False,
                      na_values={c: [""] for c in POINT_COLUMNS})
    usable = det["status"].isin(USABLE) & det[POINT_COLUMNS].notna().all(axis=1)
    excluded = det[~usable]
    kept = det[usable].reset_index(drop=True)
    images = np.zeros((len(kept), h, w, 3), dtype=np.uint8)
    for i, rec in enumerate(tqdm(kept.itertuples(), total=len(kept), desc="align", unit="face", mininterval=2.0)):
        pts = np.array([getattr(rec, c) for c in POINT_COLUMNS], dtype=np.float64).reshape(5, 2)
        images[i] = align_face(read_photo(rec.path), pts, cfg["template"], float(cfg["scale"]), cfg["border"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = pd.DataFrame({"index": np.arange(len(kept)), "path": kept["path"], "label": kept["label"],
                             "group_id": kept["group_id"], "cell_id": "", "sha256": kept["sha256"],
                             "width": kept["width"], "height": kept["height"], "source_index": kept["index"],
                             "detection": kept["status"], "prob": kept["prob"]})
    manifest.to_csv(out_dir / "manifest.csv", index=False)
    np.save(out_dir / "images.npy", images)
    reasons = excluded["status"].map({"no_face": "no face found (in the review queue)",
                                      "excluded": "excluded by the reviewer"}).fillna("no landmarks")
    notes = excluded["note"].astype(str)
    pd.DataFrame({"path": excluded["path"], "label": excluded["label"],
                  "reason": [r + (f": {n}" if n else "") for r, n in zip(reasons, notes)]}).to_csv(
        out_dir / "excluded.csv", index=False)
    summary = {"input": len(det), "aligned": len(kept), "excluded": len(excluded),
               "excluded_reasons": reasons.value_counts().sort_index().to_dict(), "template": cfg["template"],
               "scale": float(cfg["scale"]), "image_shape": [h, w, 3], "mode": "RGB",
               "source": str(Path(detect_dir) / "detections.csv"),
               "classes": manifest["label"].value_counts().sort_index().to_dict(),
               "groups": int(manifest["group_id"].nunique())}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%s: %d of %d photos aligned to the %s template (%d×%d); %d excluded (see %s)", where, len(kept), len(det),
             cfg["template"], w, h, len(excluded), out_dir / "excluded.csv")
    if len(kept) == 0:
        raise ConfigError(f"{where}: no photo has usable landmarks; see {Path(detect_dir) / 'detections.csv'}")
    return summary
