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
    "chromosomes, one more for a trisomy) by a linear assignment that maximises the summed log-probability of "
    "the chromosome classifier; crops without a slot and slots without a crop cost a fixed penalty. The "
    "hypothesis with the best score plus log-prior is the cell's karyotype. Only numerical karyotypes are "
    "hypotheses: a structurally abnormal cell (e.g. 46,XX,t(9;22)) is right when called by its numerical "
    "karyotype (46,XX). Crop accuracy counts only crops whose label is one of the model's classes (a der22 crop "
    "is left out); *true-class accuracy* scores every crop against its origin (der22 → 22). *Counts exact*: "
    "every class has the true number of crops (by the model's top class before assignment, by the final labels "
    "after). Sensitivity and specificity are for \"numerically abnormal\" (anything but 46,XX/46,XY), per cell."
)


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def karyotyping_section(out_md: str | Path, synthetic: bool, metrics_dir: str | Path = "metrics",
                        plots_dir: str | Path = "plots",
                        example_png: str | Path = "reports/figures/karyotyping_example.png") -> str:
    """Markdown for the karyotyping section; image links are relative to ``out_md``'s folder."""
    tag = " (synthetic cohort)" if synthetic else ""
    lines = [f"## Cell-level karyotyping{tag}", ""]
    files = sorted((Path(metrics_dir) / "karyotyping").glob("*.json"))
    if not files:
        return "\n".join(lines + [f"No karyotyping metrics yet in `{metrics_dir}/karyotyping/`; run `dvc repro`.",
                                  ""])
    results = [(p.stem, json.loads(p.read_text())) for p in files]
    skipped = [(n, r) for n, r in results if "skipped" in r]
    done = [(n, r) for n, r in results if "skipped" not in r]
    for n, r in skipped:
        lines += [f"Karyotyping with `{n}` was skipped: {r['skipped']} (dataset `{r.get('dataset', '?')}`).", ""]
    if not done:
        return "\n".join(lines)
    lines += [METHOD, ""]
    rows = []
    for n, r in done:
        rows.append([f"{n}" + (f" → {r['selected_run']}" if r["selected_run"] != n else ""), r["cells"],
                     r["crops_scored"], _fmt(r["crop_accuracy_before"]), _fmt(r["crop_accuracy_after"]),
                     _fmt(r["true_class_accuracy_before"]), _fmt(r["true_class_accuracy_after"]),
                     _fmt(r.get("cells_counts_exact_before")), _fmt(r.get("cells_counts_exact_after")),
                     _fmt(r.get("karyotype_accuracy")),
                     f"{_fmt(r.get('sensitivity'))} (n={r.get('abnormal_cells', 0)})",
                     f"{_fmt(r.get('specificity'))} (n={r.get('normal_cells', 0)})"])
    lines += [table(["Model run", "Cells", "Crops scored", "Crop acc. before", "Crop acc. after",
                     "True-class acc. before", "True-class acc. after", "Counts exact before",
                     "Counts exact after", "Karyotype acc.", "Sensitivity", "Specificity"], rows), ""]
    for n, r in done:
        if "truth" in r:
            lines += [f"`{n}`: {r['truth']}; truth-dependent figures are not available.", ""]
        conf_path = Path(plots_dir) / "karyotyping" / f"{n}.csv"
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
