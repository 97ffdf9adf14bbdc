"""Offline balancing: a derived dataset whose TRAIN split has the minority class augmented up to a target ratio.

``balance.<name>`` in params.yaml → ``data/ingested/<name>/`` (manifest.csv, images.npy, summary.json,
quarantine.csv — the ingest-cache format) and ``data/splits/<name>.csv`` (+ ``.json``), so a training run uses it
unchanged with ``dataset: <name>`` (the ``train@``/``evaluate@`` stages and their DVC dependencies
``data/ingested/${dataset}``, ``data/splits/${dataset}.csv`` need no change).

    source: karyograms        # an ingested + split dataset
    target_ratio: 1.0         # after balancing, every class of train has >= ratio × the majority's count
    majority_factor: 1.0      # the majority class itself is augmented to factor × its count (thesis: 105 → 376)
    blank_top: 0.065          # fraction of rows blanked at the top of EVERY image (all splits), see below
    augment: {...}            # layout-preserving augmentation (genediag.karyograms.augment)
    seed: 0

- Only train rows are augmented, only from train rows: each generated row copies its source's label, group
  (patient) and karyotype and gets ``split = train``; validation and test rows are the source rows unchanged
  (apart from ``blank_top``). The split leakage audit runs on the result.
- Sources of one class are used round-robin over a seeded permutation, so each is used ⌊g/n⌋ or ⌈g/n⌉ times.
- Every generated row records what made it: ``generated = 1``, ``source_index`` (row in the source dataset),
  ``aug_id`` and ``transform`` (JSON of the drawn parameters; ``augment.apply_params`` re-creates the image from
  the source image after ``blank_top``). ``path`` is the source path with ``#aug<k>`` appended (not a file).
- ``blank_top``: the synthetic karyograms print their ISCN truth string (e.g. ``47,XX,+21``) above row 1. That
  text *is* the label (and its length alone separates most normal from abnormal cells), so a classifier must not
  see it. The synthetic title ends above 5.3 % of the height and the first chromosome row starts below 8 %;
  0.065 blanks it. Set 0 for karyograms without such a header.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from genediag.config import ConfigError, check_keys
from genediag.data.ingest import load_ingested
from genediag.data.split import audit_leakage, split_summary
from genediag.karyograms.augment import apply_params, blank_top, layout_preserved, resolve_augment_config, sample_params

log = logging.getLogger(__name__)

BALANCE_DEFAULTS: dict[str, Any] = {"target_ratio": 1.0, "majority_factor": 1.0, "blank_top": 0.0, "augment": {},
                                    "seed": 0}
RECORD_COLUMNS = ["generated", "source_index", "aug_id", "transform"]


def resolve_balance_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    check_keys(cfg, set(BALANCE_DEFAULTS) | {"source"}, where)
    if "source" not in cfg:
        raise ConfigError(f"{where}: missing 'source' (the ingested and split dataset to balance, e.g. karyograms)")
    out = {**BALANCE_DEFAULTS, **cfg}
    if not 0.0 < float(out["target_ratio"]) <= 1.0:
        raise ConfigError(f"{where}.target_ratio: expected 0 < ratio <= 1 (minority / majority), got {out['target_ratio']}")
    if float(out["majority_factor"]) < 1.0:
        raise ConfigError(f"{where}.majority_factor: expected >= 1, got {out['majority_factor']}")
    if not 0.0 <= float(out["blank_top"]) < 0.5:
        raise ConfigError(f"{where}.blank_top: expected a fraction of the height in [0, 0.5), got {out['blank_top']}")
    out["augment"] = resolve_augment_config(out["augment"], f"{where}.augment")
    return out


def plan_counts(counts: dict[str, int], target_ratio: float, majority_factor: float = 1.0) -> dict[str, int]:
    """How many items to generate per class: the majority grows to ⌈factor × n⌉, every other class to at least
    ⌈ratio × that⌉ (a class already above it gets nothing)."""
    if not counts:
        return {}
    top = max(counts.values())
    target_major = math.ceil(top * majority_factor - 1e-9)
    need = {}
    for c, n in counts.items():
        if n == 0:
            raise ConfigError(f"class '{c}' has no train items to augment from")
        goal = target_major if n == top else max(n, math.ceil(target_ratio * target_major - 1e-9))
        need[c] = max(0, goal - n)
    return need


def balance_dataset(name: str, cfg: dict[str, Any], data_dir: str | Path = "data") -> dict[str, Any]:
    cfg = resolve_balance_config(cfg, f"balance.{name}")
    data_dir = Path(data_dir)
    src = cfg["source"]
    if src == name:
        raise ConfigError(f"balance.{name}: the output name must differ from its source '{src}'")
    manifest, images = load_ingested(data_dir / "ingested" / src)
    split_csv = data_dir / "splits" / f"{src}.csv"
    split = pd.read_csv(split_csv, dtype={"label": str, "group_id": str, "cell_id": str}, keep_default_na=False)
    if len(split) != len(manifest) or not (split["sha256"].to_numpy() == manifest["sha256"].to_numpy()).all():
        raise ConfigError(f"{split_csv} does not match {data_dir / 'ingested' / src}/manifest.csv; re-run split@{src}")
    if not (split["index"].to_numpy() == np.arange(len(split))).all():
        raise ConfigError(f"{split_csv}: column 'index' must be the row number 0..N-1; re-run split@{src}")
    if any(c in split.columns for c in RECORD_COLUMNS):
        raise ConfigError(f"{split_csv}: already has balancing columns {RECORD_COLUMNS}; balance the original dataset")

    train = split[split["split"] == "train"]
    counts = train["label"].value_counts().sort_index().to_dict()
    need = plan_counts(counts, float(cfg["target_ratio"]), float(cfg["majority_factor"]))
    rng = np.random.default_rng(int(cfg["seed"]))
    base = split.assign(generated=0, source_index=split["index"], aug_id=0, transform="")
    new_rows: list[dict[str, Any]] = []
    for label in sorted(need):
        pool = train[train["label"] == label]["index"].to_numpy()
        order = pool[rng.permutation(len(pool))]
        for k in range(need[label]):
            s = int(order[k % len(order)])
            row = base.loc[s].to_dict()
            row.update(generated=1, source_index=s, aug_id=k // len(order) + 1,
                       transform=json.dumps(sample_params(rng, cfg["augment"]), sort_keys=True))
            row["path"] = f"{row['path']}#aug{row['aug_id']}"
            new_rows.append(row)
    table = pd.concat([base, pd.DataFrame(new_rows, columns=base.columns)], ignore_index=True)
    table["index"] = np.arange(len(table))

    out_dir = data_dir / "ingested" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = (len(table),) + images.shape[1:]
    cache = np.lib.format.open_memmap(out_dir / "images.tmp.npy", mode="w+", dtype=np.uint8, shape=shape)
    frac = float(cfg["blank_top"])
    for i, row in enumerate(tqdm(table.itertuples(index=False), total=len(table), desc=f"balance {name}",
                                 unit="img", mininterval=2.0)):
        img = blank_top(images[int(row.source_index)], frac)
        if row.generated:
            aug = apply_params(img, json.loads(row.transform))
            if not layout_preserved(img, aug):
                raise AssertionError(f"augmentation {row.transform} moved the content of {row.path}")
            cache[i] = aug
            table.at[i, "sha256"] = hashlib.sha256(aug.tobytes()).hexdigest()
        else:
            cache[i] = img
    cache.flush()
    del cache
    (out_dir / "images.tmp.npy").replace(out_dir / "images.npy")

    audit_leakage(table)
    bad = table[(table["generated"] == 1) & (table["split"] != "train")]
    if len(bad):  # by construction impossible; kept as a guard for future edits
        raise AssertionError(f"generated rows outside train: {bad['path'].head(3).tolist()}")
    table.drop(columns=["split"]).to_csv(out_dir / "manifest.csv", index=False)
    pd.DataFrame(columns=["path", "label", "reason"]).to_csv(out_dir / "quarantine.csv", index=False)
    after = table[table["split"] == "train"]["label"].value_counts().sort_index().to_dict()
    summary = {
        "source": f"balance of {src} ({data_dir / 'ingested' / src}, split {split_csv})",
        "input": int(len(table)), "accepted": int(len(table)), "quarantined": 0, "quarantine_reasons": {},
        "classes": table["label"].value_counts().sort_index().to_dict(),
        "groups": int(table["group_id"].nunique()),
        "image_shape": list(images.shape[1:]), "mode": "L" if images.ndim == 3 else "RGB",
        "balance": {"train_before": {k: int(v) for k, v in counts.items()}, "generated": need, "train_after": after,
                    "target_ratio": float(cfg["target_ratio"]), "majority_factor": float(cfg["majority_factor"]),
                    "blank_top": frac, "augment": cfg["augment"], "seed": int(cfg["seed"])},
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    out_csv = data_dir / "splits" / f"{name}.csv"
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    split_info = {"balanced_from": src, **split_summary(table)}
    out_csv.with_suffix(".json").write_text(json.dumps(split_info, indent=2) + "\n")
    log.info("balance %s: train %s → %s (generated %s); val/test unchanged", name, counts, after, need)
    return summary
