"""Evaluate a trained run on its test split, with the evidence a reviewer needs to trust (or distrust) a number.

Reads the run folder (``model.pt``, ``args.yaml``: the resolved run entry; the other seeds' models in ``seeds.pt``) and the
dataset; writes

- ``metrics/<branch>/<run>.json``: accuracy and the macro averages (binary tasks: precision, recall and AUC of
  class 1), each with ``ci95`` from a bootstrap over **patients** (``evidence.bootstrap`` resamples, seeded);
  ``ece`` after and ``ece_uncalibrated`` before the validation-fitted temperature; the referral at
  ``evidence.refer_below``; the out-of-distribution check (the share of in-distribution test images and of
  probes — noise, blank, other pictures — that are referred); per-class accuracy;
- ``metrics/<branch>/<run>.seeds.json``: every seed's headline figures and their mean, sd, min and max;
- ``plots/<branch>/``: ``confusion/<run>.csv`` (actual, predicted), ``roc/<run>.csv`` (fpr, tpr), ``reliability/
  <run>.csv`` (confidence vs accuracy per bin, before and after the temperature), ``referral/<run>/`` (accuracy of
  the retained cases vs the referred fraction, by the calibrated top probability and by MC-dropout agreement);
- ``evaluation/<run>/``: ``predictions.csv`` (per item: probabilities, confidence, OOD score, referral),
  ``per_class.csv``, ``probes.csv`` and the model card.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from genediag import io as gio
from genediag.data.datasets import CachedImageDataset, load_split_data
from genediag.evaluation.metrics import classification_metrics, headline_metrics
from genediag.evaluation.probes import prepare_probe, probe_images
from genediag.evaluation.uncertainty import (bootstrap_ci, expected_calibration_error, referral_curve,
                                             reliability_table, seed_summary)
from genediag.models.checkpoint import load_checkpoint
from genediag.models.inference import (PrefixCache, input_problem, input_thumbnails, mc_dropout_votes, ood_score,
                                      runner_for,
                                       scores_and_features, softmax)

log = logging.getLogger(__name__)
HEADLINE_KEYS = ("accuracy", "macro_precision", "macro_sensitivity", "macro_specificity", "macro_f1", "precision",
                 "recall", "auc")


def roc_table(y: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """ROC points for ``plots/roc``: class 1 vs the rest (binary) or micro-averaged one-vs-rest (more classes)."""
    from sklearn.metrics import roc_curve

    k = probs.shape[1]
    truth = (y == 1).astype(int) if k == 2 else (y[:, None] == np.arange(k)[None, :]).astype(int).ravel()
    score = probs[:, 1] if k == 2 else probs.ravel()
    if 0 < truth.sum() < len(truth):
        fpr, tpr, thr = roc_curve(truth, score)
    else:
        fpr, tpr, thr = np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([np.inf, -np.inf])
    return pd.DataFrame({"fpr": np.round(fpr, 6), "tpr": np.round(tpr, 6),
                         "threshold": np.round(np.clip(thr, 0.0, 1.0), 6)})


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}


def ood_check(model: torch.nn.Module, meta: dict[str, Any], test_scores: np.ndarray, n: int, seed: int,
              batch_size: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """Referral of in-distribution test images and of OOD probes by the input checks and the OOD threshold."""
    spec, ood = meta["input"], meta.get("ood")
    if not ood:
        return {"available": False}, pd.DataFrame()
    mode = (spec.get("cache") or {}).get("mode", "L" if int(spec["in_chans"]) == 1 else "RGB")
    rows = []
    for kind, images in probe_images(mode, n, seed).items():
        cache = np.stack([prepare_probe(img, spec) for img in images])
        ds = CachedImageDataset(cache, np.arange(len(cache)), np.zeros(len(cache), np.int64), spec["size"],
                                invert=bool(spec["invert"]))
        _, feats = scores_and_features(model, ds, batch_size, features=True)
        score = ood_score(feats, input_thumbnails(ds, batch_size), ood)
        for i in range(len(ds)):
            problem = input_problem(ds[i][0])
            rows.append({"probe": kind, "ood_score": round(float(score[i]), 4), "input_problem": problem or "",
                         "referred": bool(problem) or bool(score[i] > 1.0)})
    probes = pd.DataFrame(rows)
    in_dist = float((test_scores > 1.0).mean()) if len(test_scores) else None
    return {"available": True, "method": "max of the Mahalanobis distance of the penultimate features to the nearest "
                                         "class mean and of the input thumbnail to the training images, each over "
                                         "its validation threshold",
            "threshold_quantile": ood.get("quantile"),
            "test_referred_share": None if in_dist is None else round(in_dist, 6),
            "probes": int(len(probes)), "probes_referred_share": round(float(probes["referred"].mean()), 6),
            "probes_referred_by_kind": {k: round(float(g["referred"].mean()), 6) for k, g in probes.groupby("probe")}
            }, probes


def evaluate_run(run_dir: str | Path, dataset_dir: str | Path, split_csv: str | Path, metrics_path: str | Path,
                 plots_dir: str | Path, eval_dir: str | Path, evidence: dict[str, Any],
                 split: str = "test") -> dict[str, Any]:
    run_dir, plots_dir, eval_dir = Path(run_dir), Path(plots_dir), Path(eval_dir)
    cfg = yaml.safe_load((run_dir / "args.yaml").read_text())
    run = cfg["run"]
    model, meta = load_checkpoint(run_dir / "model.pt")
    images, table, names = load_split_data(dataset_dir, split_csv, cfg["classes"], need=(split,))
    if names != meta["class_names"]:
        raise ValueError(f"{run_dir}/model.pt was trained on classes {meta['class_names']} but the data gives {names}; "
                         "re-run the train stage")
    rows = table[(table["split"] == split) & (table["target"] >= 0)].reset_index(drop=True)
    ds = CachedImageDataset(images, rows["index"].to_numpy(), rows["target"].to_numpy(), meta["input"]["size"],
                            invert=bool(meta["input"]["invert"]))
    bs = int(cfg["fit"]["eval_batch_size"])
    torch.manual_seed(int(evidence["seed"]))
    runner = runner_for(model, run_dir, evidence.get("runtime", "onnx"), int(evidence.get("threads") or 0))
    # a model with a frozen prefix (karyogram and face transfer runs): the prefix runs once on the test items, in
    # torch, for this model, its other seeds and MC dropout, instead of once per model in ONNX Runtime
    prefixes = PrefixCache(ds, bs)
    if prefixes.split(model) is not None:
        scores, feats = prefixes.scores_and_features(model, features=bool(meta.get("ood")))
        runtime = "torch, frozen prefix run once"
    else:
        scores, feats = scores_and_features(runner, ds, bs, features=bool(meta.get("ood")))
        runtime = "torch" if runner is model else "onnx"
    temperature = float(meta.get("temperature", 1.0))
    probs, raw_probs = softmax(scores, temperature), softmax(scores)
    y, pred = rows["target"].to_numpy(), probs.argmax(1)
    groups = rows["group_id"].to_numpy()
    headline = headline_metrics(y, pred, probs, names)
    ci = bootstrap_ci(lambda y, pred, probs: headline_metrics(y, pred, probs, names), groups,
                      {"y": y, "pred": pred, "probs": probs}, int(evidence["bootstrap"]), int(evidence["seed"]))
    full = classification_metrics(y, pred, names)
    confidence = probs.max(1)
    correct = pred == y
    refer = confidence < float(evidence["refer_below"])
    ece_bins = int(evidence["ece_bins"])
    test_ood = ood_score(feats, input_thumbnails(ds, bs), meta["ood"]) if meta.get("ood") else np.zeros(len(y))
    ood, probes = ood_check(runner, meta, test_ood, 50, int(evidence["seed"]), bs)
    result = {
        "task": cfg["task"], "model": cfg["model"], "run": run, "branch": cfg.get("branch"), "split": split,
        "dataset": meta.get("dataset"), "synthetic": bool(meta.get("synthetic")), "n": int(len(y)),
        "patients": int(len(set(groups))), "runtime": runtime, **_rounded(headline),
        "ci95": {k: v for k, v in ci.items() if k in headline},
        "ece": round(expected_calibration_error(probs, y, ece_bins), 6),
        "ece_uncalibrated": round(expected_calibration_error(raw_probs, y, ece_bins), 6),
        "temperature": round(temperature, 6),
        "referral": {"refer_below": float(evidence["refer_below"]), "referred": int(refer.sum()),
                     "referred_share": round(float(refer.mean()), 6) if len(y) else None,
                     "accuracy_retained": round(float(correct[~refer].mean()), 6) if (~refer).any() else None},
        "ood": ood, "best_epoch": meta["fit"]["best_epoch"], "epochs_run": meta["fit"]["epochs_run"],
        "seeds": int(cfg.get("seeds", 1)), "warnings": meta.get("warnings", []),
        "per_class_accuracy": {c: round(v["accuracy"], 6) for c, v in full["per_class"].items()},
    }
    if len(names) == 2:
        result["positive_class"] = names[1]
    metrics_path = Path(metrics_path)
    gio.write_json(metrics_path, result)
    _write_seeds(run_dir, cfg, prefixes, y, names, metrics_path, first=(meta, probs))

    csv = write_csv
    write_classifier_plots(plots_dir, run, names, y, probs, raw_probs, ece_bins)
    mc = _mc_dropout_confidence(model, prefixes, pred, evidence, temperature)
    if mc is not None:
        idx, agreement = mc
        csv(plots_dir / "referral" / run / "mc_dropout.csv", referral_curve(agreement, correct[idx], steps=21).round(6))

    keep = [c for c in ("index", "path", "label", "group_id", "cell_id") if c in rows.columns]
    pred_table = rows[keep].assign(target=[names[i] for i in y], predicted=[names[i] for i in pred],
                                   confidence=confidence.round(6), ood_score=np.round(test_ood, 4),
                                   referred=refer | (test_ood > 1.0))
    prob_cols = pd.DataFrame(np.round(probs, 6), columns=[f"p_{n}" for n in names])
    out = eval_dir
    csv(out / "predictions.csv", pd.concat([pred_table, prob_cols], axis=1))
    per_class = pd.DataFrame.from_dict(full["per_class"], orient="index").rename_axis("class").round(6)
    gio.write_with(out / "per_class.csv", lambda p: per_class.to_csv(p))
    csv(out / "probes.csv", probes)
    gio.write_text(out / "args.yaml", (run_dir / "args.yaml").read_text())   # the resolved run, for the reports
    from genediag.reports.model_card import write_model_card

    write_model_card(run, cfg, result, meta, out / "MODEL_CARD.md", data_dir=Path(dataset_dir).parent.parent,
                     n_parameters=sum(p.numel() for p in model.parameters()))
    lo, hi = ci.get("accuracy") or (float("nan"), float("nan"))
    log.info("%s on %s (%d items%s): accuracy %.4f (95 %% CI %.4f-%.4f), macro F1 %.4f; ECE %.3f → %.3f; OOD: "
             "%s of test, %s of probes referred", run, split, len(y), ", synthetic" if result["synthetic"] else "",
             headline["accuracy"], lo, hi, headline["macro_f1"], result["ece_uncalibrated"], result["ece"],
             ood.get("test_referred_share"), ood.get("probes_referred_share"))
    return result


def _mc_dropout_confidence(model, prefixes: PrefixCache, pred, evidence, temperature):
    """(test rows used, MC-dropout agreement with the prediction) on a seeded subsample of at most
    ``evidence.mc_items`` test items; None for a model without dropout or with ``mc_passes: 0``. A model with a
    frozen prefix and ``mc_split(split)`` continues from the prefix outputs `prefixes` already holds."""
    ds = prefixes.dataset
    passes = int(evidence.get("mc_passes", 0))
    if passes <= 0 or len(ds) == 0:
        return None
    rng = np.random.default_rng(int(evidence["seed"]))
    idx = np.sort(rng.choice(len(ds), size=min(len(ds), int(evidence.get("mc_items", 500))), replace=False))
    parts = prefixes.split(model) if hasattr(model, "mc_split") else None
    if parts is not None:
        x, split = parts[2][torch.as_tensor(idx)], parts[:2]
    else:
        x, split = torch.stack([ds[int(i)][0] for i in idx]), None
    votes = mc_dropout_votes(model, x, passes, int(evidence["seed"]), temperature, split=split)
    if votes is None:
        return None
    agreement = (votes.argmax(2) == pred[idx][None, :]).mean(0)
    return idx, agreement


def _write_seeds(run_dir: Path, cfg, prefixes: PrefixCache, y, names, metrics_path: Path, first) -> None:
    """``<run>.seeds.json``: the headline figures of every seed's model (``model.pt``, already scored: `first`, and
    ``seeds.pt``) on the same test items, and their mean, sd, min and max (sd is null with one seed)."""
    from genediag.models.checkpoint import load_seed_checkpoints

    def row(mm, probs):
        return {"seed": mm.get("seed"), **_rounded(headline_metrics(y, probs.argmax(1), probs, names)),
                "ece": round(expected_calibration_error(probs, y), 6)}

    per_seed = [row(*first)]
    for m, mm in load_seed_checkpoints(run_dir / "seeds.pt"):
        scores, _ = prefixes.scores_and_features(m)
        per_seed.append(row(mm, softmax(scores, float(mm.get("temperature", 1.0)))))
    write_seeds_json(metrics_path, cfg["run"], per_seed)


def write_seeds_json(metrics_path: Path, run: str, per_seed: list[dict[str, Any]]) -> None:
    """``<metrics>.seeds.json`` beside `metrics_path`: each seed's headline figures (`per_seed`, with ``seed``) and
    their mean, sd, min and max."""
    keys = [k for k in (*HEADLINE_KEYS, "ece") if k in per_seed[0]]
    gio.write_json(Path(metrics_path).with_name(Path(metrics_path).stem + ".seeds.json"),
                   {"run": run, "seeds": [p["seed"] for p in per_seed], "summary": seed_summary(per_seed, keys),
                    "per_seed": per_seed})


def write_csv(path: Path, df: pd.DataFrame) -> None:
    gio.write_with(path, lambda p: df.to_csv(p, index=False))


def write_classifier_plots(plots_dir: Path, run: str, names: list[str], y: np.ndarray, probs: np.ndarray,
                           raw_probs: np.ndarray, ece_bins: int) -> None:
    """The `dvc plots` tables of a classifier on its test items (true classes `y`, calibrated `probs`, uncalibrated
    `raw_probs`): ``confusion/<run>.csv``, ``roc/<run>.csv``, ``reliability/<run>.csv`` (both calibrations) and
    ``referral/<run>/max_probability.csv`` under `plots_dir`."""
    plots_dir = Path(plots_dir)
    pred, confidence = probs.argmax(1), probs.max(1)
    write_csv(plots_dir / "confusion" / f"{run}.csv",
              pd.DataFrame({"actual": [names[i] for i in y], "predicted": [names[i] for i in pred]}))
    write_csv(plots_dir / "roc" / f"{run}.csv", roc_table(y, probs))
    rel = pd.concat([reliability_table(probs, y, ece_bins).assign(calibration="temperature"),
                     reliability_table(raw_probs, y, ece_bins).assign(calibration="none")])
    write_csv(plots_dir / "reliability" / f"{run}.csv", rel.round(6))
    write_csv(plots_dir / "referral" / run / "max_probability.csv",
              referral_curve(confidence, pred == y, steps=21).round(6))
