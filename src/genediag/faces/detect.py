"""Face detection with facenet-pytorch's MTCNN (P/R/O-Net weights ship inside the wheel: nothing is downloaded).

Detection reads the *original* photos listed in the ingest manifest (accepted rows only; ingest has already
quarantined unreadable files and exact duplicates, with reasons), not the square thumbnail cache: boxes and
landmarks are in the photo's own pixels (after EXIF orientation), which is what a reviewer sees and what
alignment needs for a sharp crop. The file's SHA-256 must still match the manifest (else: re-run ingest).

Per photo: MTCNN runs in batches of same-size images (MTCNN's batch mode needs equal sizes); its object arrays
are cast to float32; when a batch still fails, that batch is re-run one image at a time (logged). The most
confident face is kept: box, probability and 5 landmarks (image-left eye, image-right eye, nose, mouth left,
mouth right) and the number of faces found.

Review: photos with no face, a probability below ``review_below``, or more than one face go to a review queue
(CSV + contact sheet PNG). A reviewer's ``manual`` CSV (tracked by DVC as a dependency, so editing it re-runs
detection and everything downstream on the next ``dvc repro``) overrides the detector per photo:

    path,action,x1,y1,x2,y2,left_eye_x,left_eye_y,right_eye_x,right_eye_y,nose_x,nose_y,mouth_left_x,mouth_left_y,mouth_right_x,mouth_right_y,note

``path`` as in the review queue. ``action``: ``box`` (use x1..y2; MTCNN's O-Net places the 5 landmarks inside
that box), ``landmarks`` (use the 10 coordinates; the box is derived from them unless given), ``exclude`` (not
a usable face photo: left out of alignment, with `note` as the reason), ``accept`` (the detector's result is
right: clears the queue entry). An empty action is inferred from the filled columns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from genediag.config import ConfigError, check_keys

log = logging.getLogger(__name__)

POINTS = ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
POINT_COLUMNS = [f"{p}_{a}" for p in POINTS for a in ("x", "y")]
BOX_COLUMNS = ["x1", "y1", "x2", "y2"]
MANUAL_COLUMNS = ["path", "action", *BOX_COLUMNS, *POINT_COLUMNS, "note"]
ACTIONS = ("box", "landmarks", "exclude", "accept")
DETECTION_COLUMNS = ["index", "path", "label", "group_id", "sha256", "width", "height", "status", "source", "n_faces",
                     "prob", *BOX_COLUMNS, *POINT_COLUMNS, "review", "note"]

DEFAULTS: dict[str, Any] = {
    "manual": None,               # reviewer overrides (CSV, see module doc); a header-only file = none
    "min_face_size": 40,          # px; smaller faces are not searched for (MTCNN's pyramid starts there)
    "thresholds": [0.6, 0.7, 0.7],  # P-, R-, O-Net thresholds
    "factor": 0.709,              # pyramid scale step
    "review_below": 0.97,         # a kept face less probable than this goes to the review queue
    "batch_size": 16,             # images per MTCNN call (same-size buckets)
    "max_side": 640,              # larger photos are searched on a copy downscaled to this side (coordinates
                                  # are mapped back to the original pixels)
    "device": "cpu",
    "threads": 1,                 # torch intra-op threads (0 = torch's default); 1 is fastest on 2 shared cores
    "contact_sheet_max": 60,      # thumbnails on the review contact sheet
}


def resolve_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    check_keys(cfg, set(DEFAULTS), where)
    out = {**DEFAULTS, **cfg}
    if len(out["thresholds"]) != 3:
        raise ConfigError(f"{where}.thresholds: three values (P-, R-, O-Net), got {out['thresholds']}")
    if int(out["min_face_size"]) < 12:
        raise ConfigError(f"{where}.min_face_size: at least 12 px (MTCNN's smallest window)")
    return out


def read_photo(path: str | Path) -> np.ndarray:
    """RGB uint8 array of a photo, EXIF orientation applied (all other metadata is ignored)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))


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
    return {"n_faces": 0, "prob": float("nan"), "box": None, "points": None, "boxes": np.zeros((0, 4), np.float32)}


def _pick(boxes, probs, points) -> dict[str, Any]:
    """Most confident face of one image from MTCNN's (object) arrays, cast to float32."""
    if boxes is None or len(boxes) == 0 or probs is None or probs[0] is None:
        return _empty()
    boxes = np.asarray(np.stack([np.asarray(b, dtype=np.float32) for b in boxes]), dtype=np.float32).reshape(-1, 4)
    probs = np.asarray([np.float32(p) for p in probs], dtype=np.float32).reshape(-1)
    points = np.asarray(np.stack([np.asarray(p, dtype=np.float32) for p in points]), dtype=np.float32).reshape(-1, 5, 2)
    i = int(np.argmax(probs))
    return {"n_faces": int(len(probs)), "prob": float(probs[i]), "box": boxes[i], "points": points[i], "boxes": boxes}


def _rescale(det: dict[str, Any], f: float) -> dict[str, Any]:
    if f == 1.0 or det["box"] is None:
        return det
    return {**det, "box": det["box"] / f, "points": det["points"] / f, "boxes": det["boxes"] / f}


def detect_batch(mtcnn, images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """MTCNN on equal-size images in one call; on failure, one image at a time."""
    try:
        boxes, probs, points = mtcnn.detect([Image.fromarray(im) for im in images], landmarks=True)
        return [_pick(b, p, q) for b, p, q in zip(boxes, probs, points)]
    except Exception as exc:  # facenet-pytorch's batch path has edge cases (object arrays, empty crops)
        if len(images) == 1:
            log.warning("MTCNN failed on one image (%s: %s); recorded as no face", type(exc).__name__, exc)
            return [_empty()]
        log.warning("MTCNN batch of %d failed (%s: %s); retrying one image at a time", len(images),
                    type(exc).__name__, exc)
        return [detect_batch(mtcnn, [im])[0] for im in images]


def detect_images(mtcnn, images: Sequence[np.ndarray], batch_size: int = 16, progress: bool = True,
                  max_side: int | None = None) -> list[dict[str, Any]]:
    """Detections for every image, in input order, batching images of equal size together. Images larger than
    `max_side` are searched on a downscaled copy; coordinates always refer to the original pixels."""
    import cv2
    from tqdm import tqdm

    factors = []
    work = []
    for im in images:
        f = min(1.0, max_side / max(im.shape[:2])) if max_side else 1.0
        factors.append(f)
        work.append(im if f == 1.0 else cv2.resize(im, (max(1, round(im.shape[1] * f)), max(1, round(im.shape[0] * f))),
                                                   interpolation=cv2.INTER_AREA))
    images = work
    buckets: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        buckets.setdefault(tuple(im.shape), []).append(i)
    out: list[dict[str, Any] | None] = [None] * len(images)
    bar = tqdm(total=len(images), desc="MTCNN", unit="img", disable=not progress, mininterval=2.0)
    for shape in sorted(buckets):
        idx = buckets[shape]
        for k in range(0, len(idx), batch_size):
            chunk = idx[k : k + batch_size]
            for i, det in zip(chunk, detect_batch(mtcnn, [images[i] for i in chunk])):
                out[i] = _rescale(det, factors[i])
            bar.update(len(chunk))
    bar.close()
    return out  # type: ignore[return-value]


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


# ---------------------------------------------------------------------------------------------- manual
def _resolve_key(p: str, base: Path | None) -> str:
    q = Path(p)
    if not q.is_absolute() and base is not None and not q.exists():
        q = base / q
    try:
        return str(q.resolve())
    except OSError:
        return str(q)


def load_manual(path: str | Path | None, known_paths: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Reviewer overrides keyed by manifest path; every row must name a known photo and be complete."""
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: manual boxes file not found; create it with the header "
                          f"{','.join(MANUAL_COLUMNS)} (no rows = no overrides)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, comment="#")
    if "path" not in df.columns:
        raise ConfigError(f"{path}: needs a 'path' column (header: {','.join(MANUAL_COLUMNS)})")
    unknown_cols = sorted(set(df.columns) - set(MANUAL_COLUMNS))
    if unknown_cols:
        raise ConfigError(f"{path}: unknown column(s) {unknown_cols}; allowed: {MANUAL_COLUMNS}")
    by_resolved = {_resolve_key(p, None): p for p in known_paths}
    exact = set(known_paths)
    out: dict[str, dict[str, Any]] = {}
    for line, rec in enumerate(df.to_dict("records"), start=2):
        where = f"{path}:{line}"
        raw = rec["path"].strip()
        if not raw:
            raise ConfigError(f"{where}: empty path")
        key = raw if raw in exact else by_resolved.get(_resolve_key(raw, path.parent))
        if key is None:
            raise ConfigError(f"{where}: path '{raw}' is not a photo of this dataset; copy the path from the "
                              f"review queue CSV")
        if key in out:
            raise ConfigError(f"{where}: '{raw}' appears twice")

        def num(cols: Sequence[str]) -> np.ndarray | None:
            vals = [rec.get(c, "").strip() for c in cols]
            if not any(vals):
                return None
            if not all(vals):
                missing = [c for c, v in zip(cols, vals) if not v]
                raise ConfigError(f"{where}: incomplete coordinates, missing {missing}")
            try:
                return np.asarray([float(v) for v in vals], dtype=np.float32)
            except ValueError as exc:
                raise ConfigError(f"{where}: not a number ({exc})") from exc

        box, pts = num(BOX_COLUMNS), num(POINT_COLUMNS)
        action = rec.get("action", "").strip().lower() or ("landmarks" if pts is not None else "box" if box is not None else "")
        if action not in ACTIONS:
            raise ConfigError(f"{where}: action '{action or '(empty)'}' must be one of {ACTIONS} (or fill box or "
                              f"landmark columns)")
        if action == "box" and box is None:
            raise ConfigError(f"{where}: action box needs x1,y1,x2,y2")
        if action == "landmarks" and pts is None:
            raise ConfigError(f"{where}: action landmarks needs the 10 landmark coordinates")
        if box is not None and not (box[2] > box[0] and box[3] > box[1]):
            raise ConfigError(f"{where}: box needs x2 > x1 and y2 > y1, got {box.tolist()}")
        out[key] = {"action": action, "box": box, "points": None if pts is None else pts.reshape(5, 2),
                    "note": rec.get("note", "").strip()}
    return out


# ------------------------------------------------------------------------------------------------- run
def run_detection(ingest_dir: str | Path, cfg: dict[str, Any], out_dir: str | Path, review_csv: str | Path,
                  contact_sheet: str | Path, where: str = "faces_detect", progress: bool = True) -> dict[str, Any]:
    """Detect faces in every accepted photo of an ingested dataset; write detections, summary and review queue."""
    import torch

    from genediag.data.ingest import load_ingested

    cfg = resolve_config(cfg, where)
    ingest_dir, out_dir = Path(ingest_dir), Path(out_dir)
    manifest, _ = load_ingested(ingest_dir)
    manual = load_manual(cfg["manual"], list(manifest["path"]))
    torch.manual_seed(0)
    if int(cfg["threads"]) > 0:
        torch.set_num_threads(int(cfg["threads"]))
    images = []
    for rec in manifest.itertuples():
        data = Path(rec.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != rec.sha256:
            raise ConfigError(f"{rec.path}: the file changed since ingest ({ingest_dir}/manifest.csv); re-run ingest")
        images.append(read_photo(rec.path))
    mtcnn = build_mtcnn(cfg)
    dets = detect_images(mtcnn, images, int(cfg["batch_size"]), progress, int(cfg["max_side"] or 0) or None)

    rows = []
    thr = float(cfg["review_below"])
    for rec, img, det in zip(manifest.itertuples(), images, dets):
        row: dict[str, Any] = {"index": rec.index, "path": rec.path, "label": rec.label, "group_id": rec.group_id,
                               "sha256": rec.sha256, "width": img.shape[1], "height": img.shape[0],
                               "n_faces": det["n_faces"], "prob": det["prob"], "review": "", "note": ""}
        box, pts = det["box"], det["points"]
        status, source = ("detected", "mtcnn") if box is not None else ("no_face", "mtcnn")
        reasons = []
        if box is None:
            reasons.append(f"no face found (min_face_size {cfg['min_face_size']} px)")
        else:
            if det["prob"] < thr:
                reasons.append(f"low probability {det['prob']:.3f} < {thr}")
            if det["n_faces"] > 1:
                reasons.append(f"{det['n_faces']} faces; the most confident kept")
        m = manual.get(rec.path)
        if m is not None:
            row["note"] = m["note"]
            if m["action"] == "exclude":
                status, source, box, pts = "excluded", "manual", None, None
            elif m["action"] == "box":
                pts, prob = landmarks_in_box(mtcnn, img, m["box"])
                box, status, source, row["prob"] = m["box"], "manual_box", "manual", prob
            elif m["action"] == "landmarks":
                pts = m["points"]
                box = m["box"] if m["box"] is not None else _box_from_points(pts)
                status, source = "manual_landmarks", "manual"
            reasons = []  # reviewed: leaves the queue
        row.update(status=status, source=source, review="; ".join(reasons))
        for c, v in zip(BOX_COLUMNS, box if box is not None else [np.nan] * 4):
            row[c] = round(float(v), 2)
        flat = np.asarray(pts, dtype=np.float32).reshape(-1) if pts is not None else [np.nan] * 10
        for c, v in zip(POINT_COLUMNS, flat):
            row[c] = round(float(v), 2)
        row["prob"] = round(float(row["prob"]), 6) if row["prob"] == row["prob"] else np.nan
        rows.append(row)
    table = pd.DataFrame(rows, columns=DETECTION_COLUMNS)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "detections.csv", index=False)
    queue = table[table["review"] != ""]
    review_csv = Path(review_csv)
    review_csv.parent.mkdir(parents=True, exist_ok=True)
    queue[["index", "path", "label", "status", "n_faces", "prob", *BOX_COLUMNS, *POINT_COLUMNS, "review"]].to_csv(
        review_csv, index=False)
    contact_sheet_png(queue, images, contact_sheet, int(cfg["contact_sheet_max"]),
                      title=f"{Path(ingest_dir).name}: review queue ({len(queue)} photo{'s' if len(queue) != 1 else ''})",
                      other_boxes={i: d["boxes"] for i, d in enumerate(dets) if d["n_faces"] > 1})
    usable = table["status"].isin(["detected", "manual_box", "manual_landmarks"])
    found = table["n_faces"] > 0
    summary = {"photos": len(table), "detected_by_mtcnn": int(found.sum()),
               "detection_rate": round(float(found.mean()), 6),
               "usable": int(usable.sum()), "status": table["status"].value_counts().sort_index().to_dict(),
               "review_queue": len(queue), "multi_face": int((table["n_faces"] > 1).sum()),
               "low_probability": int(queue["review"].str.contains("low probability").sum()),
               "no_face": int(queue["review"].str.contains("no face").sum()),
               "manual_overrides": len(manual), "review_below": thr, "min_face_size": int(cfg["min_face_size"]),
               "mean_prob": round(float(table["prob"].mean()), 6) if table["prob"].notna().any() else None}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%s: %d photos, MTCNN found a face in %d (%.1f%%); review queue %d; manual overrides %d", where,
             len(table), summary["detected_by_mtcnn"], 100 * summary["detection_rate"], len(queue), len(manual))
    return summary


def _box_from_points(pts: np.ndarray) -> np.ndarray:
    """A face box around 5 landmarks (proportions of MTCNN boxes on frontal faces)."""
    eye_mid = (pts[0] + pts[1]) / 2
    mouth_mid = (pts[3] + pts[4]) / 2
    h = np.linalg.norm(mouth_mid - eye_mid)
    c = (eye_mid + mouth_mid) / 2
    half = 1.1 * h
    return np.array([c[0] - half, c[1] - half * 1.1, c[0] + half, c[1] + half * 1.0], dtype=np.float32)


def contact_sheet_png(queue: pd.DataFrame, images: Sequence[np.ndarray], path: str | Path, max_items: int,
                      title: str, thumb: int = 160, other_boxes: dict[int, np.ndarray] | None = None) -> Path:
    """Thumbnails of the queued photos with the kept box (red), other faces (yellow), the 5 landmarks (green) and
    the reason; or a note that the queue is empty."""
    import textwrap

    from PIL import ImageDraw

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = queue.head(max_items)
    cols = max(1, min(6, len(items)))
    rows = max(1, math.ceil(len(items) / cols))
    cell_h = thumb + 42
    sheet = Image.new("RGB", (cols * thumb, 24 + rows * cell_h), "white")
    d = ImageDraw.Draw(sheet)
    more = f" — first {len(items)} shown" if len(queue) > len(items) else ""
    d.text((4, 6), (title + more) if len(items) else title + ": nothing to review", fill=(0, 0, 0))
    for k, (pos, rec) in enumerate(zip(items.index, items.itertuples())):
        img = Image.fromarray(images[int(pos)])  # the queue keeps the detection table's row positions
        f = thumb / max(img.size)
        im = img.resize((max(1, round(img.size[0] * f)), max(1, round(img.size[1] * f))))
        di = ImageDraw.Draw(im)
        for b in (other_boxes or {}).get(int(pos), []):
            di.rectangle([b[0] * f, b[1] * f, b[2] * f, b[3] * f], outline=(255, 220, 0), width=1)
        if rec.x1 == rec.x1:
            di.rectangle([rec.x1 * f, rec.y1 * f, rec.x2 * f, rec.y2 * f], outline=(255, 0, 0), width=2)
        for c in range(5):
            x, y = getattr(rec, POINT_COLUMNS[2 * c]), getattr(rec, POINT_COLUMNS[2 * c + 1])
            if x == x:
                di.ellipse([x * f - 2, y * f - 2, x * f + 2, y * f + 2], fill=(0, 255, 0))
        r, c = divmod(k, cols)
        sheet.paste(im, (c * thumb, 24 + r * cell_h))
        d.text((c * thumb + 2, 24 + r * cell_h + thumb + 1), f"#{rec.index} {Path(rec.path).name[:22]}", fill=(0, 0, 0))
        for j, line in enumerate(textwrap.wrap(str(rec.review), 27)[:2]):
            d.text((c * thumb + 2, 24 + r * cell_h + thumb + 14 + 13 * j), line, fill=(160, 0, 0))
    sheet.save(path)
    return path
