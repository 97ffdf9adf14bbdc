"""A face dataset's photos aligned onto another template from the landmarks its ingest already found
(``faces.realign.<name>``, stage ``faces_realign@<name>``): a derived dataset in the ingest format (manifest,
images, summary) and its split, without a second MTCNN pass.

FaceNet wants 160×160 crops (template ``facenet``), the SE-ResNet64 runs 48×56 ones (``sphereface``, scale 0.5).
Detection is the dear part of a face ingest; the kept face's five landmarks are in the source's
``detections.csv`` (photo pixels, after any rotation retry and any reviewer's box or landmarks), so each accepted
photo is decoded again (the same decoder and limits; its SHA-256 must match the source manifest's) and warped onto
the new template. The derived dataset therefore holds exactly the source's photos, in the same rows, with the same
review decisions, and it takes the source's split unchanged — two models trained on the two alignments are tested
on the same photos of the same people (a paired comparison). Photos of an ``align.detect: false`` source (already
aligned crops) are resized to the new template instead.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genediag import io as gio
from genediag.config import ConfigError
from genediag.data.decode import Limits, decode_image, read_file
from genediag.data.ingest import ingest_summary, load_ingested
from genediag.faces.align import align_face, template
from genediag.faces.detect import POINT_COLUMNS

log = logging.getLogger(__name__)


def realign_dataset(name: str, cfg: dict[str, Any], source_dir: str | Path, source_split: str | Path,
                    photos: str | Path, out_dir: str | Path, out_split: str | Path) -> dict[str, Any]:
    """Write the derived dataset `name` (module doc). `cfg`: ``{source, photos, template, scale, border}``."""
    import cv2

    source_dir, out_dir, photos = Path(source_dir), Path(out_dir), Path(photos)
    src = ingest_summary(source_dir)
    if src.get("kind") not in ("face_syndromes", "face_identities") or not src.get("faces_config"):
        raise ConfigError(f"faces.realign.{name}: {source_dir} is not an ingested face dataset")
    if Path(src["root"]).resolve() != photos.resolve():
        raise ConfigError(f"faces.realign.{name}.photos: {photos} is not the source's photo folder {src['root']}")
    manifest, _ = load_ingested(source_dir)
    det = pd.read_csv(source_dir / "detections.csv", dtype={"path": str}, keep_default_na=False).set_index("path")
    align = {**src["faces_config"]["align"], "template": cfg["template"], "scale": float(cfg["scale"]),
             "border": cfg["border"] or src["faces_config"]["align"]["border"]}
    _, (w, h) = template(align["template"], align["scale"])
    ing = src["ingest"]
    limits = Limits.from_config(ing)
    crops = np.zeros((len(manifest), h, w, 3), np.uint8)
    for i, row in enumerate(manifest.itertuples(index=False)):
        data = read_file(photos / row.path, limits.max_bytes)
        if hashlib.sha256(data).hexdigest() != row.sha256:
            raise ConfigError(f"{photos / row.path}: changed since {source_dir} was ingested; re-run "
                              f"`dvc repro ingest@{source_dir.name}`")
        image = decode_image(data, ing["mode"], limits)
        rec = det.loc[row.path] if row.path in det.index else None
        if isinstance(rec, pd.DataFrame):
            rec = rec.iloc[0]
        if rec is not None and rec["status"] == "aligned_input":
            interp = cv2.INTER_AREA if image.shape[0] > h else cv2.INTER_LINEAR
            crops[i] = cv2.resize(image, (w, h), interpolation=interp)
            continue
        if rec is None or any(str(rec[c]) == "" for c in POINT_COLUMNS):
            raise ConfigError(f"{source_dir}/detections.csv: no landmarks for accepted photo {row.path}")
        pts = np.array([float(rec[c]) for c in POINT_COLUMNS], dtype=np.float64).reshape(5, 2)
        crops[i] = align_face(image, pts, align["template"], align["scale"], align["border"])
    out_dir.mkdir(parents=True, exist_ok=True)
    gio.save_npy(out_dir / "images.npy", crops)
    gio.write_with(out_dir / "manifest.csv", lambda p: manifest.to_csv(p, index=False))
    for f in ("detections.csv", "quarantine.csv", "review_queue.csv"):
        if (source_dir / f).is_file():
            shutil.copyfile(source_dir / f, out_dir / f)
    summary = {**src, "dataset": name, "image_shape": [h, w, 3], "derived_from": source_dir.name,
               "faces_config": {**src["faces_config"], "align": align},
               "faces": {**(src.get("faces") or {}), "template": align["template"], "scale": align["scale"],
                         "border": align["border"]},
               "realigned": {"from": source_dir.name, "template": align["template"], "scale": align["scale"],
                             "photos": len(manifest)}}
    gio.write_json(out_dir / "summary.json", summary)
    split = pd.read_csv(source_split, dtype=str, keep_default_na=False)
    if len(split) != len(manifest) or not (split["sha256"].to_numpy() == manifest["sha256"].to_numpy()).all():
        raise ConfigError(f"{source_split} does not match {source_dir}/manifest.csv; re-run the split stage")
    out_split = Path(out_split)
    gio.write_with(out_split, lambda p: shutil.copyfile(source_split, p))
    src_json = Path(source_split).with_suffix(".json")
    if src_json.is_file():
        import json

        info = json.loads(src_json.read_text())
        gio.write_json(out_split.with_suffix(".json"), {**info, "taken_from": Path(source_split).stem})
    log.info("realign %s: %d photos of %s aligned onto %s (%d×%d), split of %s taken unchanged", name, len(manifest),
             source_dir.name, align["template"], w, h, Path(source_split).stem)
    return summary
