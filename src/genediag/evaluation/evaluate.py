"""Evaluate a trained run on its test split: metrics JSON (git-tracked, for `dvc metrics diff`), a per-item
actual/predicted table (for the `confusion` plot template), the ROC curve (``plots/roc/<task>/<model>.csv``,
x=fpr, y=tpr; binary tasks: class 1 positive, with ``auc``) and per-item class probabilities."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from genediag.evaluation.metrics import classification_metrics
from genediag.models.checkpoint import load_checkpoint
from genediag.training.run import load_split_data, make_datasets, resolve_run_config
from genediag.training.trainer import predict_proba

log = logging.getLogger(__name__)


def ranking_metrics(y: np.ndarray, probs: np.ndarray, names: list[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Threshold-free metrics and the ROC curve (columns fpr, tpr, threshold) for ``plots/roc/``.

    Two classes: class 1 is the positive class (e.g. ``abnormal`` with ``classes: [normal, abnormal]``) →
    ``positive_class``, its ``precision`` and ``recall``, and ``auc`` from p_<class 1>. More classes: the
    micro-averaged one-vs-rest ROC over all (item, class) pairs → ``auc_micro``. An AUC that is undefined (a
    single class in the split) is null."""
    from sklearn.metrics import roc_auc_score, roc_curve

    k = len(names)
    if k == 2:
        truth, score = (y == 1).astype(int), probs[:, 1]
        tp = int(((probs.argmax(1) == 1) & (y == 1)).sum())
        pp, p = int((probs.argmax(1) == 1).sum()), int((y == 1).sum())
        out: dict[str, Any] = {"positive_class": names[1], "precision": tp / pp if pp else 0.0,
                               "recall": tp / p if p else 0.0}
        key = "auc"
    else:
        truth = (y[:, None] == np.arange(k)[None, :]).astype(int).ravel()
        score = probs.ravel()
        out, key = {}, "auc_micro"
    if 0 < truth.sum() < len(truth):
        fpr, tpr, thr = roc_curve(truth, score)
        out[key] = float(roc_auc_score(truth, score))
    else:
        fpr, tpr, thr = np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([np.inf, -np.inf])
        out[key] = None
    roc = pd.DataFrame({"fpr": np.round(fpr, 6), "tpr": np.round(tpr, 6),
                        "threshold": np.round(np.clip(thr, 0.0, 1.0), 6)})
    return out, roc


def evaluate_run(run: str, cfg: dict[str, Any], data_dir: str | Path = "data", models_dir: str | Path = "models",
                 metrics_dir: str | Path = "metrics", plots_dir: str | Path = "plots",
                 eval_dir: str | Path = "evaluation", split: str = "test") -> dict[str, Any]:
    cfg = resolve_run_config(run, cfg)
    torch.manual_seed(cfg["fit"]["seed"])
    data_dir = Path(data_dir)
    model, meta = load_checkpoint(Path(models_dir) / run / "model.pt")
    images, table, names = load_split_data(data_dir / "ingested" / cfg["dataset"],
                                           data_dir / "splits" / f"{cfg['dataset']}.csv", cfg["classes"])
    if names != meta["class_names"]:
        raise ValueError(f"models/{run}/model.pt was trained on classes {meta['class_names']} but params give {names}; "
                         "re-run the train stage")
    ds = make_datasets(images, table, cfg)[split]
    rows = table[(table["split"] == split) & (table["target"] >= 0)].reset_index(drop=True)
    probs = predict_proba(model, ds, batch_size=cfg["fit"]["eval_batch_size"]).numpy()
    pred = probs.argmax(1)
    y = rows["target"].to_numpy()
    metrics = classification_metrics(y, pred, names)
    ranking, roc = ranking_metrics(y, probs, names)
    fit_info = json.loads((Path(models_dir) / run / "fit.json").read_text())
    per_class = pd.DataFrame.from_dict(metrics.pop("per_class"), orient="index").rename_axis("class").round(6)
    result = {"task": cfg["task"], "model": cfg["model"], "run": run, "split": split, "dataset": cfg["dataset"],
              "best_epoch": fit_info["best_epoch"], "epochs_run": fit_info["epochs_run"],
              **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in {**metrics, **ranking}.items()},
              "per_class_accuracy": per_class["accuracy"].to_dict()}

    metrics_path = Path(metrics_dir) / cfg["task"] / f"{cfg['model']}.json"
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(result, indent=2) + "\n")

    confusion = pd.DataFrame({"actual": [names[i] for i in y], "predicted": [names[i] for i in pred]})
    conf_path = Path(plots_dir) / "confusion" / cfg["task"] / f"{cfg['model']}.csv"
    conf_path.parent.mkdir(parents=True, exist_ok=True)
    confusion.to_csv(conf_path, index=False)

    roc_path = Path(plots_dir) / "roc" / cfg["task"] / f"{cfg['model']}.csv"
    roc_path.parent.mkdir(parents=True, exist_ok=True)
    roc.to_csv(roc_path, index=False)

    keep = [c for c in ("index", "path", "label", "group_id", "cell_id") if c in rows.columns]
    pred_table = rows[keep].assign(target=[names[i] for i in y], predicted=[names[i] for i in pred],
                                   confidence=probs.max(1).round(6))
    prob_cols = pd.DataFrame(np.round(probs, 6), columns=[f"p_{n}" for n in names])
    out = Path(eval_dir) / run
    out.mkdir(parents=True, exist_ok=True)
    pd.concat([pred_table, prob_cols], axis=1).to_csv(out / "predictions.csv", index=False)
    per_class.to_csv(out / "per_class.csv")
    from genediag.reports.model_card import write_model_card

    write_model_card(run, cfg, result, out / "MODEL_CARD.md", data_dir=data_dir, models_dir=models_dir,
                     n_parameters=sum(p.numel() for p in model.parameters()), kind=meta["input"].get("kind"))
    log.info("%s on %s (%d items, synthetic if the cohort is): accuracy %.4f, macro F1 %.4f", run, split,
             metrics["n"], metrics["accuracy"], metrics["macro_f1"])
    return result
