"""Report sections for the chromosome classifier families (ChromosomeNet baselines, Pinnacle DCNN): the papers'
tables, filled by our runs.

Per multi-class task: test-set metrics (ChromosomeNet eqs. 1–9: accuracy; macro precision, sensitivity,
specificity, F1), per-class accuracy in ChromosomeNet's Table 3 layout (with the average and the number of classes
where each model is best), quartiles of per-class accuracy (Table 4), a box plot across models (Fig. 4/5), the
inference time (seconds to predict 1000 samples one at a time, and batched) and the confusion matrices.
Binary tasks (abnormal chromosome vs its normal counterpart) share one table with AUC and one ROC figure.

Published figures go in :data:`PUBLISHED` (keyed by task and model), shown in a column beside ours; we only put
numbers there that we can cite — an empty entry is shown as "—".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from genediag.data.tasks import NORMAL_CHROMOSOMES, natural_key
from genediag.reports.markdown import confusion_figure, save_figure, table

METRIC_COLUMNS = [("accuracy", "Accuracy"), ("macro_precision", "Precision"), ("macro_sensitivity", "Sensitivity"),
                  ("macro_specificity", "Specificity"), ("macro_f1", "F1")]
QUARTILE_COLUMNS = [("min", "Min"), ("q1", "Q1"), ("median", "Median"), ("q3", "Q3"), ("iqr", "IQR"), ("max", "Max")]

#: How the papers name our model ids.
MODEL_NAMES = {
    "dcnn": "Pinnacle DCNN",
    "mobilenetv2_100": "MobileNetV2",
    "densenet121": "DenseNet121",
    "resnet50": "ResNet-50",
    "resnet101": "ResNet-101",
    "resnet152": "ResNet-152",
    "resnext101_32x8d": "ResNeXt-101 32×8d",
    "res2net50_26w_4s": "Res2Net-50",
    "resnest50d": "ResNeSt-50",
    "tf_efficientnet_lite0": "EfficientNet-Lite0",
}

#: Published figures on the papers' own data, {(task, model): {metric: value, "source": citation}}; metric keys as in
#: our metrics JSON (accuracy, macro_f1, …) plus "seconds_per_1000_single". Fill from the papers; never estimate.
PUBLISHED: dict[tuple[str, str], dict[str, Any]] = {}

PUBLISHED_NOTE = (
    "\"Published\" columns: the papers' figures on their own private data (ChromosomeNet: 126,453 G-band "
    "chromosome instances from 2,763 karyotypes of 408 individuals, per its abstract). We did not have the papers' "
    "tables here, so the per-model cells read \"—\" (fill from the paper); the only published figure we could check "
    "is the ChromosomeNet abstract's best baseline, 99.33 % accuracy (model not named in the abstract). They are "
    "not comparable with our synthetic numbers: different data, image size and training budget.")


def display_name(model: str) -> str:
    name = MODEL_NAMES.get(model)
    return f"{name} (`{model}`)" if name else f"`{model}`"


def published(task: str, model: str, key: str) -> Any:
    value = PUBLISHED.get((task, model), {}).get(key)
    return "—" if value is None else value


def accuracy_quartiles(values: Sequence[float]) -> dict[str, float]:
    """Min, Q1, median, Q3, IQR (Q3 − Q1) and max of per-class accuracies (numpy's linear-interpolation
    percentiles); NaN entries (a class absent from the test split) are ignored."""
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], dtype=np.float64)
    if v.size == 0:
        raise ValueError("no per-class accuracies to summarise")
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"min": float(v.min()), "q1": float(q1), "median": float(med), "q3": float(q3), "iqr": float(q3 - q1),
            "max": float(v.max())}


def best_counts(per_model: dict[str, dict[str, float]], classes: Sequence[str]) -> dict[str, int]:
    """For each model, the number of classes where its accuracy is the highest; ties count for every tied model."""
    counts = {m: 0 for m in per_model}
    for c in classes:
        vals = {m: acc[c] for m, acc in per_model.items() if c in acc and not np.isnan(acc[c])}
        if not vals:
            continue
        top = max(vals.values())
        for m, v in vals.items():
            if np.isclose(v, top, rtol=0, atol=1e-12):
                counts[m] += 1
    return counts


def per_class_rows(per_model: dict[str, dict[str, float]]) -> tuple[list[list[Any]], dict[str, int]]:
    """ChromosomeNet Table 3: one row per class (best value in bold), then the average and the best-in count."""
    classes = sorted({c for acc in per_model.values() for c in acc}, key=natural_key)
    models = list(per_model)
    rows: list[list[Any]] = []
    for c in classes:
        vals = [per_model[m].get(c, float("nan")) for m in models]
        finite = [v for v in vals if not np.isnan(v)]
        top = max(finite) if finite else None
        bold = len(models) > 1
        rows.append([c, *[f"**{v:.4f}**" if bold and top is not None and np.isclose(v, top, rtol=0, atol=1e-12)
                          else v for v in vals]])
    rows.append(["**average**", *[float(np.nanmean(list(per_model[m].values()))) for m in models]])
    counts = best_counts(per_model, classes)
    rows.append(["**best in (classes)**", *[counts[m] for m in models]])
    return rows, counts


def boxplot_figure(per_model: dict[str, list[float]], path: str | Path, title: str) -> Path:
    """Box plot of per-class accuracy, one box per model (ChromosomeNet Fig. 4/5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_model)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 2), 3.8))
    ax.boxplot([per_model[n] for n in names], whis=1.5, showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), [MODEL_NAMES.get(n, n) for n in names], rotation=30, ha="right",
                  fontsize=8)
    ax.set_ylabel("per-class accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def load_benchmarks(benchmarks_dir: str | Path, task: str) -> dict[str, dict[str, Any]]:
    """{model: benchmark JSON} for `task` from ``<benchmarks_dir>/<run>.json`` (empty when none were measured)."""
    folder = Path(benchmarks_dir)
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return {b["model"]: b for b in found if b.get("task") == task}


def load_references(benchmarks_dir: str | Path, task: str) -> list[dict[str, Any]]:
    """Reference benchmarks (``"task": "reference"``, e.g. MobileNetV2 at 224 px with random weights, written by
    benchmarks/onnx_inference.py) that are meant to be shown beside `task`'s rows (their ``"beside"`` list)."""
    folder = Path(benchmarks_dir)
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return [b for b in found if b.get("task") == "reference" and task in b.get("beside", [])]


def _machine(bench: dict[str, Any]) -> str:
    m = bench.get("machine", {})
    parts = [m.get("cpu", "?"), f"{m.get('usable_cpus', '?')} usable CPUs", f"torch {m.get('torch', '?')}",
             f"onnxruntime {m.get('onnxruntime', '?')}", m.get("platform", "")]
    return ", ".join(str(p) for p in parts if p)


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def _load(b: dict[str, Any]) -> str:
    before, after = b.get("loadavg_before"), b.get("loadavg_after")
    if before and after:
        return f"{before[0]:.2f} → {after[0]:.2f}"
    load = b.get("machine", {}).get("load_average_1min")
    return "—" if load is None else str(load)


def _bench_row(name: str, b: dict[str, Any], published_value: Any) -> list[Any]:
    delta = b.get("accuracy_delta")
    return [name, f"{b['parameters'] / 1e6:.2f} M", "×".join(map(str, b["input"])), b.get("threads", "?"),
            _fmt(b.get("eager_seconds_per_1000_single")), _fmt(b["seconds_per_1000_single"]),
            f"{b['speedup_single']:.1f}×" if b.get("speedup_single") else "—",
            f"{_fmt(b.get('eager_seconds_per_1000_batched'))} / {_fmt(b['seconds_per_1000_batched'])} "
            f"(batch {b['batch_size']})",
            "—" if delta is None else f"{100 * delta:+.2f}", _load(b), published_value]


def inference_section(task: str, results: list[dict[str, Any]], benchmarks: dict[str, dict[str, Any]],
                      references: Sequence[dict[str, Any]] = ()) -> list[str]:
    lines = [f"### {task}: inference time", "",
             "ChromosomeNet's InferenceTime: seconds to predict 1000 samples one at a time (batch 1, model only; "
             "images preloaded), and the same samples batched, for eager PyTorch (`model.pt`) and the deployed path "
             "(`model.onnx` in ONNX Runtime, what `evaluate` and `predict` run), measured in one process with the "
             "same thread count. Speed-up = eager ÷ deployed, one at a time. Accuracy Δ = deployed − eager on the "
             "benchmarked test samples, in points. Measured by the `benchmark` stage into "
             "`benchmarks/inference/<run>.json` (not `metrics/`: timings depend on the machine and its load).", ""]
    rows, machines = [], []
    for r in results:
        b = benchmarks.get(r["model"])
        if b is None or "eager_seconds_per_1000_single" not in b:
            rows.append([display_name(r["model"]), "not measured (list the run under `chromosomes.benchmark`)", "",
                         "", "", "", "", "", "", "", published(task, r["model"], "seconds_per_1000_single")])
            continue
        rows.append(_bench_row(display_name(r["model"]), b, published(task, r["model"], "seconds_per_1000_single")))
        machines.append(_machine(b))
    for b in references:
        rows.append(_bench_row(f"reference: {display_name(b['model'])}, {b.get('weights_short', b.get('weights'))}",
                               b, _fmt(b.get("published_seconds_per_1000_single"), "g")))
        machines.append(_machine(b))
    lines += [table(["Model", "Parameters", "Input", "Threads", "Eager s / 1000 one at a time",
                     "Deployed s / 1000 one at a time", "Speed-up", "Batched s / 1000 eager / deployed",
                     "Accuracy Δ (points)", "Load 1 min (before → after)", "Published s / 1000 (their hardware)"],
                    rows), ""]
    for b in references:
        if b.get("published_note"):
            lines += [f"Reference row: {b['published_note']}", ""]
    for m in sorted(set(machines)):
        lines += [f"Machine: {m}. Timings vary with what else runs on it (see the load column).", ""]
    return lines


def binary_counts(actual: Sequence[str], predicted: Sequence[str], positive: str) -> dict[str, int]:
    a, p = np.asarray(actual, dtype=str), np.asarray(predicted, dtype=str)
    return {"tp": int(((a == positive) & (p == positive)).sum()), "fn": int(((a == positive) & (p != positive)).sum()),
            "fp": int(((a != positive) & (p == positive)).sum()), "tn": int(((a != positive) & (p != positive)).sum())}


def positive_class(classes: Sequence[str]) -> str:
    """The abnormal class of a binary task (the one that is not a normal chromosome), else the second class."""
    abnormal = [c for c in classes if c not in NORMAL_CHROMOSOMES]
    return abnormal[0] if len(abnormal) == 1 else list(classes)[-1]


def _auc(result: dict[str, Any]) -> Any:
    for key in ("auc", "roc_auc"):
        if isinstance(result.get(key), (int, float)):
            return float(result[key])
    return None


def _roc_points(plots_dir: Path, run: str) -> pd.DataFrame | None:
    path = plots_dir / "roc" / f"{run}.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    return df if {"fpr", "tpr"} <= set(df.columns) else None


def roc_figure(curves: dict[str, tuple[pd.DataFrame, float | None]], path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for label, (df, auc) in curves.items():
        ax.plot(df["fpr"], df["tpr"], lw=1.3, label=label + ("" if auc is None else f" (AUC {auc:.3f})"))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set_xlabel("false positive rate (1 − specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def _confusions(task, results, plots_dir, figures_dir, tag, rel) -> list[str]:
    lines = []
    for r in results:
        conf = pd.read_csv(Path(plots_dir) / "confusion" / f"{r['run']}.csv", dtype=str)
        fig = confusion_figure(conf["actual"], conf["predicted"], list(r["per_class_accuracy"]),
                               Path(figures_dir) / f"confusion_{task}_{r['model']}.png", f"{task} / {r['model']}{tag}")
        lines += [f"![Confusion matrix {task} {r['model']}{tag}]({rel(fig)})", ""]
    return lines


def with_ci(result: dict[str, Any], key: str) -> str:
    """``0.970 [0.967, 0.973]``: a metric with its 95 % interval (— when absent)."""
    v = result.get(key)
    if not isinstance(v, (int, float)):
        return "—"
    ci = (result.get("ci95") or {}).get(key)
    return f"{v:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else f"{v:.4f}"


def multiclass_section(task: str, results: list[dict[str, Any]], tag: str, plots_dir: Path, figures_dir: Path,
                       benchmarks: dict[str, dict[str, Any]], rel,
                       evaluation_dir: str | Path = "evaluation/chromosomes",
                       references: Sequence[dict[str, Any]] = ()) -> list[str]:
    lines = [f"## {task}: test-set metrics{tag}", "",
             "Macro averages over classes (ChromosomeNet eqs. 1–9). Specificity is TN/(TN+FP) per class "
             "(ChromosomeNet's paper prints TN/(TP+TN), which is not specificity).", ""]
    lines += [table(["Model", "n (patients)", *[f"{h} [95 % CI]" for _, h in METRIC_COLUMNS], "ECE", "Best epoch",
                     "Published accuracy", "Published F1"],
                    [[display_name(r["model"]), f"{r['n']} ({r.get('patients', '—')})",
                      *[with_ci(r, k) for k, _ in METRIC_COLUMNS], r.get("ece", "—"), r["best_epoch"],
                      published(task, r["model"], "accuracy"), published(task, r["model"], "macro_f1")]
                     for r in results]), "",
              "Intervals: 2.5–97.5 % percentiles of a bootstrap over test patients (1,000 resamples).", ""]
    if len(results) > 1:
        from genediag.reports.paired import pairwise_table

        head, rows = pairwise_table(Path(evaluation_dir), [r["run"] for r in results],
                                    {r["run"]: MODEL_NAMES.get(r["model"], r["model"]) for r in results},
                                    ["accuracy", "macro_f1"])
        if rows:
            lines += [f"### {task}: paired comparison{tag}", "",
                      "Both models on the same test crops, resampled by patient: the difference B − A and its 95 % "
                      "interval; *not distinguishable* when it covers 0.", "", table(head, rows), ""]
    per_model = {r["model"]: {c: (float("nan") if v is None else float(v)) for c, v in r["per_class_accuracy"].items()}
                 for r in results}
    rows, _ = per_class_rows(per_model)
    lines += [f"### {task}: per-class accuracy, ChromosomeNet Table 3 layout{tag}", "",
              "Per-class accuracy = TP/(TP+FN), the share of a class's test items classified correctly. Bold: the "
              "best model for the class; *best in* counts those classes (ties count for every tied model).", ""]
    lines += [table(["Class", *[MODEL_NAMES.get(m, m) for m in per_model]], rows), ""]
    quart = {m: accuracy_quartiles(list(acc.values())) for m, acc in per_model.items()}
    lines += [f"### {task}: quartiles of per-class accuracy, ChromosomeNet Table 4{tag}", ""]
    lines += [table(["Model", *[h for _, h in QUARTILE_COLUMNS], "Published median"],
                    [[display_name(m), *[q[k] for k, _ in QUARTILE_COLUMNS], published(task, m, "median")]
                     for m, q in quart.items()]), ""]
    fig = boxplot_figure({m: [v for v in acc.values() if not np.isnan(v)] for m, acc in per_model.items()},
                         figures_dir / f"boxplot_{task}.png", f"{task}: per-class accuracy{tag}")
    lines += [f"![Per-class accuracy box plot {task}{tag}]({rel(fig)})", ""]
    lines += inference_section(task, results, benchmarks, references)
    lines += _confusions(task, results, plots_dir, figures_dir, tag, rel)
    return lines


def binary_section(tasks: list[tuple[str, list[dict[str, Any]]]], tag: str, plots_dir: Path, figures_dir: Path,
                   benchmarks_dir: Path, rel) -> list[str]:
    lines = [f"## Abnormal vs normal chromosome (binary tasks){tag}", "",
             "Each abnormal chromosome type against its normal counterpart (Pinnacle's binary tasks). Positive = the "
             "abnormal class: sensitivity = TP/(TP+FN), specificity = TN/(TN+FP), precision = TP/(TP+FP); AUC of the "
             "abnormal-class probability.", ""]
    rows, curves, bench_rows = [], {}, []
    for task, results in tasks:
        for r in results:
            classes = list(r["per_class_accuracy"])
            pos = positive_class(classes)
            neg = next(c for c in classes if c != pos)
            conf = pd.read_csv(plots_dir / "confusion" / f"{r['run']}.csv", dtype=str)
            k = binary_counts(conf["actual"], conf["predicted"], pos)
            ratio = lambda a, b: a / (a + b) if a + b else 0.0  # noqa: E731
            sens, spec, prec = ratio(k["tp"], k["fn"]), ratio(k["tn"], k["fp"]), ratio(k["tp"], k["fp"])
            f1 = 2 * prec * sens / (prec + sens) if prec + sens else 0.0
            auc = _auc(r)
            rows.append([f"{pos} vs {neg}", MODEL_NAMES.get(r["model"], r["model"]), f"{k['tp'] + k['fn']} / "
                         f"{k['tn'] + k['fp']}", with_ci(r, "accuracy"), with_ci(r, "recall"), spec,
                         with_ci(r, "precision"), f1, "—" if auc is None else with_ci(r, "auc"),
                         published(task, r["model"], "accuracy")])
            pts = _roc_points(plots_dir, r["run"])
            if pts is not None:
                curves[f"{pos} vs {neg}"] = (pts, auc)
            b = load_benchmarks(benchmarks_dir, task).get(r["model"])
            if b is not None:
                bench_rows.append([f"{pos} vs {neg}", _fmt(b.get("eager_seconds_per_1000_single")),
                                   f"{b['seconds_per_1000_single']:.2f}",
                                   f"{b['seconds_per_1000_batched']:.2f} (batch {b['batch_size']})", _load(b)])
    lines += [table(["Task", "Model", "Test items (abnormal / normal)", "Accuracy [95 % CI]", "Sensitivity [95 % CI]",
                     "Specificity", "Precision [95 % CI]", "F1", "AUC [95 % CI]", "Published accuracy"], rows), "",
              "Intervals: bootstrap over test patients; with a handful of abnormal test crops per task, sensitivity "
              "and precision are wide — read them before the point estimates.", ""]
    if curves:
        fig = roc_figure(curves, figures_dir / "roc_binary.png", f"ROC, abnormal vs normal{tag}")
        lines += [f"![ROC curves of the binary tasks{tag}]({rel(fig)})", ""]
    else:
        lines += ["No ROC data yet (`plots/chromosomes/roc/<run>.csv`).", ""]
    if bench_rows:
        lines += ["Inference time (s / 1000 samples):", "",
                  table(["Task", "Eager one at a time", "Deployed one at a time", "Deployed batched",
                         "Load 1 min (before → after)"], bench_rows), ""]
    else:
        lines += ["Inference time: not measured for the binary runs (list a run under `chromosomes.benchmark` in "
                  "params.yaml to time it).", ""]
    for task, results in tasks:
        lines += _confusions(task, results, plots_dir, figures_dir, tag, rel)
    return lines


def results_by_task(metrics_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Every run's metrics (``<metrics_dir>/<run>.json``, not the ``.seeds.json``) grouped by task, by model name."""
    out: dict[str, list[dict[str, Any]]] = {}
    for p in sorted(Path(metrics_dir).glob("*.json")):
        if p.name.endswith(".seeds.json"):
            continue
        r = json.loads(p.read_text())
        if "task" in r:
            out.setdefault(r["task"], []).append(r)
    return {t: sorted(rs, key=lambda r: r["model"]) for t, rs in out.items()}


def task_sections(tasks: Sequence[str], synthetic: bool, out_md: str | Path,
                  metrics_dir: str | Path = "metrics/chromosomes", plots_dir: str | Path = "plots/chromosomes",
                  figures_dir: str | Path = "reports/figures/chromosomes",
                  benchmarks_dir: str | Path = "benchmarks/inference",
                  evaluation_dir: str | Path = "evaluation/chromosomes") -> list[str]:
    """Markdown lines for every task: multi-class tasks in the given order, then the binary tasks together."""
    tag = " (synthetic cohort)" if synthetic else ""
    out_md, plots_dir, figures_dir = Path(out_md), Path(plots_dir), Path(figures_dir)
    rel = lambda p: os.path.relpath(p, out_md.parent)  # noqa: E731
    lines: list[str] = []
    binary: list[tuple[str, list[dict[str, Any]]]] = []
    by_task = results_by_task(metrics_dir)
    for task in tasks:
        results = by_task.get(task, [])
        if not results:
            lines += [f"## {task}", "", f"No metrics of task {task} yet in `{metrics_dir}/`; run `dvc repro`.", ""]
            continue
        if all(len(r["per_class_accuracy"]) == 2 for r in results):
            binary.append((task, results))
            continue
        lines += multiclass_section(task, results, tag, plots_dir, figures_dir,
                                    load_benchmarks(benchmarks_dir, task), rel, evaluation_dir,
                                    load_references(benchmarks_dir, task))
    if binary:
        lines += binary_section(binary, tag, plots_dir, figures_dir, Path(benchmarks_dir), rel)
    lines += ood_section([r for t in tasks for r in by_task.get(t, [])], tag)
    if lines:
        lines += [f"> {PUBLISHED_NOTE}", ""]
    return lines


def ood_section(results: list[dict[str, Any]], tag: str) -> list[str]:
    """Referral by the input checks and the out-of-distribution detector (``ood`` of each metrics file): the share
    of in-distribution test crops referred and of probes (noise, blank, natural-image patches) referred."""
    rows = []
    for r in results:
        o = r.get("ood") or {}
        if o.get("probes_referred_share") is None:
            continue
        rows.append([r["task"], display_name(r["model"]), f"{o.get('test_referred_share', 0):.4f}",
                     f"{o['probes_referred_share']:.3f} of {o.get('probes', '—')}"])
    if not rows:
        return []
    return [f"## Out-of-distribution referral{tag}", "",
            "Test crops and probe images (uniform and smooth noise, blank, natural-image patches) scored by the "
            "detector fitted on the training split (features and pixel thumbnails; threshold at the validation "
            "quantile `ood_quantile`); referred = over the threshold or failing an input check. Goals: probes "
            "≥ 0.95 referred, in-distribution test crops ≤ 0.05.", "",
            table(["Task", "Model", "Test crops referred", "Probes referred"], rows), ""]
