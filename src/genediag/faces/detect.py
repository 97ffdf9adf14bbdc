"""Face detection primitives: facenet-pytorch's MTCNN (P/R/O-Net weights ship inside the wheel: nothing is
downloaded), run on one photo at a time by :mod:`genediag.faces.prepare` during ingest.

:func:`detect_one` searches a copy no larger than ``max_side`` (coordinates map back to the photo's pixels) and
returns the most confident face (box, probability, 5 landmarks: image-left eye, image-right eye, nose, mouth left,
mouth right) with every face found; MTCNN's object arrays are cast to float32, and a failure inside MTCNN is
recorded as "no face" (logged), never a crash. :func:`landmarks_in_box` runs O-Net inside a reviewer's box.
:func:`contact_sheet_png` draws the review queue.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from PIL import Image

log = logging.getLogger(__name__)

POINTS = ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
POINT_COLUMNS = [f"{p}_{a}" for p in POINTS for a in ("x", "y")]
BOX_COLUMNS = ["x1", "y1", "x2", "y2"]


def build_mtcnn(cfg: dict[str, Any]):
    """MTCNN with the packaged weights; its three nets in channels_last (on CPU, 2–3× faster max-pooling in
    torch 2.14, same boxes to 1e-4 px)."""
    import torch
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(min_face_size=int(cfg["min_face_size"]), thresholds=list(cfg["thresholds"]),
                  factor=float(cfg["factor"]), select_largest=False, keep_all=True, post_process=False,
                  device=cfg["device"])
    for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
        net.to(memory_format=torch.channels_last)
    return mtcnn.eval()


def _empty() -> dict[str, Any]:
    return {"n_faces": 0, "prob": float("nan"), "box": None, "points": None, "boxes": np.zeros((0, 4), np.float32),
            "probs": np.zeros(0, np.float32)}


def _pick(boxes, probs, points) -> dict[str, Any]:
    """Most confident face of one image from MTCNN's (object) arrays, cast to float32."""
    if boxes is None or len(boxes) == 0 or probs is None or probs[0] is None:
        return _empty()
    boxes = np.asarray(np.stack([np.asarray(b, dtype=np.float32) for b in boxes]), dtype=np.float32).reshape(-1, 4)
    probs = np.asarray([np.float32(p) for p in probs], dtype=np.float32).reshape(-1)
    points = np.asarray(np.stack([np.asarray(p, dtype=np.float32) for p in points]), dtype=np.float32).reshape(-1, 5, 2)
    i = int(np.argmax(probs))
    return {"n_faces": int(len(probs)), "prob": float(probs[i]), "box": boxes[i], "points": points[i], "boxes": boxes,
            "probs": probs}


def detect_one(mtcnn, image: np.ndarray, max_side: int | None = None) -> dict[str, Any]:
    """Faces in one RGB photo (see the module doc); coordinates in the photo's own pixels."""
    import cv2

    f = min(1.0, max_side / max(image.shape[:2])) if max_side else 1.0
    work = image if f == 1.0 else cv2.resize(image, (max(1, round(image.shape[1] * f)),
                                                      max(1, round(image.shape[0] * f))), interpolation=cv2.INTER_AREA)
    try:
        boxes, probs, points = mtcnn.detect(Image.fromarray(work), landmarks=True)
        det = _pick(boxes, probs, points)
    except Exception as exc:  # facenet-pytorch has edge cases (empty crops, object arrays)
        log.warning("MTCNN failed on a %s photo (%s: %s); recorded as no face", work.shape, type(exc).__name__, exc)
        return _empty()
    if f != 1.0 and det["box"] is not None:
        det = {**det, "box": det["box"] / f, "points": det["points"] / f, "boxes": det["boxes"] / f}
    return det


def landmarks_in_box(mtcnn, image: np.ndarray, box: Sequence[float]) -> tuple[np.ndarray, float]:
    """Run MTCNN's O-Net on a given (e.g. reviewer-drawn) box: 5 landmarks inside it and O-Net's face probability.

    The box is made square around its centre as MTCNN does before O-Net (``rerec``), cropped with zero padding
    outside the image, resized to 48×48 (area), normalised like MTCNN."""
    import torch
    import torch.nn.functional as F

    x1, y1, x2, y2 = map(float, box)
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    sx1, sy1 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(2, int(round(side)))
    h, w = image.shape[:2]
    crop = np.zeros((s, s, 3), dtype=np.float32)
    ax1, ay1, ax2, ay2 = max(sx1, 0), max(sy1, 0), min(sx1 + s, w), min(sy1 + s, h)
    if ax2 > ax1 and ay2 > ay1:
        crop[ay1 - sy1 : ay2 - sy1, ax1 - sx1 : ax2 - sx1] = image[ay1:ay2, ax1:ax2]
    t = torch.from_numpy(crop).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(48, 48), mode="area")
    t = (t - 127.5) * 0.0078125
    with torch.no_grad():
        _, pts, prob = mtcnn.onet(t.to(next(mtcnn.onet.parameters()).device))
    pts = pts[0].cpu().numpy()
    # as facenet-pytorch: x = w·p[0:5] + x1 − 1, y = h·p[5:10] + y1 − 1 for the padded square box (1-based)
    xs = s * pts[:5] + sx1
    ys = s * pts[5:10] + sy1
    return np.stack([xs, ys], 1).astype(np.float32), float(prob[0, 1])


def contact_sheet_png(queue: pd.DataFrame, files: Sequence[str], path: str | Path, max_items: int, title: str,
                      thumb: int = 160) -> Path:
    """Thumbnails of the queued photos (read again from `files`, one at a time) with the kept box (red), the 5
    landmarks (green) and the reason; or a note that the queue is empty."""
    import textwrap

    from PIL import ImageDraw

    from genediag import io as gio
    from genediag.data.decode import DecodeError, Limits, load_image

    path = Path(path)
    items = queue.head(max_items)
    cols = max(1, min(6, len(items)))
    rows = max(1, math.ceil(len(items) / cols))
    cell_h = thumb + 42
    sheet = Image.new("RGB", (cols * thumb, 24 + rows * cell_h), "white")
    d = ImageDraw.Draw(sheet)
    more = f" — first {len(items)} shown" if len(queue) > len(items) else ""
    d.text((4, 6), (title + more) if len(items) else title + ": nothing to review", fill=(0, 0, 0))
    for k, (rec, file) in enumerate(zip(items.to_dict("records"), files)):
        try:
            img = Image.fromarray(load_image(file, "RGB", Limits(min_side=1))[0])
        except DecodeError:
            continue
        f = thumb / max(img.size)
        im = img.resize((max(1, round(img.size[0] * f)), max(1, round(img.size[1] * f))))
        di = ImageDraw.Draw(im)
        if rec.get("x1") == rec.get("x1") and rec.get("x1") is not None:
            di.rectangle([rec["x1"] * f, rec["y1"] * f, rec["x2"] * f, rec["y2"] * f], outline=(255, 0, 0), width=2)
        for c in range(5):
            x, y = rec.get(POINT_COLUMNS[2 * c]), rec.get(POINT_COLUMNS[2 * c + 1])
            if x is not None and x == x:
                di.ellipse([x * f - 2, y * f - 2, x * f + 2, y * f + 2], fill=(0, 255, 0))
        r, c = divmod(k, cols)
        sheet.paste(im, (c * thumb, 24 + r * cell_h))
        d.text((c * thumb + 2, 24 + r * cell_h + thumb + 1), Path(str(rec["path"])).name[:24], fill=(0, 0, 0))
        reason = rec.get("review") or rec.get("status", "")
        for j, line in enumerate(textwrap.wrap(str(reason), 27)[:2]):
            d.text((c * thumb + 2, 24 + r * cell_h + thumb + 14 + 13 * j), line, fill=(160, 0, 0))
    gio.write_with(path, lambda p: sheet.save(p, format="PNG"))
    return path
