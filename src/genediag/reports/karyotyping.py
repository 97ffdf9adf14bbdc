"""The "Cell-level karyotyping" section of ``reports/chromosomes.md`` (from ``metrics/karyotyping/*.json``,
``plots/karyotyping/*.csv`` and ``reports/figures/karyotyping_example.png``, all written by the karyotype stage)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from genediag.reports.markdown import table

METHOD = (
    "Each cell's crops are matched to the slots a karyotype hypothesis expects (two per autosome, its sex "
    "chromosomes, one more for a trisomy, one fewer for a monosomy) by a linear assignment that maximises the "
    "summed log-probability of the chromosome classifier (temperature-scaled); crops without a slot and slots "
    "without a crop cost a fixed penalty. The hypotheses are every autosomal trisomy and monosomy, 45,X, 47,XXX, "
    "47,XXY, 47,XYY and the two normal karyotypes; the one with the best score plus log-prior is the cell's call. "
    "A cell whose per-crop log-likelihood is below the threshold fitted on validation cells (\"no hypothesis "
    "fits\") is *referred* and counts as not called. Only numerical karyotypes are hypotheses: a structurally "
    "abnormal cell (e.g. 46,XX,t(9;22)) is right when called by its numerical karyotype (46,XX). *Exact*: the "
    "called karyotype equals the true one. *Sensitivity*: abnormal cells called exactly right (an abnormal call of "
    "the wrong karyotype is a miss); *any-abnormal call rate*: the lenient figure (any abnormal call). Crop "
    "accuracy counts only crops whose label is a model class (a der22 crop is left out); *true-class accuracy* "
    "scores every crop against its origin (der22 → 22). 95 % intervals: bootstrap over patients."
)


def _with_ci(r: dict, key: str) -> str:
    ci = (r.get("ci95") or {}).get(key)
    v = r.get(key)
    return _fmt(v) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def karyotyping_section(out_md: str | Path, synthetic: bool, metrics_dir: str | Path = "metrics/karyotyping",
                        plots_dir: str | Path = "plots/karyotyping",
                        example_png: str | Path = "reports/figures/karyotyping_example.png") -> str:
    """Markdown for the karyotyping section; image links are relative to ``out_md``'s folder."""
    tag = " (synthetic cohort)" if synthetic else ""
    lines = [f"## Cell-level karyotyping{tag}", ""]
    files = sorted(Path(metrics_dir).glob("*.json"))
    if not files:
        return "\n".join(lines + [f"No karyotyping metrics yet in `{metrics_dir}/`; run `dvc repro`.",
                                  ""])
    results = [(p.stem, json.loads(p.read_text())) for p in files]
    skipped = [(n, r) for n, r in results if "skipped" in r]
    done = [(n, r) for n, r in results if "skipped" not in r]
    for n, r in skipped:
        lines += [f"Karyotyping with `{n}` was skipped: {r['skipped']} (dataset `{r.get('dataset', '?')}`).", ""]
    if not done:
        return "\n".join(lines)
    lines += [METHOD, ""]
    rows, calls = [], []
    for n, r in done:
        rows.append([f"{n}" + (f" → {r['selected_run']}" if r["selected_run"] != n else ""), r["cells"],
                     r["crops_scored"], _fmt(r["crop_accuracy_before"]), _fmt(r["crop_accuracy_after"]),
                     _fmt(r["true_class_accuracy_before"]), _fmt(r["true_class_accuracy_after"]),
                     _fmt(r.get("cells_counts_exact_before")), _fmt(r.get("cells_counts_exact_after"))])
        calls.append([n, _with_ci(r, "exact_karyotype_accuracy"),
                      f"{_with_ci(r, 'exact_karyotype_accuracy_abnormal')} (n={r.get('abnormal_cells', 0)})",
                      _with_ci(r, "sensitivity"), _fmt(r.get("any_abnormal_call_rate")),
                      f"{_with_ci(r, 'specificity')} (n={r.get('normal_cells', 0)})",
                      f"{r.get('referred', 0)} ({r.get('referred_abnormal', 0)} abnormal)",
                      _fmt(r.get("accuracy_retained"))])
    lines += [table(["Model run", "Cells", "Crops scored", "Crop acc. before", "Crop acc. after",
                     "True-class acc. before", "True-class acc. after", "Counts exact before",
                     "Counts exact after"], rows), ""]
    lines += [table(["Model run", "Exact karyotype", "Exact, abnormal cells", "Sensitivity (exact)",
                     "Any-abnormal call rate", "Specificity", "Referred (no fit)", "Exact, retained cells"], calls), ""]
    for n, r in done:
        per = r.get("per_karyotype") or {}
        if per:
            lines += [f"Per true karyotype (`{n}`{tag}):", "",
                      table(["True karyotype", "Cells", "Called exactly", "Referred"],
                            [[k, v["n"], v["exact"], v["referred"]] for k, v in sorted(per.items())]), ""]
    for n, r in done:
        if "truth" in r:
            lines += [f"`{n}`: {r['truth']}; truth-dependent figures are not available.", ""]
        conf_path = Path(plots_dir) / f"{n}.csv"
        if not conf_path.is_file():
            continue
        conf = pd.read_csv(conf_path, dtype=str, keep_default_na=False)
        if not len(conf):
            continue
        ct = pd.crosstab(conf["actual"], conf["predicted"])
        lines += [f"### Karyotype confusion, `{n}`{tag}", "", "Rows: true numerical karyotype; columns: called.", "",
                  table(["actual \\ predicted", *ct.columns], [[a, *map(int, ct.loc[a])] for a in ct.index]), ""]
    example = Path(example_png)
    if example.is_file():
        rel = os.path.relpath(example, Path(out_md).parent)
        cell = done[0][1].get("example_cell", "")
        lines += [f"![Karyogram composed from the predicted labels of cell {cell}{tag}]({rel})", "",
                  f"Karyogram of cell {cell}{tag}, composed from its crops' final labels; the title is the "
                  "predicted karyotype.", ""]
    return "\n".join(lines)
