"""Evaluation of the face runs.

Stage-1 (identity) models — face verification with the LFW protocol on the held-out people (split ``test`` of
the identity dataset, never seen in training): every same-person pair of their photos and an equal number of
seeded different-person pairs; a pair's score is the cosine similarity of the penultimate-layer features of the
aligned face concatenated with those of its mirror image (SphereFace's protocol); 10 folds, the threshold
chosen on 9 folds to maximise accuracy and applied to the 10th; mean ± s.d. over the folds.

Stage-2 (syndrome) models — on the test split: top-1 accuracy over all classes (patterns + healthy) and over the
10 patterns (photos of the patterns only, arg max over the pattern classes only); per-class precision and
recall (Table 5 layout); the confusion matrix (Table 3 layout) as ``actual,predicted`` rows for ``dvc plots``;
and the penultimate-layer features of every photo for the 2-D embedding figure (Fig. 5).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from genediag.config import ConfigError
from genediag.evaluation.metrics import classification_metrics
from genediag.faces.train import (class_targets, face_datasets, load_face_split, register_face_components,
                                  resolve_face_run)
from genediag.models.checkpoint import load_checkpoint
from genediag.training.trainer import class_scores, create_loss

log = logging.getLogger(__name__)
HEALTHY = "healthy"


@torch.no_grad()
def features_and_scores(model: torch.nn.Module, dataset, criterion=None, flip: bool = False,
                        batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features N×D, class scores N×C) in dataset order; with `flip`, features of the mirrored
    image are concatenated (N×2D)."""
    model.eval()
    feats, scores = [], []
    for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        f = model.embed(x)
        scores.append(class_scores(model.head(f), criterion).float())
        if flip:
            f = torch.cat([f, model.embed(torch.flip(x, dims=[3]))], 1)
        feats.append(f.float())
    return torch.cat(feats).numpy(), torch.cat(scores).numpy()


def verification_pairs(people: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All same-person pairs and as many seeded different-person pairs: (i, j, same)."""
    people = np.asarray(people)
    pos = [(i, j) for i in range(len(people)) for j in range(i + 1, len(people)) if people[i] == people[j]]
    rng = np.random.default_rng(seed)
    neg: set[tuple[int, int]] = set()
    n_diff = sum(1 for i in range(len(people)) for j in range(i + 1, len(people)) if people[i] != people[j])
    want = min(len(pos), n_diff)
    while len(neg) < want:
        i, j = sorted(rng.choice(len(people), 2, replace=False))
        if people[i] != people[j]:
            neg.add((int(i), int(j)))
    pairs = np.array(pos + sorted(neg), dtype=np.int64).reshape(-1, 2)
    same = np.array([1] * len(pos) + [0] * len(neg), dtype=np.int64)
    return pairs[:, 0], pairs[:, 1], same


def best_threshold(sim: np.ndarray, same: np.ndarray) -> float:
    """The threshold (midpoint between sorted scores) with the highest accuracy of `sim >= t` ⇔ same."""
    s = np.unique(sim)
    cands = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    acc = [((sim >= t) == same.astype(bool)).mean() for t in cands]
    return float(cands[int(np.argmax(acc))])


def ten_fold_verification(sim: np.ndarray, same: np.ndarray, seed: int, folds: int = 10) -> dict[str, Any]:
    """LFW protocol: stratified folds of the pairs; threshold from the other folds; accuracy per fold."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(same), dtype=np.int64)
    for cls in (0, 1):
        idx = np.flatnonzero(same == cls)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % folds
    accs, thrs = [], []
    for k in range(folds):
        test, train = fold == k, fold != k
        if not test.any():
            continue
        t = best_threshold(sim[train], same[train])
        accs.append(float(((sim[test] >= t) == same[test].astype(bool)).mean()))
        thrs.append(t)
    return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "fold_accuracy": [round(a, 6) for a in accs],
            "thresholds": [round(t, 6) for t in thrs]}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(1)


def _load_run(run: str, cfg: dict[str, Any], kind: str, where: str | None, data_root: str | Path,
              models_dir: str | Path):
    """(resolved config, trained model, checkpoint meta, image cache, split table) of a faces_<kind> run."""
    register_face_components()
    cfg = resolve_face_run(run, cfg, kind, where or f"faces_{kind}.{run}")
    if int(cfg["threads"]) > 0:
        torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(cfg["fit"]["seed"])
    model, meta = load_checkpoint(Path(models_dir) / run / "model.pt")
    images, table = load_face_split(data_root, cfg["dataset"])
    return cfg, model, meta, images, table


def verify_run(run: str, cfg: dict[str, Any], data_root: str | Path = "data/faces", models_dir: str | Path = "models",
               metrics_dir: str | Path = "metrics", where: str | None = None) -> dict[str, Any]:
    """LFW-style 10-fold verification accuracy of a stage-1 model on its held-out people."""
    cfg, model, meta, images, table = _load_run(run, cfg, "pretrain", where, data_root, models_dir)
    held = table[table["split"] == "test"].reset_index(drop=True)
    if held["group_id"].nunique() < 2:
        raise ConfigError(f"faces_split.{cfg['dataset']}: verification needs at least 2 held-out people")
    from genediag.data.datasets import CachedImageDataset

    ds = CachedImageDataset(images, held["index"].to_numpy(), np.zeros(len(held), dtype=np.int64), images.shape[1])
    feats, _ = features_and_scores(model, ds, flip=True)
    i, j, same = verification_pairs(held["group_id"].to_numpy(), cfg["fit"]["seed"])
    sim = _cosine(feats[i], feats[j])
    ver = ten_fold_verification(sim, same, cfg["fit"]["seed"])
    fit_info = json.loads((Path(models_dir) / run / "fit.json").read_text())
    result = {"task": "faces", "stage": "pretrain", "model": cfg["model"], "run": run, "dataset": cfg["dataset"],
              "verification_accuracy": round(ver["accuracy"], 6), "verification_std": round(ver["std"], 6),
              "pairs": int(len(same)), "positive_pairs": int(same.sum()), "held_out_people": int(held["group_id"].nunique()),
              "held_out_photos": int(len(held)), "identities_trained": len(meta["class_names"]),
              "identity_val_accuracy": round(float(fit_info.get("best_val_accuracy") or 0.0), 6),
              "best_epoch": fit_info["best_epoch"], "epochs_run": fit_info["epochs_run"]}
    path = Path(metrics_dir) / "faces" / f"{cfg['model']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    log.info("%s: verification accuracy %.4f ± %.4f on %d pairs of %d held-out people (synthetic if the cohort is); "
             "per fold %s", run, ver["accuracy"], ver["std"], len(same), result["held_out_people"], ver["fold_accuracy"])
    return result


def evaluate_face_run(run: str, cfg: dict[str, Any], data_root: str | Path = "data/faces",
                      models_dir: str | Path = "models", metrics_dir: str | Path = "metrics",
                      plots_dir: str | Path = "plots", eval_dir: str | Path = "evaluation",
                      where: str | None = None) -> dict[str, Any]:
    """Test-set metrics of a fine-tuned syndrome model, its confusion table and the features for Fig. 5."""
    cfg, model, meta, images, table = _load_run(run, cfg, "finetune", where, data_root, models_dir)
    names, targets = class_targets(table, "finetune", cfg["classes"])
    if names != meta["class_names"]:
        raise ConfigError(f"models/{run}/model.pt was trained on classes {meta['class_names']} but params give "
                          f"{names}; re-run faces_finetune@{run}")
    criterion = create_loss(cfg["fit"]["loss"])
    keep = targets >= 0
    rows = table[keep].reset_index(drop=True)
    from genediag.data.datasets import CachedImageDataset

    ds_all = CachedImageDataset(images, rows["index"].to_numpy(), targets[keep], images.shape[1])
    feats, scores = features_and_scores(model, ds_all, criterion)
    probs = torch.softmax(torch.from_numpy(scores), 1).numpy()
    test = (rows["split"] == "test").to_numpy()
    y, pred = targets[keep][test], probs[test].argmax(1)
    metrics = classification_metrics(y, pred, names)
    per_class = metrics.pop("per_class")
    patterns = [i for i, n in enumerate(names) if n != HEALTHY]
    pat_rows = np.isin(y, patterns)
    pat_pred = np.asarray(patterns)[scores[test][:, patterns].argmax(1)]
    top1_patterns = float((pat_pred[pat_rows] == y[pat_rows]).mean()) if pat_rows.any() else float("nan")
    fit_info = json.loads((Path(models_dir) / run / "fit.json").read_text())
    r6 = lambda v: round(float(v), 6)  # noqa: E731
    result = {"task": "faces", "stage": "finetune", "model": cfg["model"], "run": run, "dataset": cfg["dataset"],
              "init": cfg["init"], "loss": cfg["fit"]["loss"]["name"], "n": metrics["n"],
              "top1": r6(metrics["accuracy"]), "top1_patterns": r6(top1_patterns), "n_patterns": int(pat_rows.sum()),
              "macro_precision": r6(metrics["macro_precision"]), "macro_recall": r6(metrics["macro_sensitivity"]),
              "macro_f1": r6(metrics["macro_f1"]), "best_epoch": fit_info["best_epoch"],
              "epochs_run": fit_info["epochs_run"],
              "per_class": {n: {"precision": r6(v["precision"]), "recall": r6(v["sensitivity"]),
                                "support": v["support"]} for n, v in per_class.items()}}
    mpath = Path(metrics_dir) / "faces" / f"{cfg['model']}.json"
    mpath.parent.mkdir(parents=True, exist_ok=True)
    mpath.write_text(json.dumps(result, indent=2) + "\n")
    conf = pd.DataFrame({"actual": [names[i] for i in y], "predicted": [names[i] for i in pred]})
    cpath = Path(plots_dir) / "confusion" / "faces" / f"{cfg['model']}.csv"
    cpath.parent.mkdir(parents=True, exist_ok=True)
    conf.to_csv(cpath, index=False)
    out = Path(eval_dir) / run
    out.mkdir(parents=True, exist_ok=True)
    pt = rows[test][["index", "path", "label", "group_id"]].reset_index(drop=True)
    pt = pt.assign(target=[names[i] for i in y], predicted=[names[i] for i in pred], confidence=probs[test].max(1).round(6))
    pd.concat([pt, pd.DataFrame(np.round(probs[test], 6), columns=[f"p_{n}" for n in names])], axis=1).to_csv(
        out / "predictions.csv", index=False)
    pd.DataFrame.from_dict(result["per_class"], orient="index").rename_axis("class").to_csv(out / "per_class.csv")
    np.savez_compressed(out / "embeddings.npz", features=feats.astype(np.float32), target=targets[keep],
                        split=rows["split"].to_numpy().astype(str), classes=np.array(names))
    log.info("%s on test (%d photos, synthetic if the cohort is): top-1 %.4f (all classes), %.4f (patterns only)",
             run, metrics["n"], metrics["accuracy"], top1_patterns)
    return result

