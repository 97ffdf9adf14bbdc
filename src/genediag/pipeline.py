"""What a stage or a command does with a dataset entry, by its kind (the layer above data/ and the branches).

``ingest_dataset`` is the one function behind both the ``ingest@<dataset>`` stage and ``genediag ingest``:
chromosome crops and karyograms are fitted into a square cache; face photos are detected and aligned one by one
(:class:`genediag.faces.prepare.FacePreparer`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genediag.data.ingest import ingest, is_synthetic
from genediag.schema import FACE_KINDS, resolve_dataset


def review_dir(kind: str, root: str | Path = "review") -> Path:
    """Where the reviewer's corrections of datasets of this kind live (``review/<kind>/<dataset>.csv``)."""
    return Path(root) / kind


def ingest_dataset(name: str, cfg: dict[str, Any], out_dir: str | Path, review_root: str | Path = "review",
                   where: str = "params.yaml: datasets", progress: bool = True) -> dict[str, Any]:
    resolved = resolve_dataset(name, cfg, where)
    preparer = None
    reviews = review_dir(resolved["kind"], review_root)
    if resolved["kind"] in FACE_KINDS:
        from genediag.faces.prepare import FacePreparer

        preparer = FacePreparer(resolved["faces"], is_synthetic(resolved["source"], resolved["synthetic"]), name,
                                str(reviews / f"{name}.csv"))
    return ingest(name, resolved, out_dir, reviews, preparer, where, progress)
