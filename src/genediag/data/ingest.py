"""Ingest: a dataset's source (CSV manifest or folder-per-class tree) → a validated, decoded image cache.

Every input item ends up in ``manifest.csv`` (accepted) or ``quarantine.csv`` (``path,label,reason``), so
``input == accepted + quarantined`` always holds and nothing is dropped without a row saying why. Accepted images
are decoded once (:mod:`genediag.data.decode`), prepared to the cache shape and stored in one ``images.npy``
that training memory-maps.

Sources (``datasets.<name>.source``):
- a CSV with columns ``path,label[,group_id[,cell_id[,split]]]`` (names set by ``columns``), paths relative to
  the CSV's folder, extra columns kept (a user column named like a computed one, e.g. ``index`` or ``sha256``,
  is kept as ``user_<name>``);
- a folder tree ``<root>/<label>/<file>`` or ``<root>/<label>/<patient>/<file>``.
The folder of the CSV (or the tree) is the *data root*: paths are stored relative to it, and a path that leaves
it (``..``, an absolute path, a symbolic link) is quarantined, never read, unless ``allow_outside_root``.

Groups (``group_by``): ``column`` (the group column), ``folder`` (the patient subfolder), ``label`` (identity
sets: the person is the class), ``file`` (every image its own group: patients may then straddle splits, so
this is logged as a warning), ``auto`` (column or folder when present, else file).

Labels (``labels``): null keeps every label; a list or a named set (``chromosomes24``, ``chromosomes32``) is an
allow-list; a mapping renames labels (``{"chr1": "1", "25": null}``; null or absent = not in the task). Rows
outside it are quarantined with the reason ``label not in task``.

Reviewer corrections: ``review/<kind>/<dataset>.csv`` (optional; columns ``path,action,label,note`` plus the
face box/landmark columns) — ``exclude`` quarantines an item with the note as reason, ``relabel`` gives it
``label``; face datasets also take ``box``, ``landmarks`` and ``accept`` (see :mod:`genediag.faces.prepare`).

Duplicates: an image whose decoded pixels equal an earlier one's is quarantined as a duplicate when the labels
agree, and every copy is quarantined as a *label conflict* when they do not. Near-copies (a few pixels changed)
are found by the split (:func:`genediag.data.split.near_duplicate_pairs`), which keeps them in one split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from tqdm import tqdm

from genediag import io as gio
from genediag.config import ConfigError
from genediag.data.marker import SYNTHETIC_MARKER, is_synthetic, write_synthetic_marker  # noqa: F401
from genediag.data.decode import DecodeError, Limits, decode_image, fit_square, read_file
from genediag.data.tasks import NAMED_LABEL_SETS
from genediag.schema import resolve_dataset

log = logging.getLogger(__name__)

COMPUTED = ["index", "path", "label", "group_id", "cell_id", "fixed_split", "sha256", "pixel_sha256", "width",
            "height"]
RESERVED = set(COMPUTED) | {"split", "target", "source_index", "generated"}
MANIFEST_NAME = "manifest.csv"   # a source folder holding this file is read through it
REVIEW_COLUMNS = ["path", "action", "label", "note"]


class IngestError(ValueError):
    """The source as a whole cannot be read (missing, wrong columns); per-item problems are quarantined."""


class Quarantine(Exception):
    """Raised by a preparer for an item that cannot be used; the message is the quarantine reason."""


@dataclass
class SourceRow:
    path: str                      # as shown and stored: relative to the data root (POSIX)
    file: Path | None              # what to read; None when the row must not be read
    label: str
    group_id: str
    cell_id: str = ""
    fixed_split: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None     # the row itself is unusable (no label, outside the root, …)


class Preparer(Protocol):
    """Turns a decoded image into its cache entry (a branch may detect and align faces here)."""

    shape: tuple[int, ...]

    def prepare(self, image: np.ndarray, row: SourceRow, review: dict[str, Any] | None) -> tuple[np.ndarray, dict]:
        ...

    def finish(self, out_dir: Path, accepted: list[dict], quarantined: list[dict]) -> dict[str, Any]:
        ...


class SquarePreparer:
    """The default: fit the image into the square cache (``ingest.resize``: pad, stretch or preserve)."""

    def __init__(self, ingest: dict[str, Any]):
        self.cfg = ingest
        self.shape = (ingest["size"], ingest["size"]) + ((3,) if ingest["mode"] == "RGB" else ())
        self.clipped = 0

    def prepare(self, image, row, review):
        cfg = self.cfg
        if cfg["resize"] == "preserve" and max(image.shape[:2]) * cfg["scale"] > cfg["size"]:
            self.clipped += 1
        return fit_square(image, cfg["size"], cfg["resize"], cfg["pad_value"], cfg["scale"]), {}

    def finish(self, out_dir, accepted, quarantined):
        if self.clipped:
            log.warning("resize: preserve: %d image(s) larger than the canvas at scale %g were shrunk to fit; "
                        "lower ingest.scale", self.clipped, self.cfg["scale"])
        return {"shrunk_to_fit": self.clipped} if self.cfg["resize"] == "preserve" else {}


# ------------------------------------------------------------------------------------------------- sources
def _display(name: str) -> str:
    """A file name as text, with undecodable bytes shown as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _utf8_problem(rel: str) -> str | None:
    try:
        rel.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return "file name is not valid UTF-8: rename it (e.g. convmv -f latin1 -t utf8)"


def confine(root: Path, raw: str, allow_outside: bool) -> tuple[str, Path | None, str | None]:
    """(stored path, file to read, problem) for a manifest path `raw` relative to `root`.

    Inside the root the path is normalised and every component is checked for a symbolic link; a path that
    leaves the root is a problem *before* anything is looked up there (no existence oracle)."""
    if not raw:
        return raw, None, "empty path in manifest"
    given = Path(raw)
    joined = given if given.is_absolute() else root / given
    norm = Path(os.path.normpath(joined))
    try:
        rel = norm.relative_to(root)
    except ValueError:
        if allow_outside:
            return str(norm), norm, None
        return raw, None, "path outside the data root (set allow_outside_root: true to allow it)"
    cur = root
    for part in rel.parts:
        cur = cur / part
        if cur.is_symlink():
            return rel.as_posix(), None, "symbolic link (not followed): copy the file into the data root"
    return rel.as_posix(), norm, None


def read_source(cfg: dict[str, Any], where: str = "ingest") -> tuple[Path, list[SourceRow], dict[str, Any]]:
    """(data root, every input item in a stable order, notes) of a CSV manifest or a folder-per-class tree.

    A folder holding a ``manifest.csv`` is read through that manifest (the folder is the data root, and as a DVC
    dependency it covers the images too, not only the CSV)."""
    source = Path(cfg["source"])
    if source.is_dir() and (source / MANIFEST_NAME).is_file():
        return source, *_read_csv(source / MANIFEST_NAME, cfg)
    if source.is_dir():
        return source, *_read_folder(source, cfg)
    if source.is_file() and source.suffix.lower() == ".csv":
        return source.parent, *_read_csv(source, cfg)
    if not source.exists():
        raise IngestError(f"{source}: source not found; set {where}.source to a CSV manifest or a folder")
    raise IngestError(f"{source}: not a folder or a .csv manifest")


def _read_csv(path: Path, cfg: dict[str, Any]) -> tuple[list[SourceRow], dict[str, Any]]:
    cols = cfg["columns"]
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the manifest as UTF-8")
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise IngestError(f"{path}: cannot parse CSV manifest ({exc})") from exc
    missing = [cols[c] for c in ("path", "label") if cols[c] not in df.columns]
    if missing:
        raise IngestError(f"{path}: manifest lacks column(s) {missing}; expected {cols['path']},{cols['label']}"
                          f"[,{cols['group']}[,{cols['cell']}]] (found {list(df.columns)})")
    used = {cols[c] for c in ("path", "label", "group", "cell", "split")}
    extra_cols = [c for c in df.columns if c not in used]
    renamed = {c: f"user_{c}" for c in extra_cols if c in RESERVED}
    if renamed:
        log.warning("%s: column(s) %s are computed by ingest; the manifest's values are kept as %s", path,
                    sorted(renamed), sorted(renamed.values()))
    group_by = cfg["group_by"]
    has_group = cols["group"] in df.columns
    if group_by == "column" and not has_group:
        raise IngestError(f"{path}: group_by: column but no '{cols['group']}' column")
    if group_by == "folder":
        raise IngestError(f"{path}: group_by: folder is for folder sources; use column, label or file")
    mode = group_by if group_by != "auto" else ("column" if has_group else "file")
    root = path.parent.resolve()
    rows = []
    for rec in df.to_dict("records"):
        raw = rec[cols["path"]].strip()
        shown, file, problem = confine(root, raw, cfg["allow_outside_root"])
        label = rec[cols["label"]].strip()
        if problem is None and not label:
            problem = "missing label in manifest"
        group = rec.get(cols["group"], "").strip() if mode == "column" else ""
        if mode == "label":
            group = label
        if not group:
            group = f"file:{shown}"
        fixed = rec.get(cols["split"], "").strip() if cols["split"] in df.columns else ""
        if problem is None and fixed not in ("", "train", "val", "test"):
            problem = f"split column says '{fixed}' (expected train, val, test or empty)"
        extra = {renamed.get(c, c): rec[c] for c in extra_cols}
        rows.append(SourceRow(shown, file, label, group, rec.get(cols["cell"], "").strip(), fixed, extra, problem))
    notes = {"group_by": mode, "renamed_columns": renamed}
    if mode == "file":
        notes["warning"] = ("no group column: every image is its own group, so one patient's images can land in "
                            "two splits; give a group_id column")
        log.warning("%s: %s", path, notes["warning"])
    return rows, notes


def _read_folder(root: Path, cfg: dict[str, Any]) -> tuple[list[SourceRow], dict[str, Any]]:
    """``root/<label>/<file>`` or ``root/<label>/<group>/<file>``; nothing is followed outside the tree."""
    root = root.resolve()
    group_by = cfg["group_by"]
    if group_by == "column":
        raise IngestError(f"{root}: group_by: column needs a CSV manifest; use folder, label or file")
    rows: list[SourceRow] = []
    hidden = 0

    def add(raw: str, file: Path | None, label: str, group: str, problem: str | None = None) -> None:
        """`raw`: the path relative to the root as the file system gave it (maybe not UTF-8)."""
        rows.append(SourceRow(_display(raw), file, label, group, problem=problem or _utf8_problem(raw)))

    def walk(d: Path, label: str, depth: int) -> None:
        nonlocal hidden
        for entry in sorted(os.scandir(d), key=lambda e: e.name):
            rel = Path(entry.path).relative_to(root).as_posix()
            if entry.name.startswith("."):
                hidden += 1   # .DS_Store, editor swap files: not data (counted in the summary)
                continue
            shown = _display(rel)
            if entry.is_symlink():
                add(rel, None, label, "", "symbolic link (not followed): copy the files into the data root")
            elif entry.is_dir(follow_symlinks=False):
                walk(Path(entry.path), label, depth + 1)
            else:
                parts = Path(rel).parts
                sub = parts[1] if len(parts) > 2 else ""
                mode = group_by if group_by != "auto" else ("folder" if sub else "file")
                group = {"folder": sub, "label": label, "file": ""}[mode] or f"file:{shown}"
                problem = None if entry.is_file(follow_symlinks=False) else "not a regular file"
                add(rel, Path(entry.path), label, group, problem)

    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            hidden += 1
            continue
        if entry.is_symlink():
            add(entry.name, None, "", "", "symbolic link (not followed): copy the files into the data root")
        elif entry.is_dir(follow_symlinks=False):
            walk(Path(entry.path), _display(entry.name), 1)
        else:
            add(entry.name, None, "", "", "file outside any class folder")
    if not rows:
        raise IngestError(f"{root}: no class folders; expected {root}/<label>/<image files>")
    return rows, {"group_by": group_by, "ignored_hidden_files": hidden}


# -------------------------------------------------------------------------------------------------- labels
def label_map(spec: Any) -> dict[str, str | None] | None:
    """Source label → task label (None: not in the task), or None for "every label"."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in NAMED_LABEL_SETS:
            raise ConfigError(f"labels: unknown named set '{spec}' (known: {sorted(NAMED_LABEL_SETS)}); give a list")
        return {lab: lab for lab in NAMED_LABEL_SETS[spec]}
    if isinstance(spec, list):
        return {str(lab): str(lab) for lab in spec}
    return {str(k): (None if v is None else str(v)) for k, v in spec.items()}


# -------------------------------------------------------------------------------------------------- review
def load_review(path: Path | None, extra_columns: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Reviewer corrections keyed by stored path (``path,action,label,note`` + a branch's columns)."""
    if path is None or not path.is_file():
        return {}
    df = pd.read_csv(path, dtype=str, keep_default_na=False, comment="#")
    allowed = REVIEW_COLUMNS + list(extra_columns)
    if "path" not in df.columns:
        raise ConfigError(f"{path}: needs a 'path' column (columns: {','.join(allowed)})")
    unknown = sorted(set(df.columns) - set(allowed))
    if unknown:
        raise ConfigError(f"{path}: unknown column(s) {unknown}; allowed: {allowed}")
    out: dict[str, dict[str, Any]] = {}
    for line, rec in enumerate(df.to_dict("records"), start=2):
        key = rec["path"].strip()
        if key in out:
            raise ConfigError(f"{path}:{line}: '{key}' appears twice")
        out[key] = {**{k: v.strip() for k, v in rec.items()}, "line": line, "file": str(path)}
    return out


# -------------------------------------------------------------------------------------------------- ingest
def ingest(name: str, cfg: dict[str, Any], out_dir: str | Path, review_dir: str | Path | None = None,
           preparer: Preparer | None = None, where: str = "params.yaml: datasets", progress: bool = True) -> dict:
    """Ingest ``datasets.<name>`` (raw or resolved) into `out_dir` (manifest, quarantine, images, summary).

    `preparer` turns each decoded image into its cache entry (default: :class:`SquarePreparer`); `review_dir`
    holds the reviewer's ``<name>.csv`` (``review/<kind>/``)."""
    cfg = resolve_dataset(name, cfg, where)
    ing = cfg["ingest"]
    limits = Limits.from_config(ing)
    preparer = preparer or SquarePreparer(ing)
    out_dir = Path(out_dir)
    root, rows, notes = read_source(cfg, f"{where}.{name}")
    mapping = label_map(cfg["labels"])
    review_file = Path(review_dir) / f"{name}.csv" if review_dir else None
    review = load_review(review_file, getattr(preparer, "review_columns", ()))
    unused_review = set(review)
    log.info("ingest %s: %d input items from %s", name, len(rows), cfg["source"])

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_path = out_dir / ".images.tmp.npy"
    n = max(1, len(rows))
    cache = np.lib.format.open_memmap(tmp_path, mode="w+", dtype=np.uint8, shape=(n, *preparer.shape))
    gio.reserve(tmp_path, int(cache.offset + cache.nbytes))   # a full disk fails here, not as SIGBUS later
    candidates: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []

    def reject(row: SourceRow, reason: str) -> None:
        quarantined.append({"path": row.path, "label": row.label, "reason": reason})

    for i, row in enumerate(tqdm(rows, desc=f"ingest {name}", unit="img", mininterval=2.0, disable=not progress)):
        rev = review.get(row.path)
        if rev is not None:
            unused_review.discard(row.path)
            action = rev.get("action", "").lower()
            if action == "exclude":
                reject(row, f"excluded by the reviewer: {rev.get('note') or 'no reason given'}")
                continue
            if action == "relabel":
                if not rev.get("label"):
                    raise ConfigError(f"{rev['file']}:{rev['line']}: relabel needs a label")
                row.extra["original_label"], row.label = row.label, rev["label"]
        if row.problem:
            reject(row, row.problem)
            continue
        if mapping is not None:
            task_label = mapping.get(row.label)
            if task_label is None:
                reject(row, f"label not in task: '{row.label}'")
                continue
            row.label = task_label
        try:
            data = read_file(row.file, limits.max_bytes)
            arr = decode_image(data, ing["mode"], limits)
            image, extra = preparer.prepare(arr, row, rev)
        except (DecodeError, Quarantine) as exc:
            reject(row, str(exc))
            continue
        cache[i] = image
        candidates.append({
            "slot": i, "path": row.path, "label": row.label, "group_id": row.group_id, "cell_id": row.cell_id,
            "fixed_split": row.fixed_split, "sha256": hashlib.sha256(data).hexdigest(),
            "pixel_sha256": hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest(),
            "width": int(arr.shape[1]), "height": int(arr.shape[0]),
            **extra, **row.extra,
        })
    if unused_review:
        raise ConfigError(f"{review_file}: path(s) not in the dataset: {sorted(unused_review)[:5]}; copy paths from "
                          f"{out_dir}/manifest.csv or quarantine.csv")

    accepted = resolve_duplicates(candidates, quarantined)
    cache.flush()
    final = np.asarray(cache[[r.pop("slot") for r in accepted]]) if accepted else np.zeros((0, *preparer.shape),
                                                                                             np.uint8)
    del cache
    for i, r in enumerate(accepted):
        r["index"] = i
    extra_out = preparer.finish(out_dir, accepted, quarantined)
    gio.save_npy(out_dir / "images.npy", final)
    tmp_path.unlink(missing_ok=True)
    extras = sorted({k for r in accepted for k in r} - set(COMPUTED))
    manifest = pd.DataFrame(accepted, columns=COMPUTED + extras)
    gio.write_with(out_dir / "manifest.csv", lambda p: manifest.to_csv(p, index=False))
    gio.write_with(out_dir / "quarantine.csv",
                   lambda p: pd.DataFrame(quarantined, columns=["path", "label", "reason"]).to_csv(p, index=False))
    if len(rows) != len(accepted) + len(quarantined):  # every input must be accounted for
        raise AssertionError(f"ingest bookkeeping: {len(rows)} inputs != {len(accepted)} accepted + "
                             f"{len(quarantined)} quarantined")
    summary = {
        "dataset": name, "kind": cfg["kind"], "source": str(cfg["source"]), "root": str(root),
        "synthetic": is_synthetic(cfg["source"], cfg["synthetic"]),
        "input": len(rows), "accepted": len(accepted), "quarantined": len(quarantined),
        "quarantine_reasons": reason_counts(quarantined),
        "classes": manifest["label"].value_counts().sort_index().to_dict() if len(accepted) else {},
        "groups": int(manifest["group_id"].nunique()) if len(accepted) else 0,
        "image_shape": list(final.shape[1:]), "mode": ing["mode"], "ingest": ing,
        "labels": cfg["labels"], "review_file": str(review_file) if review else None, **notes, **extra_out,
    }
    gio.write_json(out_dir / "summary.json", summary)
    if quarantined:
        log.warning("ingest %s: %d of %d items quarantined (see %s): %s", name, len(quarantined), len(rows),
                    out_dir / "quarantine.csv", summary["quarantine_reasons"])
    if not accepted:
        raise IngestError(f"{cfg['source']}: no usable images (all {len(rows)} quarantined; see "
                          f"{out_dir / 'quarantine.csv'})")
    log.info("ingest %s: %d accepted, %d quarantined, %d classes, %d groups", name, len(accepted), len(quarantined),
             len(summary["classes"]), summary["groups"])
    return summary


def resolve_duplicates(candidates: list[dict[str, Any]], quarantined: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the first of identical images with one label; quarantine later copies (duplicate) and every copy of
    images that carry two labels (label conflict)."""
    by_pixels: dict[str, list[dict[str, Any]]] = {}
    for c in candidates:
        by_pixels.setdefault(c["pixel_sha256"], []).append(c)
    accepted = []
    for c in candidates:
        copies = by_pixels[c["pixel_sha256"]]
        labels = sorted({x["label"] for x in copies})
        if len(labels) > 1:
            shown = "; ".join(f"'{x['label']}' ({x['path']})" for x in copies[:3])
            quarantined.append({"path": c["path"], "label": c["label"],
                                "reason": f"label conflict: the same pixels are labelled {shown}"})
        elif c is not copies[0]:
            quarantined.append({"path": c["path"], "label": c["label"],
                                "reason": f"duplicate of {copies[0]['path']} (same pixels)"})
        else:
            accepted.append(c)
    return accepted


def reason_counts(quarantined: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for q in quarantined:
        key = q["reason"].split(":")[0].split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def load_ingested(out_dir: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The manifest and a read-only memory map of the image cache, row i of one = row i of the other."""
    out_dir = Path(out_dir)
    if not (out_dir / "manifest.csv").is_file():
        raise FileNotFoundError(f"{out_dir}/manifest.csv: not ingested yet; run `dvc repro ingest@{out_dir.name}`")
    manifest = pd.read_csv(out_dir / "manifest.csv", dtype=str, keep_default_na=False)
    for col in ("index", "width", "height"):
        if col in manifest.columns:
            manifest[col] = pd.to_numeric(manifest[col]).astype(int)
    images = np.load(out_dir / "images.npy", mmap_mode="r")
    if len(manifest) != len(images):
        raise IngestError(f"{out_dir}: manifest has {len(manifest)} rows but images.npy has {len(images)}; re-run ingest")
    return manifest, images


def ingest_summary(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "summary.json").read_text())
