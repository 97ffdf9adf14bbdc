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

from genediag import io as gio
from genediag.config import ConfigError
from genediag.data.datasets import load_split_table
from genediag.data.ingest import ingest_summary
from genediag.data.split import audit_leakage, split_summary
from genediag.karyograms.augment import apply_params, blank_top, layout_preserved, sample_params
from genediag.schema import BALANCE, validate

log = logging.getLogger(__name__)

RECORD_COLUMNS = ["generated", "source_index", "aug_id", "transform"]


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


def balance_dataset(name: str, cfg: dict[str, Any], source_dir: str | Path, split_csv: str | Path,
                    out_dir: str | Path, out_split_csv: str | Path,
                    where: str = "params.yaml: karyograms.balance") -> dict[str, Any]:
    """Write the derived dataset `name` (``out_dir`` in the ingest format, ``out_split_csv``) from the ingested,
    split `source_dir` / `split_csv`."""
    cfg = validate(cfg, BALANCE, f"{where}.{name}")
    src = cfg["source"]
    if src == name:
        raise ConfigError(f"{where}.{name}: the output name must differ from its source '{src}'")
    source_summary = ingest_summary(source_dir)
    images, split = load_split_table(source_dir, split_csv)
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

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = (len(table),) + images.shape[1:]
    tmp = out_dir / ".images.tmp.npy"
    cache = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    gio.reserve(tmp, int(cache.offset + cache.nbytes))
    frac = float(cfg["blank_top"])
    for i, row in enumerate(tqdm(table.itertuples(index=False), total=len(table), desc=f"balance {name}",
                                 unit="img", mininterval=2.0)):
        img = blank_top(images[int(row.source_index)], frac)
        if row.generated:
            aug = apply_params(img, json.loads(row.transform))
            if not layout_preserved(img, aug):
                raise AssertionError(f"augmentation {row.transform} moved the content of {row.path}")
            cache[i] = aug
            table.at[i, "sha256"] = table.at[i, "pixel_sha256"] = hashlib.sha256(aug.tobytes()).hexdigest()
        else:
            cache[i] = img
    cache.flush()
    gio.save_npy(out_dir / "images.npy", np.asarray(cache))
    del cache
    tmp.unlink(missing_ok=True)

    audit_leakage(table)
    bad = table[(table["generated"] == 1) & (table["split"] != "train")]
    if len(bad):  # by construction impossible; kept as a guard for future edits
        raise AssertionError(f"generated rows outside train: {bad['path'].head(3).tolist()}")
    gio.write_with(out_dir / "manifest.csv", lambda p: table.drop(columns=["split"]).to_csv(p, index=False))
    gio.write_with(out_dir / "quarantine.csv",
                   lambda p: pd.DataFrame(columns=["path", "label", "reason"]).to_csv(p, index=False))
    after = table[table["split"] == "train"]["label"].value_counts().sort_index().to_dict()
    summary = {
        "dataset": name, "kind": source_summary.get("kind"), "synthetic": source_summary.get("synthetic"),
        "ingest": source_summary.get("ingest"), "blank_top": frac, "derived_from": src,
        "source": f"balance of {src} ({source_dir}, split {split_csv})",
        "input": int(len(table)), "accepted": int(len(table)), "quarantined": 0, "quarantine_reasons": {},
        "classes": table["label"].value_counts().sort_index().to_dict(),
        "groups": int(table["group_id"].nunique()),
        "image_shape": list(images.shape[1:]), "mode": "L" if images.ndim == 3 else "RGB",
        "balance": {"train_before": {k: int(v) for k, v in counts.items()}, "generated": need, "train_after": after,
                    "target_ratio": float(cfg["target_ratio"]), "majority_factor": float(cfg["majority_factor"]),
                    "blank_top": frac, "augment": cfg["augment"], "seed": int(cfg["seed"])},
    }
    gio.write_json(out_dir / "summary.json", summary)
    out_csv = Path(out_split_csv)
    gio.write_with(out_csv, lambda p: table.to_csv(p, index=False))
    gio.write_json(out_csv.with_suffix(".json"), {"balanced_from": src, **split_summary(table)})
    log.info("balance %s: train %s → %s (generated %s); val/test unchanged", name, counts, after, need)
    return summary
