"""``reports/chromosomes.md``: data accounting, then the model families' tables (per-model metrics, per-class
accuracy, quartiles, box plot, inference time, binary tasks with AUC/ROC, confusion matrices; see
:mod:`genediag.reports.chromosome_family`) and the karyotyping section."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from genediag.reports.chromosome_family import METRIC_COLUMNS  # noqa: F401  (re-exported)
from genediag.reports.markdown import table


def write_chromosome_report(tasks: Sequence[str], dataset_dir: str | Path, split_json: str | Path, out_md: str | Path,
                            metrics_dir: str | Path = "metrics/chromosomes", plots_dir: str | Path = "plots/chromosomes",
                            karyotyping_metrics: str | Path = "metrics/karyotyping",
                            karyotyping_plots: str | Path = "plots/karyotyping",
                            karyotyping_example: str | Path = "reports/figures/karyotyping_example.png",
                            figures_dir: str | Path = "reports/figures/chromosomes",
                            cohort_figures_dir: str | Path = "reports/figures",
                            benchmarks_dir: str | Path = "benchmarks/inference",
                            evaluation_dir: str | Path = "evaluation/chromosomes") -> Path:
    out_md, figures_dir, cohort_figures_dir = Path(out_md), Path(figures_dir), Path(cohort_figures_dir)
    ingest = json.loads((Path(dataset_dir) / "summary.json").read_text())
    split = json.loads(Path(split_json).read_text())
    synthetic = bool(ingest.get("synthetic"))
    tag = " (synthetic cohort)" if synthetic else ""
    lines = [f"# Chromosome classification{tag}", ""]
    if synthetic:
        lines += ["> **Synthetic data.** Every number below was measured on the embedded synthetic cohort "
                  "(G-banded chromosomes rendered from the hg38 ideogram), not on patient data.", ""]

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

    from genediag.reports.chromosome_family import task_sections

    lines += task_sections(tasks, synthetic, out_md, metrics_dir, plots_dir, figures_dir, benchmarks_dir,
                           evaluation_dir)
    from genediag.reports.karyotyping import karyotyping_section

    lines += [karyotyping_section(out_md, synthetic, karyotyping_metrics, karyotyping_plots, karyotyping_example)]
    from genediag import io as gio

    return gio.write_text(out_md, "\n".join(lines))
