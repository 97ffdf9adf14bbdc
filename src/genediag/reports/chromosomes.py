"""``reports/chromosomes.md``: data accounting, per-model metrics, per-class accuracy and confusion matrices."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from genediag.data.tasks import natural_key
from genediag.reports.markdown import confusion_figure, table

METRIC_COLUMNS = [("accuracy", "Accuracy"), ("macro_precision", "Precision"), ("macro_sensitivity", "Sensitivity"),
                  ("macro_specificity", "Specificity"), ("macro_f1", "F1")]


def write_chromosome_report(tasks: Sequence[str], dataset: str, synthetic: bool, out_md: str | Path,
                            metrics_dir: str | Path = "metrics", plots_dir: str | Path = "plots",
                            data_dir: str | Path = "data", figures_dir: str | Path = "reports/figures/chromosomes",
                            cohort_figures_dir: str | Path = "reports/figures") -> Path:
    out_md, figures_dir, cohort_figures_dir = Path(out_md), Path(figures_dir), Path(cohort_figures_dir)
    tag = " (synthetic cohort)" if synthetic else ""
    lines = [f"# Chromosome classification{tag}", ""]
    if synthetic:
        lines += ["> **Synthetic data.** Every number below was measured on the embedded synthetic cohort "
                  "(G-banded chromosomes rendered from the hg38 ideogram), not on patient data.", ""]

    ingest = json.loads((Path(data_dir) / "ingested" / dataset / "summary.json").read_text())
    split = json.loads((Path(data_dir) / "splits" / f"{dataset}.json").read_text())
    lines += ["## Data", "",
              f"Source `{ingest['source']}`: {ingest['input']} inputs = {ingest['accepted']} accepted + "
              f"{ingest['quarantined']} quarantined; {ingest['groups']} patients; cached as "
              f"{'×'.join(map(str, ingest['image_shape']))} {ingest['mode']} images.", ""]
    if ingest["quarantine_reasons"]:
        lines += [table(["Quarantine reason", "Items"], list(ingest["quarantine_reasons"].items())), ""]
    names = sorted(split["items"])
    lines += [table(["Split", "Items", "Patients"], [[s, split["items"][s], split["groups"][s]] for s in names]), ""]

    rel = lambda p: os.path.relpath(p, out_md.parent)  # noqa: E731
    for fig, caption in (("synthetic_chromosomes.png", "Contact sheet of generated chromosome instances"),
                         ("synthetic_karyogram.png", "A generated karyogram")):
        if synthetic and (cohort_figures_dir / fig).exists():
            lines += [f"![{caption} (synthetic)]({rel(cohort_figures_dir / fig)})", ""]

    for task in tasks:
        results = [json.loads(p.read_text()) for p in sorted((Path(metrics_dir) / task).glob("*.json"))]
        if not results:
            lines += [f"## {task}", "", f"No metrics yet in `{metrics_dir}/{task}/`; run `dvc repro`.", ""]
            continue
        lines += [f"## {task}: test-set metrics{tag}", "",
                  "Macro averages over classes. Specificity is TN/(TN+FP) (ChromosomeNet's paper prints "
                  "TN/(TP+TN), which is not specificity).", ""]
        lines += [table(["Model", "n", *[h for _, h in METRIC_COLUMNS], "Best epoch"],
                        [[r["model"], r["n"], *[r[k] for k, _ in METRIC_COLUMNS], r["best_epoch"]] for r in results]), ""]
        classes = sorted({c for r in results for c in r["per_class_accuracy"]}, key=natural_key)
        lines += [f"### {task}: per-class accuracy{tag}", ""]
        rows = [[c, *[r["per_class_accuracy"].get(c, float("nan")) for r in results]] for c in classes]
        rows.append(["**average**", *[sum(r["per_class_accuracy"].values()) / len(r["per_class_accuracy"])
                                      for r in results]])
        lines += [table(["Class", *[r["model"] for r in results]], rows), ""]
        for r in results:
            conf = pd.read_csv(Path(plots_dir) / "confusion" / task / f"{r['model']}.csv", dtype=str)
            fig = confusion_figure(conf["actual"], conf["predicted"], list(r["per_class_accuracy"]),
                                   figures_dir / f"confusion_{task}_{r['model']}.png",
                                   f"{task} / {r['model']}{tag}")
            lines += [f"![Confusion matrix {task} {r['model']}{tag}]({rel(fig)})", ""]
    from genediag.reports.karyotyping import karyotyping_section

    lines += [karyotyping_section(out_md, synthetic, metrics_dir, plots_dir)]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines))
    return out_md
