"""Splits of the aligned face datasets, with the shared stratified group splitter and leakage audit.

- ``syndromes``: the paper's 90/10 split, stratified by class and grouped by person (no person in two splits),
  then validation carved out of the 90 % the same way. Two steps, so the test set does not move when the
  validation share changes.
- ``identities`` (stage-1 pretraining): whole people are held out for face verification (split ``test``: their
  photos make the verification pairs, never seen in training); the photos of the remaining people are split
  into train/val per person (the identity classifier must see every person in both).
The CSV is the aligned manifest plus a ``split`` column, as ``data/splits/<dataset>.csv`` elsewhere.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genediag.config import ConfigError, check_keys
from genediag.data.ingest import load_ingested
from genediag.data.split import audit_leakage, split_summary, stratified_group_split

log = logging.getLogger(__name__)

DEFAULTS = {"kind": "syndromes", "test": 0.1, "val": 0.1, "seed": 0, "trials": 200}


def _check_share(v: Any, key: str, where: str) -> float:
    if not (isinstance(v, (int, float)) and 0 < float(v) < 1):
        raise ConfigError(f"{where}.{key}: a share in (0, 1), got {v!r}")
    return float(v)


def split_faces(aligned_dir: str | Path, out_csv: str | Path, cfg: dict[str, Any], where: str = "faces_split") -> dict:
    check_keys(cfg, set(DEFAULTS), where)
    cfg = {**DEFAULTS, **cfg}
    test, val = _check_share(cfg["test"], "test", where), _check_share(cfg["val"], "val", where)
    seed, trials = int(cfg["seed"]), int(cfg["trials"])
    manifest, _ = load_ingested(aligned_dir)
    df = manifest.copy()
    labels, groups = df["label"].astype(str), df["group_id"].astype(str)
    if cfg["kind"] == "syndromes":
        outer = stratified_group_split(labels, groups, {"train": 1 - test, "test": test}, seed, trials)
        split = outer.astype(object)
        tr = outer == "train"
        split[tr] = stratified_group_split(labels[tr], groups[tr], {"train": 1 - val, "val": val}, seed + 1, trials)
    elif cfg["kind"] == "identities":
        people = groups.to_numpy()
        outer = stratified_group_split(np.full(len(df), "person"), people, {"train": 1 - test, "test": test}, seed,
                                       trials)
        split = outer.astype(object)
        tr = outer == "train"
        photos = df["path"].astype(str)[tr]  # each photo its own group: every person reaches train and val
        split[tr] = stratified_group_split(labels[tr], photos, {"train": 1 - val, "val": val}, seed + 1, trials)
    else:
        raise ConfigError(f"{where}.kind: 'syndromes' or 'identities', got {cfg['kind']!r}")
    df["split"] = split
    audit_leakage(df, hash_col="sha256", group_col="group_id" if cfg["kind"] == "syndromes" else "__none__")
    if cfg["kind"] == "identities":  # held-out people must not be seen in training
        held = set(groups[df["split"] == "test"])
        seen = set(groups[df["split"] != "test"])
        if held & seen:
            raise ConfigError(f"{where}: held-out identities also in training: {sorted(held & seen)[:5]}")
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False)
    summary = {"kind": cfg["kind"], "test": test, "val": val, "seed": seed, **split_summary(df)}
    out_csv.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%s: %s items, %s people", where, summary["items"], summary["groups"])
    return summary
