"""Paired comparisons of runs evaluated on the same test items: is a difference beyond noise?

Reads each run's ``evaluation/<branch>/<run>/predictions.csv`` (per item: patient, target, predicted, class
probabilities), recomputes the headline metric of both runs on the same resampled patients
(:func:`genediag.evaluation.uncertainty.paired_bootstrap`) and gives the difference with its 95 % interval:
*distinguishable* when the interval excludes 0, otherwise *not distinguishable*.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from genediag.evaluation.metrics import headline_metrics
from genediag.evaluation.uncertainty import paired_bootstrap


def load_predictions(evaluation_dir: str | Path, run: str) -> pd.DataFrame | None:
    path = Path(evaluation_dir) / run / "predictions.csv"
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"target": str, "predicted": str, "group_id": str, "path": str},
                       keep_default_na=False)


def _inputs(df: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    index = {n: i for i, n in enumerate(names)}
    return {"y": df["target"].map(index).to_numpy(), "pred": df["predicted"].map(index).to_numpy(),
            "probs": df[[f"p_{n}" for n in names]].to_numpy(float)}


def compare_pair(a: pd.DataFrame, b: pd.DataFrame, metrics: Sequence[str], n_resamples: int = 1000,
                 seed: int = 0) -> dict[str, dict[str, Any]] | None:
    """Paired bootstrap of `metrics` between two prediction tables; None when they do not cover the same items
    with the same classes (then no paired test is possible)."""
    key = "path" if "path" in a.columns and "path" in b.columns else "index"
    names = [c[2:] for c in a.columns if c.startswith("p_")]
    if (names != [c[2:] for c in b.columns if c.startswith("p_")] or len(a) != len(b)
            or set(a[key]) != set(b[key])):
        return None
    b = b.set_index(key).loc[a[key]].reset_index()
    if not (a["target"].to_numpy() == b["target"].to_numpy()).all():
        return None

    def fn(y, pred, probs):
        m = headline_metrics(y, pred, probs, names)
        return {k: m.get(k) for k in metrics}

    return paired_bootstrap(fn, a["group_id"].to_numpy(), _inputs(a, names), _inputs(b, names), n_resamples, seed)


def pairwise_table(evaluation_dir: str | Path, runs: Sequence[str], labels: dict[str, str], metrics: Sequence[str],
                   pairs: Sequence[tuple[str, str]] | None = None, n_resamples: int = 1000,
                   seed: int = 0) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of a Markdown table: one row per pair of runs and metric, B − A with its 95 % interval."""
    preds = {r: load_predictions(evaluation_dir, r) for r in runs}
    pairs = list(pairs) if pairs is not None else list(itertools.combinations(runs, 2))
    rows = []
    for ra, rb in pairs:
        if preds.get(ra) is None or preds.get(rb) is None:
            continue
        res = compare_pair(preds[ra], preds[rb], metrics, n_resamples, seed)
        if res is None:
            rows.append([labels.get(ra, ra), labels.get(rb, rb), "—", "—", "—", "test items differ: no paired test"])
            continue
        for m in metrics:
            r = res.get(m)
            if r is None or r["diff"] is None:
                continue
            ci = r["ci95"]
            verdict = ("distinguishable" if r["distinguishable"] else "not distinguishable") if ci else "undefined"
            rows.append([labels.get(ra, ra), labels.get(rb, rb), m, f"{r['diff']:+.3f}",
                         f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "—", verdict])
    header = ["A", "B", "metric", "B − A", "95 % CI (paired, patients)", "verdict"]
    return header, rows
