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


def near_duplicate_pairs(images: np.ndarray, min_content: int = 60, seed: int = 0) -> list[tuple[int, int]]:
    """Index pairs of near-identical images: copies that differ in a few pixels, a re-compression or faint noise.

    An image must have at least `min_content` foreground pixels (differing by more than 24 grey levels from its
    border's median) to be compared: tiny, featureless images (a small chromosome in a 64-px crop) look alike
    without being copies. Candidates: 16×16 thumbnails (mean-centred, unit length) with cosine ≥ 0.995, found with
    random-hyperplane hashing (8 tables × 12 bits); a candidate is a near copy when at most 1 % of its pixels differ
    by more than 4 grey levels (independent captures differ by their noise almost everywhere)."""
    import cv2

    n = len(images)
    if n < 2:
        return []
    thumbs = np.empty((n, 256), np.float32)
    content = np.empty(n, np.int64)
    for i in range(n):
        a = np.asarray(images[i])
        g = (a if a.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)).astype(np.int16)
        border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
        content[i] = int((np.abs(g - np.median(border)) > 24).sum())
        thumbs[i] = cv2.resize(g.astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA).ravel()
    thumbs -= thumbs.mean(1, keepdims=True)
    thumbs /= np.maximum(np.linalg.norm(thumbs, axis=1, keepdims=True), 1e-6)
    eligible = np.flatnonzero(content >= min_content)
    rng = np.random.default_rng(seed)
    candidates: set[tuple[int, int]] = set()
    for _ in range(8):
        keys = (thumbs[eligible] @ rng.standard_normal((256, 12)) > 0) @ (1 << np.arange(12))
        order = np.argsort(keys, kind="stable")
        for members in np.split(eligible[order], np.flatnonzero(np.diff(keys[order])) + 1):
            if len(members) < 2:
                continue
            ii, jj = np.nonzero(np.triu(thumbs[members] @ thumbs[members].T >= 0.995, 1))
            candidates.update(zip(np.minimum(members[ii], members[jj]).tolist(),
                                  np.maximum(members[ii], members[jj]).tolist()))
    out = []
    for i, j in sorted(candidates):
        a, b = np.asarray(images[i], np.int16), np.asarray(images[j], np.int16)
        if a.shape == b.shape and (np.abs(a - b) > 4).mean() <= 0.01:
            out.append((i, j))
    return out


def merge_groups(groups: pd.Series, pairs: Sequence[tuple[int, int]]) -> pd.Series:
    """Groups joined wherever a pair of rows links two of them (union-find): near-copies share a split."""
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.get(g, g) != g:
            parent[g] = parent.get(parent[g], parent[g])
            g = parent[g]
        return g

    for i, j in pairs:
        a, b = find(groups.iloc[i]), find(groups.iloc[j])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return groups.map(find)


def audit_leakage(df: pd.DataFrame, group_col: str | None = "group_id",
                  near_pairs: Sequence[tuple[int, int]] = ()) -> dict[str, int]:
    """Fail when one file, one image's pixels, one group or two near-identical images sit in two splits."""
    checks = [("sha256", "file (same sha256)"), ("pixel_sha256", "image (same pixels)")]
    if group_col:
        checks.append((group_col, "group"))
    for col, what in checks:
        if col not in df.columns:
            continue
        spread = df.groupby(col)["split"].nunique()
        leaked = spread[spread > 1]
        if len(leaked):
            key = leaked.index[0]
            rows = df[df[col] == key]
            where = "; ".join(f"{p} in {s}" for p, s in zip(rows["path"].head(4), rows["split"].head(4)))
            raise SplitError(f"leakage: {len(leaked)} {what} value(s) appear in more than one split, e.g. {key}: {where}")
    split = df["split"].to_numpy()
    crossing = [(i, j) for i, j in near_pairs if split[i] != split[j]]
    if crossing:
        i, j = crossing[0]
        raise SplitError(f"leakage: {len(crossing)} pair(s) of near-identical images in different splits, e.g. "
                         f"{df['path'].iloc[i]} ({split[i]}) and {df['path'].iloc[j]} ({split[j]})")
    return {"near_duplicate_pairs": len(near_pairs)}


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


def assign_splits(df: pd.DataFrame, cfg: Mapping, where: str = "split",
                  pairs: Sequence[tuple[int, int]] = ()) -> tuple[np.ndarray, dict]:
    """Split names for every row of an ingested manifest, as ``datasets.<name>.split`` says.

    Rows with a ``fixed_split`` (the source's split column, e.g. a held-out test set) keep it; the other rows
    are split among themselves with the configured ratios, so adding fixed test patients leaves the rest's split
    unchanged. The groups of near-identical images (`pairs`, :func:`near_duplicate_pairs`) are joined first."""
    ratios = check_ratios(cfg["ratios"], f"{where}.ratios")
    seed, trials, method = int(cfg["seed"]), int(cfg["trials"]), cfg["method"]
    groups = df["group_id"].astype(str).reset_index(drop=True)
    merged = merge_groups(groups, pairs)
    joined = int(groups.nunique() - merged.nunique())
    if joined:
        log.warning("%s: %d near-identical image pair(s) joined %d group(s) so that they share a split", where,
                    len(pairs), joined)
    fixed = df["fixed_split"].fillna("").astype(str).to_numpy() if "fixed_split" in df else np.full(len(df), "")
    mixed = pd.Series(fixed != "").groupby(merged.to_numpy()).nunique()
    if (mixed > 1).any():
        raise SplitError(f"group {mixed[mixed > 1].index[0]!r} has rows with and without a fixed split; give every "
                         "row of a patient the same split")
    free = fixed == ""
    out = fixed.astype(object)
    sub = df[free].reset_index(drop=True)
    labels = stratification_key(sub, cfg["stratify_on"]) if len(sub) else pd.Series(dtype=str)
    g = merged[free].reset_index(drop=True)
    if len(sub) == 0:
        pass
    elif method == "groups":
        out[free] = stratified_group_split(labels, g, ratios, seed, trials)
    elif method == "nested":   # test first (it does not move when the validation share changes), then val
        test = ratios.get("test", 0.0)
        outer = stratified_group_split(labels, g, {"rest": 1 - test, "test": test}, seed, trials)
        inner = outer == "rest"
        rest = {k: v / (1 - test) for k, v in ratios.items() if k != "test"}
        outer = outer.astype(object)
        outer[inner] = stratified_group_split(labels[inner], g[inner], rest, seed + 1, trials)
        out[free] = outer
    elif method == "hold_out_people":   # whole people to test; each other person's photos to train and val
        test = ratios.get("test", 0.0)
        outer = stratified_group_split(np.full(len(sub), "person"), g, {"rest": 1 - test, "test": test}, seed, trials)
        inner = outer == "rest"
        rest = {k: v / (1 - test) for k, v in ratios.items() if k != "test"}
        outer = outer.astype(object)
        photos = sub["path"].astype(str)[inner]
        outer[inner] = stratified_group_split(labels[inner], photos, rest, seed + 1, trials)
        out[free] = outer
    else:
        raise ConfigError(f"{where}.method: unknown {method!r}")
    info = {"method": method, "fixed_rows": int((~free).sum()), "near_duplicate_pairs": len(pairs),
            "groups_joined_by_near_duplicates": joined}
    return out, info


def split_dataset(ingested_dir, out_csv, cfg: Mapping, kind: str = "", where: str = "split") -> dict:
    """Split an ingested dataset; write ``out_csv`` (the manifest plus ``split``) and a JSON summary beside it.
    Fails on a class too small to stratify and on any leakage (files, pixels, groups, near-identical images)."""
    from pathlib import Path

    from genediag import io as gio
    from genediag.data.ingest import load_ingested

    manifest, images = load_ingested(ingested_dir)
    df = manifest.copy()
    pairs = near_duplicate_pairs(images, int(cfg["near_duplicate_min_content"])) if cfg["near_duplicates"] else []
    people_kind = cfg["method"] == "hold_out_people"
    if people_kind:   # photos of one person may look alike; only copies across people matter
        pairs = [(i, j) for i, j in pairs if df["group_id"].iloc[i] != df["group_id"].iloc[j]]
    df["split"], info = assign_splits(df, cfg, where, pairs)
    audit = audit_leakage(df, None if people_kind else "group_id", pairs)
    if people_kind:  # held-out people must not be seen in training
        held, seen = set(df.loc[df["split"] == "test", "group_id"]), set(df.loc[df["split"] != "test", "group_id"])
        if held & seen:
            raise SplitError(f"held-out people also in training: {sorted(held & seen)[:5]}")
    out_csv = Path(out_csv)
    gio.write_with(out_csv, lambda p: df.to_csv(p, index=False))
    summary = {"ratios": dict(cfg["ratios"]), "seed": int(cfg["seed"]), "stratify_on": strata_columns(cfg["stratify_on"]),
               "kind": kind, **info, **audit, **split_summary(df)}
    gio.write_json(out_csv.with_suffix(".json"), summary)
    log.info("split %s: %s items, %s groups", ingested_dir, summary["items"], summary["groups"])
    return summary
