"""Stratified, group-aware splitting with a leakage audit.

Groups (patients) never straddle splits; within that constraint each label's share of every split is steered
towards the requested ratios. Ratios are a mapping, so 80/10/10 (train/val/test), 90/10 (train/test) and
64/16/20 are all expressible.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from genediag.config import ConfigError

log = logging.getLogger(__name__)


class SplitError(ValueError):
    """The data cannot be split as asked (class too small, leakage); the message names the class or file."""


def check_ratios(ratios: Mapping[str, float], where: str = "split.ratios") -> dict[str, float]:
    if not ratios:
        raise ConfigError(f"{where}: give at least one split, e.g. {{train: 0.8, val: 0.1, test: 0.1}}")
    bad = {k: v for k, v in ratios.items() if not (isinstance(v, (int, float)) and 0 <= v <= 1)}
    if bad:
        raise ConfigError(f"{where}: ratios must be numbers in [0, 1], got {bad}")
    total = float(sum(ratios.values()))
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"{where}: ratios must add up to 1, they add up to {total:g}")
    return {str(k): float(v) for k, v in ratios.items()}


def stratified_group_split(labels, groups, ratios: Mapping[str, float], seed: int, trials: int = 200) -> np.ndarray:
    """Assign each item a split name; all items of one group share a split.

    Candidates: one greedy iterative stratification (groups holding the rarest labels first, each into the split
    whose quota for that label is furthest from filled) plus `trials` seeded random orders filled by size quota.
    The candidate with the lowest score wins, where the score adds the per-class deviation from the requested
    ratios, the deviation of split sizes, and a heavy penalty for every (split, class) pair left empty although
    the class has enough groups to reach every split.
    """
    ratios = check_ratios(ratios)
    labels = pd.Series(np.asarray(labels), dtype=str).reset_index(drop=True)
    groups = pd.Series(np.asarray(groups), dtype=str).reset_index(drop=True)
    names = [k for k, v in ratios.items() if v > 0]
    r = np.array([ratios[k] for k in names])
    classes = sorted(labels.unique())
    cidx = {c: i for i, c in enumerate(classes)}

    table = pd.crosstab(groups, labels.map(cidx)).reindex(columns=range(len(classes)), fill_value=0)
    gnames = table.index.to_numpy()
    counts = table.to_numpy()  # groups × classes
    totals = counts.sum(0)
    groups_per_class = (counts > 0).sum(0)
    too_small = [(classes[c], int(groups_per_class[c])) for c in range(len(classes)) if groups_per_class[c] < len(names)]
    if too_small:
        desc = ", ".join(f"'{c}' ({n} group{'s' if n != 1 else ''})" for c, n in too_small)
        raise SplitError(
            f"class too small to stratify into {len(names)} splits {names}: {desc}; each class needs at least "
            f"one group (patient) per split. Add data for it, drop the class from the task, or use fewer splits."
        )
    if len(gnames) < len(names):
        raise SplitError(f"{len(gnames)} group(s) cannot fill {len(names)} splits {names}")

    rng = np.random.default_rng(seed)
    few_groups = 2 * len(names)
    target = r[:, None] * totals[None, :]  # splits × classes
    sizes = counts.sum(1)
    size_target = r * sizes.sum()

    def score(assign: np.ndarray) -> float:
        filled = np.stack([counts[assign == s].sum(0) for s in range(len(names))])
        class_dev = (np.abs(filled - target) / totals[None, :]).sum() / len(classes)
        size_dev = np.abs(filled.sum(1) - size_target).sum() / sizes.sum()
        empty = int((filled == 0).sum())
        return empty * 10.0 + class_dev + size_dev

    def by_size(order: np.ndarray) -> np.ndarray:
        assign, size = np.empty(len(gnames), dtype=np.int64), np.zeros(len(names))
        for g in order:
            s = int(np.argmax(size_target - size))
            assign[g] = s
            size[s] += sizes[g]
        return assign

    def stratified(order: np.ndarray) -> np.ndarray:
        rarest = np.where(counts > 0, totals[None, :], np.iinfo(np.int64).max).min(1)
        order = order[np.lexsort((-sizes[order], rarest[order]))]  # rarest label first, then bigger groups
        filled, size = np.zeros_like(target), np.zeros(len(names))
        assign = np.empty(len(gnames), dtype=np.int64)
        for g in order:
            present = np.flatnonzero(counts[g])
            c = present[np.argmin(totals[present])]
            # a class with few groups (patients) fills its empty splits first, so e.g. a type carried by 3
            # patients lands in train, val and test rather than where its quota deficit is largest (train)
            empty_first = (filled[:, c] > 0) if groups_per_class[c] <= few_groups else np.zeros(len(names), bool)
            s = int(np.lexsort((-(size_target - size), -np.round(target[:, c] - filled[:, c], 9), empty_first))[0])
            assign[g] = s
            filled[s] += counts[g]
            size[s] += sizes[g]
        return assign

    best = stratified(rng.permutation(len(gnames)))
    best_score = score(best)
    for _ in range(trials):
        cand = by_size(rng.permutation(len(gnames)))
        cand_score = score(cand)
        if cand_score < best_score:
            best, best_score = cand, cand_score
    by_group = dict(zip(gnames, np.array(names, dtype=object)[best]))
    return groups.map(by_group).to_numpy()


def audit_leakage(df: pd.DataFrame, hash_col: str = "sha256", group_col: str = "group_id") -> None:
    """Fail when one image hash or one group sits in two splits."""
    for col, what in ((hash_col, "image (same sha256)"), (group_col, "group")):
        if col not in df.columns:
            continue
        spread = df.groupby(col)["split"].nunique()
        leaked = spread[spread > 1]
        if len(leaked):
            key = leaked.index[0]
            rows = df[df[col] == key]
            where = "; ".join(f"{p} in {s}" for p, s in zip(rows["path"].head(4), rows["split"].head(4)))
            raise SplitError(f"leakage: {len(leaked)} {what} value(s) appear in more than one split, e.g. {key}: {where}")


def split_summary(df: pd.DataFrame) -> dict:
    out = {"items": df["split"].value_counts().sort_index().to_dict(),
           "groups": df.groupby("split")["group_id"].nunique().sort_index().to_dict(),
           "labels": {s: g["label"].value_counts().sort_index().to_dict() for s, g in df.groupby("split")}}
    return out


def has_y(karyotype: str) -> bool:
    """Whether the sex chromosomes of an ISCN string include a Y ('46,XY' / '47,XXY' → True, '45,X' → False)."""
    parts = [p.strip() for p in str(karyotype).split(",")]
    return len(parts) > 1 and "Y" in parts[1]


#: derived columns `stratify_on` may name besides the manifest's own: name → (source column, value per row)
DERIVED = {"y_chromosome": ("karyotype", lambda karyotype: "Y" if has_y(karyotype) else "noY")}


def strata_columns(stratify_on: str | Sequence[str]) -> list[str]:
    """`stratify_on` (one column or several) as a list."""
    return [stratify_on] if isinstance(stratify_on, str) else list(stratify_on)


def stratification_key(df: pd.DataFrame, stratify_on: str | Sequence[str]) -> pd.Series:
    """The per-row stratum: one column, or several joined (``[label, y_chromosome]`` stratifies the combinations).

    ``y_chromosome`` is derived from an ISCN ``karyotype`` column (the sex chromosomes after the count): stratifying
    karyograms on it keeps a test split from pairing "abnormal" with "no Y", a shortcut a model learns instead of
    the abnormality (the synthetic karyogram split without it had 0 of 14 abnormal test karyograms with a Y)."""
    cols = strata_columns(stratify_on)
    if not cols:
        raise SplitError("stratify_on: name at least one column")
    parts = []
    for col in cols:
        if col in DERIVED:
            source, value = DERIVED[col]
            if source not in df.columns:
                raise SplitError(f"stratify_on: {col} needs a '{source}' column (ISCN) in the manifest")
            parts.append(df[source].map(value).astype(str))
        elif col in df.columns:
            parts.append(df[col].astype(str))
        else:
            raise SplitError(f"stratify_on: no column '{col}' in the manifest (columns: {list(df.columns)}; derived: "
                             f"{list(DERIVED)})")
    key = parts[0]
    for part in parts[1:]:
        key = key + "|" + part
    return key


def split_dataset(ingested_dir, out_csv, ratios: Mapping[str, float], seed: int,
                  stratify_on: str | Sequence[str] = "label",
                  trials: int = 200) -> dict:
    """Split an ingested dataset; write ``out_csv`` (index, path, label, group_id, cell_id, sha256, split) and
    a JSON summary beside it. Fails on a class too small to stratify and on any leakage."""
    import json
    from pathlib import Path

    from genediag.data.ingest import load_ingested

    manifest, _ = load_ingested(ingested_dir)
    df = manifest.copy()
    df["split"] = stratified_group_split(stratification_key(df, stratify_on), df["group_id"], ratios, seed, trials)
    audit_leakage(df)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False)
    summary = {"ratios": dict(ratios), "seed": seed, "stratify_on": strata_columns(stratify_on), **split_summary(df)}
    out_csv.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("split %s: %s items, %s groups", ingested_dir, summary["items"], summary["groups"])
    return summary
