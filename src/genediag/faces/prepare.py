"""Face photos → aligned face crops, one photo at a time inside ``ingest@<face dataset>``.

Per photo (decoded once by ingest, EXIF orientation applied): MTCNN (facenet-pytorch, packaged weights) finds the
faces on a copy no larger than ``detect.max_side``; the most confident one is kept (box, probability, 5
landmarks). A photo with no face is searched again turned by each of ``detect.rotations`` degrees (people photographed
lying down or with a sideways camera); landmarks found there are mapped back to the photo. The kept face is
aligned onto the template (:func:`genediag.faces.align.align_face`) and that crop is the cache image. Photos are
decoded, detected and released one by one, so memory does not grow with the number of photos.

The review queue (``review_queue.csv`` and ``review_sheet.png`` in the dataset's DVC-tracked output folder, never in
git: they show faces) holds photos where
- no face was found (also not after the rotations) — quarantined;
- the kept face's probability is below ``review_below``;
- a second face is *comparable*: its box area and its probability are both at least ``second_face_ratio`` of the
  kept face's (hands, necks and small background faces are not).
Queued photos with a face train on synthetic data; on real data they stay out (quarantined with the reason) until
a reviewer accepts them (``queued_in_training: auto``; true / false force it). The reviewer's file
``review/<kind>/<dataset>.csv`` takes per photo ``exclude`` (ingest quarantines it), ``accept`` (the detector is
right), ``box`` (x1..y2: MTCNN's O-Net places the landmarks in that box) or ``landmarks`` (the 10 coordinates).

``align.detect: false`` is for datasets of crops that are already aligned (tight face crops): each photo is
resized to the template, with no detection.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genediag import io as gio
from genediag.config import ConfigError
from genediag.data.ingest import Quarantine, SourceRow
from genediag.faces.align import align_face, template
from genediag.faces.detect import (BOX_COLUMNS, POINT_COLUMNS, build_mtcnn, contact_sheet_png, detect_one,
                                   landmarks_in_box)

log = logging.getLogger(__name__)
USABLE = ("detected", "accepted", "manual_box", "manual_landmarks")
TRIM_EVERY = 25   # photos between two returns of freed heap memory to the system (release_free_memory)


def _malloc_trim():
    """glibc's ``malloc_trim`` (None elsewhere: musl, macOS, Windows)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Give the heap memory that freed photos left behind back to the system (glibc ``malloc_trim(0)``); False
    where there is no glibc.

    Photos of many different sizes (real collections: 1,519 distinct sizes in 2,527 photos) are decoded, resized
    and run through MTCNN one at a time; every one is released, but glibc keeps the freed blocks of each size in
    its heap (after a large block is freed it also raises its mmap threshold, so later photo-sized buffers come
    from the heap too), and the process's resident memory crept up with the number of photos: measured with
    benchmarks/face_detection_memory.py, 2,500 mixed-size photos (240–2400 px) went from 997 MB at a quarter of
    the run to 1,207 MB at the end without trimming (the benchmark's JSON has the figures with trimming, and the
    time the trims took)."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


def _rotate(image: np.ndarray, angle: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(image, k=(angle // 90) % 4))


def _unrotate_points(pts: np.ndarray, angle: int, shape: tuple[int, int]) -> np.ndarray:
    """Map (x, y) points found on ``np.rot90(image, angle // 90)`` back to the original image (H×W = shape).

    One counter-clockwise quarter turn of an image of width w sends (x, y) to (y, w − 1 − x), so undoing it sends
    (x', y') to (w − 1 − y', x'); the turns are undone from the last one, each with the width it was applied to."""
    h, w = shape
    out = np.array(pts, dtype=np.float32).reshape(-1, 2)
    turns = (angle // 90) % 4
    for t in range(turns, 0, -1):
        width = w if (t - 1) % 2 == 0 else h   # the width of the image before turn t
        x, y = out[:, 0].copy(), out[:, 1].copy()
        out[:, 0], out[:, 1] = width - 1 - y, x
    return out


def comparable_faces(det: dict[str, Any], ratio: float) -> int:
    """Faces found (the kept one included) whose box area and probability are at least `ratio` × the kept face's."""
    boxes, probs = det["boxes"], det["probs"]
    if len(boxes) <= 1:
        return len(boxes)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    k = int(np.argmax(probs))
    return int(((area >= ratio * area[k]) & (probs >= ratio * probs[k])).sum())


class FacePreparer:
    """The ingest preparer of face datasets (see the module doc)."""

    review_columns = tuple(BOX_COLUMNS + POINT_COLUMNS)

    def __init__(self, faces: dict[str, Any], synthetic: bool, dataset: str, review_file: str):
        self.det, self.align = faces["detect"], faces["align"]
        self.dataset, self.review_file = dataset, review_file
        pts, (w, h) = template(self.align["template"], self.align["scale"])
        self.shape = (h, w, 3)
        queued = self.det["queued_in_training"]
        self.queued_in_training = synthetic if queued == "auto" else bool(queued)
        self.mtcnn = build_mtcnn(self.det) if self.align["detect"] else None
        self.rows: list[dict[str, Any]] = []
        self.trimmed = 0   # times freed heap memory was returned to the system

    def _trim(self) -> None:
        if len(self.rows) % TRIM_EVERY == 0 and release_free_memory():
            self.trimmed += 1

    # ------------------------------------------------------------------------------------------ per photo
    def _detect(self, image: np.ndarray) -> tuple[dict[str, Any], int]:
        det = detect_one(self.mtcnn, image, self.det["max_side"])
        if det["box"] is not None:
            return det, 0
        for angle in self.det["rotations"]:
            turned = detect_one(self.mtcnn, _rotate(image, angle), self.det["max_side"])
            if turned["box"] is not None:
                shape = image.shape[:2]
                box_pts = np.array([[turned["box"][0], turned["box"][1]], [turned["box"][2], turned["box"][3]]])
                corners = _unrotate_points(box_pts, angle, shape)
                box = np.array([corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()],
                               np.float32)
                return {**turned, "box": box, "points": _unrotate_points(turned["points"], angle, shape)}, angle
        return det, 0

    def prepare(self, image: np.ndarray, row: SourceRow, review: dict[str, Any] | None):
        rec: dict[str, Any] = {"path": row.path, "_file": str(row.file), "label": row.label, "width": image.shape[1],
                               "height": image.shape[0], "n_faces": 0, "comparable_faces": 0, "prob": np.nan,
                               "rotation": 0, "status": "", "review": ""}
        self.rows.append(rec)
        self._trim()   # the previous photos' buffers are free by now
        if not self.align["detect"]:
            import cv2

            h, w = self.shape[:2]
            rec["status"] = "aligned_input"
            return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if image.shape[0] > h else cv2.INTER_LINEAR), {}
        action = (review or {}).get("action", "").lower()
        if action in ("box", "landmarks"):
            box, pts = _manual_geometry(review, action)
            if pts is None:
                pts, prob = landmarks_in_box(self.mtcnn, image, box)
                rec.update(prob=prob)
            _record_geometry(rec, box, pts)
            rec.update(status=f"manual_{action}", n_faces=1, comparable_faces=1)
        else:
            det, angle = self._detect(image)
            box, pts = det["box"], det["points"]
            rec.update(n_faces=det["n_faces"], prob=det["prob"], rotation=angle)
            if box is None:
                rec["status"] = "no_face"
                raise Quarantine(f"no face found (min_face_size {self.det['min_face_size']} px, also turned by "
                                 f"{self.det['rotations']} degrees)")
            _record_geometry(rec, box, pts)   # before the queue check: the review queue shows the kept face
            rec["comparable_faces"] = comparable_faces(det, self.det["second_face_ratio"])
            reasons = []
            if det["prob"] < self.det["review_below"]:
                reasons.append(f"low face probability {det['prob']:.3f} < {self.det['review_below']}")
            if rec["comparable_faces"] > 1:
                reasons.append(f"{rec['comparable_faces']} comparable faces; the most confident kept")
            rec["review"] = "; ".join(reasons)
            rec["status"] = "accepted" if action == "accept" else "detected"
            if reasons and action != "accept":
                rec["status"] = "queued"
                if not self.queued_in_training:
                    raise Quarantine(f"in the review queue ({rec['review']}): accept, box or exclude it in "
                                     f"{self.review_file}")
        crop = align_face(image, pts, self.align["template"], self.align["scale"], self.align["border"])
        return crop, {"detection": rec["status"], "prob": rec["prob"], "rotation": rec["rotation"]}

    # ------------------------------------------------------------------------------------------------ end
    def finish(self, out_dir: Path, accepted: list[dict], quarantined: list[dict]) -> dict[str, Any]:
        table = pd.DataFrame(self.rows)
        files = table.pop("_file") if len(table) else pd.Series(dtype=str)
        gio.write_with(out_dir / "detections.csv", lambda p: table.to_csv(p, index=False))
        in_queue = table["status"].isin(["queued", "no_face"]) if len(table) else pd.Series(dtype=bool)
        queue = table[in_queue]
        gio.write_with(out_dir / "review_queue.csv", lambda p: queue.to_csv(p, index=False))
        contact_sheet_png(queue, files[in_queue].tolist(), out_dir / "review_sheet.png",
                          int(self.det["contact_sheet_max"]), title=f"{self.dataset}: review queue ({len(queue)} photos)")
        status = table["status"].value_counts().sort_index().to_dict() if len(table) else {}
        found = int((table["n_faces"] > 0).sum()) if len(table) else 0
        return {"faces_config": {"detect": self.det, "align": self.align}, "faces": {
            "photos_decoded": len(table), "face_found": found,
            "face_found_rate": round(found / len(table), 6) if len(table) else None,
            "found_after_rotation": int((table["rotation"] != 0).sum()) if len(table) else 0,
            "status": {k: int(v) for k, v in status.items()},
            "review_queue": len(queue), "queued_in_training": self.queued_in_training,
            "comparable_multi_face": int((table["comparable_faces"] > 1).sum()) if len(table) else 0,
            "any_multi_face": int((table["n_faces"] > 1).sum()) if len(table) else 0,
            "template": self.align["template"], "scale": self.align["scale"], "border": self.align["border"],
        }}


def _record_geometry(rec: dict[str, Any], box: np.ndarray, pts: np.ndarray) -> None:
    """The kept face's box and 5 landmarks into its detections row (rounded to 0.01 px)."""
    for c, v in zip(BOX_COLUMNS, box):
        rec[c] = round(float(v), 2)
    for c, v in zip(POINT_COLUMNS, np.asarray(pts, dtype=np.float32).reshape(-1)):
        rec[c] = round(float(v), 2)


def _manual_geometry(review: dict[str, Any], action: str) -> tuple[np.ndarray, np.ndarray | None]:
    where = f"{review['file']}:{review['line']}"

    def nums(cols):
        vals = [review.get(c, "") for c in cols]
        if not all(vals):
            raise ConfigError(f"{where}: action {action} needs {', '.join(cols)}")
        try:
            return np.asarray([float(v) for v in vals], dtype=np.float32)
        except ValueError as exc:
            raise ConfigError(f"{where}: not a number ({exc})") from None

    if action == "landmarks":
        pts = nums(POINT_COLUMNS).reshape(5, 2)
        box = (nums(BOX_COLUMNS) if all(review.get(c) for c in BOX_COLUMNS) else _box_from_points(pts))
        return box, pts
    box = nums(BOX_COLUMNS)
    if not (box[2] > box[0] and box[3] > box[1]):
        raise ConfigError(f"{where}: box needs x2 > x1 and y2 > y1, got {box.tolist()}")
    return box, None


def _box_from_points(pts: np.ndarray) -> np.ndarray:
    """A face box around 5 landmarks (proportions of MTCNN boxes on frontal faces)."""
    eye_mid, mouth_mid = (pts[0] + pts[1]) / 2, (pts[3] + pts[4]) / 2
    h = float(np.linalg.norm(mouth_mid - eye_mid))
    c = (eye_mid + mouth_mid) / 2
    half = 1.1 * h
    return np.array([c[0] - half, c[1] - half * 1.1, c[0] + half, c[1] + half * 1.0], dtype=np.float32)
