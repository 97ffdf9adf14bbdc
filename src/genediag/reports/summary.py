"""The headline of a commit: per branch, the models as columns and the headline metrics with their 95 % CIs.

Read by the first screen of ``reports/index.html`` (``id="summary"``) and by ``genediag compare``. Everything comes
from the metrics files the pipeline wrote (``metrics/<branch>/<run>.json``; sub-folders and ``*.seeds.json`` are
detail, not headline), so a new run appears without touching this module.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from genediag.reports.published import published

log = logging.getLogger(__name__)

BRANCHES = {"chromosomes": "Chromosome classification", "karyotyping": "Cell-level karyotyping",
            "karyograms": "Karyogram abnormality detection", "faces": "Facial syndrome recognition"}
#: headline metrics in display order, with their row labels; a metric shows when a column of the table has it
HEADLINE = [
    ("accuracy", "Accuracy (top-1)"), ("top1_patterns", "Top-1, syndromes only"),
    ("verification_accuracy", "Verification accuracy"),
    ("exact_karyotype_accuracy", "Exact karyotype"), ("exact_karyotype_accuracy_abnormal", "Exact karyotype, abnormal"),
    ("macro_f1", "Macro F1"), ("auc", "AUC"), ("recall", "Recall (sensitivity)"), ("precision", "Precision"),
    ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
]
HEADLINE_KEYS = [k for k, _ in HEADLINE]


@dataclass
class Column:
    """One metrics file: a run of a branch."""
    branch: str
    run: str
    path: Path
    data: dict[str, Any]
    seeds: dict[str, Any] | None = None

    @property
    def model(self) -> str:
        return str(self.data.get("model") or self.data.get("selected_run") or self.run)

    @property
    def task(self) -> str:
        return str(self.data.get("task") or self.branch)

    @property
    def synthetic(self) -> bool | None:
        s = self.data.get("synthetic")
        return s if isinstance(s, bool) else None

    def value(self, key: str) -> float | None:
        v = self.data.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    def ci(self, key: str) -> tuple[float, float] | None:
        ci = (self.data.get("ci95") or {}).get(key)
        return (float(ci[0]), float(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci \
            else None

    def seed_sd(self, key: str) -> tuple[float, int] | None:
        s = ((self.seeds or {}).get("summary") or {}).get(key) or {}
        return (float(s["sd"]), int(s["n"])) if s.get("sd") is not None and s.get("n", 0) > 1 else None


@dataclass
class Group:
    """One table: columns that share their rows."""
    branch: str
    title: str
    columns: list[Column] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        return [(k, label) for k, label in HEADLINE if any(c.value(k) is not None for c in self.columns)]


def collect(metrics_dir: str | Path = "metrics", branches: Iterable[str] = tuple(BRANCHES)) -> list[Group]:
    """The headline groups of every branch that has metrics, in :data:`BRANCHES` order."""
    metrics_dir = Path(metrics_dir)
    groups: list[Group] = []
    for branch in branches:
        cols = []
        for path in sorted((metrics_dir / branch).glob("*.json")):
            if path.name.endswith(".seeds.json"):
                continue
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                log.warning("%s: left out of the summary (%s)", path, exc)
                continue
            if not isinstance(data, dict) or data.get("skipped"):
                continue
            seeds_path = path.with_name(path.stem + ".seeds.json")
            seeds = json.loads(seeds_path.read_text()) if seeds_path.is_file() else None
            cols.append(Column(branch, path.stem, path, data, seeds))
        groups += _group(branch, cols)
    return [g for g in groups if g.columns and g.rows()]


def _group(branch: str, cols: list[Column]) -> list[Group]:
    title = BRANCHES.get(branch, branch)
    if branch == "chromosomes":
        multi = [c for c in cols if len(c.data.get("per_class_accuracy") or {}) > 2]
        binary = [c for c in cols if c not in multi]
        return [Group(branch, f"{title}: whole-set tasks", multi),
                Group(branch, f"{title}: abnormal vs normal (binary tasks)", binary)]
    if branch == "faces":
        return [Group(branch, f"{title}: syndromes (stage 2)", [c for c in cols if c.data.get("stage") != "pretrain"]),
                Group(branch, f"{title}: identity verification (stage 1)",
                      [c for c in cols if c.data.get("stage") == "pretrain"])]
    return [Group(branch, title, cols)]


def fmt_ci(value: float | None, ci: tuple[float, float] | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else f"{value:.{digits}f}"


def column_header(c: Column) -> str:
    if c.branch == "chromosomes":
        return f"{c.task} · {c.model}"
    if c.branch == "cross":
        return f"{c.data.get('run', c.run)} on {c.data.get('evaluated_on', '?')}"
    return c.model


def published_value(c: Column, key: str) -> float | None:
    return published(c.branch, c.model, key)


def synthetic_badge(c: Column) -> str:
    return {True: "synthetic", False: "real", None: "unknown"}[c.synthetic]


def n_text(c: Column) -> str:
    d = c.data
    if "n" in d:
        return f"{d['n']} items, {d['patients']} patients" if d.get("patients") is not None else f"{d['n']} items"
    if "pairs" in d:
        return f"{d['pairs']} pairs, {d['held_out_people']} people"
    if "cells_with_truth" in d:
        return f"{d['cells_with_truth']} cells"
    return "—"


def markdown(groups: list[Group]) -> str:
    """The summary as Markdown tables (used by ``genediag compare`` and tests)."""
    from genediag.reports.markdown import table

    out = []
    for g in groups:
        head = ["", *[column_header(c) for c in g.columns]]
        rows = [["data", *[f"{c.data.get('dataset', '—')} ({synthetic_badge(c)})" for c in g.columns]],
                ["test set", *[n_text(c) for c in g.columns]]]
        for key, label in g.rows():
            rows.append([f"{label}, 95 % CI", *[fmt_ci(c.value(key), c.ci(key)) for c in g.columns]])
            pub = [published_value(c, key) for c in g.columns]
            if any(p is not None for p in pub):
                rows.append([f"{label}, published (their data)", *["—" if p is None else f"{p:.3f}" for p in pub]])
        out += [f"### {g.title}", "", table(head, rows), ""]
    return "\n".join(out)
