"""Ingest: turn a source (CSV manifest or folder-per-class tree) into a validated, decoded image cache.

Every input file ends up either in ``manifest.csv`` (accepted) or in ``quarantine.csv`` (with a reason), so
``input == accepted + quarantined`` always holds. Accepted images are decoded once, normalised to one mode and
one square size, and stored as a single ``images.npy`` array that training memory-maps: no JPEG/TIFF/PNG
decoding happens per epoch.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from genediag.config import ConfigError, check_keys

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
MANIFEST_COLUMNS = ["index", "path", "label", "group_id", "cell_id", "sha256", "width", "height"]
DEFAULTS: dict[str, Any] = {
    "source": None,        # CSV manifest (path,label[,group_id[,cell_id]]) or folder-per-class tree
    "mode": "L",           # L (grayscale) or RGB
    "size": 64,            # side of the square cache images, pixels
    "resize": "pad",       # pad: keep aspect ratio, pad with `pad_value`; stretch: plain resize
    "pad_value": 255,      # background for padding (255 = white, as chromosome crops on white)
    "min_side": 8,         # smaller images are quarantined
    "max_side": 20000,     # larger images are quarantined (decompression-bomb guard)
}


class IngestError(RuntimeError):
    """The source as a whole cannot be read (missing, wrong columns); per-file problems are quarantined."""


@dataclass
class SourceRow:
    path: Path
    label: str
    group_id: str
    cell_id: str
    extra: dict[str, Any]
    problem: str | None = None  # set when the row itself is broken (no label, missing file, …)


def resolve_config(cfg: dict[str, Any], where: str = "ingest") -> dict[str, Any]:
    check_keys(cfg, set(DEFAULTS), where)
    out = {**DEFAULTS, **cfg}
    if not out["source"]:
        raise ConfigError(f"{where}.source: give a CSV manifest or a folder-per-class directory")
    if out["mode"] not in ("L", "RGB"):
        raise ConfigError(f"{where}.mode: must be 'L' or 'RGB', got {out['mode']!r}")
    if out["resize"] not in ("pad", "stretch"):
        raise ConfigError(f"{where}.resize: must be 'pad' or 'stretch', got {out['resize']!r}")
    return out


# ----------------------------------------------------------------------------------------------- sources
def read_source(source: str | Path) -> list[SourceRow]:
    """List every input item of a CSV manifest or a folder-per-class tree, in a stable order."""
    source = Path(source)
    if source.is_dir():
        return _read_folder(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return _read_csv(source)
    if not source.exists():
        raise IngestError(f"{source}: source not found; set ingest.<dataset>.source to a CSV manifest or a folder")
    raise IngestError(f"{source}: not a directory or a .csv manifest")


def _read_csv(path: Path) -> list[SourceRow]:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise IngestError(f"{path}: cannot parse CSV manifest ({exc})") from exc
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise IngestError(
            f"{path}: manifest lacks column(s) {missing}; expected path,label[,group_id[,cell_id]] "
            f"(found {list(df.columns)})"
        )
    base = path.parent
    rows = []
    extra_cols = [c for c in df.columns if c not in ("path", "label", "group_id", "cell_id")]
    for rec in df.to_dict("records"):
        raw = rec["path"].strip()
        p = Path(raw) if Path(raw).is_absolute() else base / raw
        label = rec["label"].strip()
        problem = None
        if not raw:
            problem = "empty path in manifest"
        elif not label:
            problem = "missing label in manifest"
        elif not p.exists():
            problem = "file not found"
        group = rec.get("group_id", "").strip() or f"img:{raw}"
        rows.append(SourceRow(p, label, group, rec.get("cell_id", "").strip(), {c: rec[c] for c in extra_cols}, problem))
    return rows


def _read_folder(root: Path) -> list[SourceRow]:
    """``root/<label>/<file>`` or ``root/<label>/<group_id>/<file>`` (a subfolder names the patient)."""
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise IngestError(f"{root}: no class folders; expected {root}/<label>/<image files>")
    rows = []
    stray = sorted(f for f in root.iterdir() if f.is_file() and not f.name.startswith("."))
    for f in stray:
        rows.append(SourceRow(f, "", "", "", {}, "file outside any class folder"))
    for d in class_dirs:
        for f in sorted(p for p in d.rglob("*") if p.is_file()):
            rel = f.relative_to(d)
            if any(part.startswith(".") for part in rel.parts):
                continue  # hidden files (.DS_Store, editor swap files) are not data
            group = rel.parts[0] if len(rel.parts) > 1 else f"img:{d.name}/{rel}"
            rows.append(SourceRow(f, d.name, group, "", {}))
    return rows


# ------------------------------------------------------------------------------------------- validation
def decode_image(data: bytes, mode: str, min_side: int, max_side: int) -> tuple[np.ndarray | None, str | None]:
    """Decode bytes fully; return (array in `mode`, None) or (None, reason)."""
    if len(data) == 0:
        return None, "empty file (0 bytes)"
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if min(w, h) < min_side:
                return None, f"too small ({w}x{h} < {min_side} px)"
            if max(w, h) > max_side:
                return None, f"too large ({w}x{h} > {max_side} px)"
            img.load()
    except UnidentifiedImageError:
        return None, "not an image (unrecognised format)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        return None, f"cannot decode: {exc}"
    return _normalise_mode(img, mode), None


def _normalise_mode(img: Image.Image, mode: str) -> np.ndarray:
    """16-bit and float images are rescaled to 8 bits; alpha is composited on white; palette expanded."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        img = Image.fromarray(np.round(arr).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "P", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert(mode))


def fit_square(arr: np.ndarray, size: int, resize: str, pad_value: int) -> np.ndarray:
    """Resize to size×size: 'pad' keeps the aspect ratio and pads; 'stretch' ignores it."""
    import cv2

    h, w = arr.shape[:2]
    if resize == "stretch":
        interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR
        return cv2.resize(arr, (size, size), interpolation=interp)
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(arr, (nw, nh), interpolation=interp)
    out = np.full((size, size) + arr.shape[2:], pad_value, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = small
    return out


# ------------------------------------------------------------------------------------------------ ingest
def ingest(cfg: dict[str, Any], out_dir: str | Path, where: str = "ingest") -> dict[str, Any]:
    """Validate every source item, write manifest.csv, quarantine.csv, images.npy and summary.json."""
    cfg = resolve_config(cfg, where)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_source(cfg["source"])
    log.info("ingest %s: %d input items from %s", where, len(rows), cfg["source"])

    size, channels = int(cfg["size"]), (3 if cfg["mode"] == "RGB" else None)
    shape = (len(rows), size, size) + ((channels,) if channels else ())
    cache = np.lib.format.open_memmap(out_dir / "images.tmp.npy", mode="w+", dtype=np.uint8, shape=shape)
    accepted: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for row in tqdm(rows, desc=f"ingest {where}", unit="img", mininterval=2.0):
        shown = str(row.path)
        if row.problem:
            quarantined.append({"path": shown, "label": row.label, "reason": row.problem})
            continue
        try:
            data = row.path.read_bytes()
        except OSError as exc:
            quarantined.append({"path": shown, "label": row.label, "reason": f"cannot read: {exc.strerror or exc}"})
            continue
        arr, reason = decode_image(data, cfg["mode"], int(cfg["min_side"]), int(cfg["max_side"]))
        if arr is None:
            quarantined.append({"path": shown, "label": row.label, "reason": reason})
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            quarantined.append({"path": shown, "label": row.label, "reason": f"duplicate of {seen[digest]} (same sha256)"})
            continue
        seen[digest] = shown
        i = len(accepted)
        cache[i] = fit_square(arr, size, cfg["resize"], int(cfg["pad_value"]))
        accepted.append({
            "index": i, "path": shown, "label": row.label, "group_id": row.group_id, "cell_id": row.cell_id,
            "sha256": digest, "width": arr.shape[1], "height": arr.shape[0], **row.extra,
        })
    cache.flush()
    n_acc = len(accepted)
    final = np.array(cache[:n_acc])  # shrink to the accepted rows
    del cache
    np.save(out_dir / "images.npy", final)
    (out_dir / "images.tmp.npy").unlink()

    manifest = pd.DataFrame(accepted, columns=MANIFEST_COLUMNS + sorted({k for r in accepted for k in r} - set(MANIFEST_COLUMNS)))
    manifest.to_csv(out_dir / "manifest.csv", index=False)
    pd.DataFrame(quarantined, columns=["path", "label", "reason"]).to_csv(out_dir / "quarantine.csv", index=False)
    if len(rows) != n_acc + len(quarantined):  # every input must be accounted for
        raise AssertionError(f"ingest bookkeeping: {len(rows)} inputs != {n_acc} accepted + {len(quarantined)} quarantined")
    summary = {
        "source": str(cfg["source"]),
        "input": len(rows),
        "accepted": n_acc,
        "quarantined": len(quarantined),
        "quarantine_reasons": _reason_counts(quarantined),
        "classes": manifest["label"].value_counts().sort_index().to_dict() if n_acc else {},
        "groups": int(manifest["group_id"].nunique()) if n_acc else 0,
        "image_shape": list(final.shape[1:]),
        "mode": cfg["mode"],
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if quarantined:
        log.warning("ingest %s: %d of %d items quarantined (see %s): %s", where, len(quarantined), len(rows),
                    out_dir / "quarantine.csv", summary["quarantine_reasons"])
    if n_acc == 0:
        raise IngestError(f"{cfg['source']}: no usable images (all {len(rows)} quarantined; see {out_dir / 'quarantine.csv'})")
    log.info("ingest %s: %d accepted, %d quarantined, %d classes, %d groups", where, n_acc, len(quarantined),
             len(summary["classes"]), summary["groups"])
    return summary


def _reason_counts(quarantined: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for q in quarantined:
        key = q["reason"].split(":")[0].split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def load_ingested(out_dir: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The manifest and a read-only memory map of the image cache, row i of one = row i of the other."""
    out_dir = Path(out_dir)
    manifest = pd.read_csv(out_dir / "manifest.csv", dtype={"label": str, "group_id": str, "cell_id": str},
                           keep_default_na=False)
    images = np.load(out_dir / "images.npy", mmap_mode="r")
    if len(manifest) != len(images):
        raise IngestError(f"{out_dir}: manifest has {len(manifest)} rows but images.npy has {len(images)}; re-run ingest")
    return manifest, images
