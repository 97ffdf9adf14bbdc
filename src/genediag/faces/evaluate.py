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

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from genediag import io as gio
from genediag.config import ConfigError
from genediag.evaluation.metrics import classification_metrics
from genediag.faces.train import class_targets
from genediag.models.checkpoint import load_checkpoint
from genediag.models.inference import class_scores

log = logging.getLogger(__name__)
HEALTHY = "healthy"


@torch.no_grad()
def features_and_scores(model: torch.nn.Module, dataset, flip: bool = False,
                        batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features N×D, class scores N×C) in dataset order; with `flip`, features of the mirrored
    image are concatenated (N×2D)."""
    model.eval()
    feats, scores = [], []
    for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        f = model.embed(x)
        scores.append(class_scores(model.head(f)).float())
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


def verify_run(run_dir: str | Path, dataset_dir: str | Path, split_csv: str | Path, metrics_path: str | Path,
               evidence: dict[str, Any]) -> dict[str, Any]:
    """LFW-style 10-fold verification accuracy of a stage-1 model on its held-out people, with a 95 % interval
    from a bootstrap over the pairs grouped by the first photo's person."""
    from genediag.data.datasets import CachedImageDataset, load_split_table
    from genediag.evaluation.uncertainty import bootstrap_ci

    run_dir = Path(run_dir)
    model, meta = load_checkpoint(run_dir / "model.pt")
    images, table = load_split_table(dataset_dir, split_csv)
    held = table[table["split"] == "test"].reset_index(drop=True)
    people = held["group_id"].to_numpy()
    if held["group_id"].nunique() < 2:
        raise ConfigError(f"{split_csv}: verification needs at least 2 held-out people (split test)")
    if not (held["group_id"].value_counts() > 1).any():
        raise ConfigError(f"{split_csv}: no held-out person has two photos, so there is no same-person pair to "
                          "verify; identity sets need several photos per person (group_by: label)")
    seed = int(meta["config"]["fit"]["seed"])
    ds = CachedImageDataset(images, held["index"].to_numpy(), np.zeros(len(held), dtype=np.int64), images.shape[1])
    feats, _ = features_and_scores(model, ds, flip=True)
    i, j, same = verification_pairs(people, seed)
    sim = _cosine(feats[i], feats[j])
    ver = ten_fold_verification(sim, same, seed)
    threshold = best_threshold(sim, same)
    ci = bootstrap_ci(lambda s, y: {"accuracy": float(((s >= threshold) == y.astype(bool)).mean())},
                      people[i], {"s": sim, "y": same}, int(evidence["bootstrap"]), int(evidence["seed"]))
    fit = meta["fit"]
    result = {"task": "faces", "stage": "pretrain", "model": meta["model"], "run": meta["run"],
              "dataset": meta.get("dataset"), "synthetic": bool(meta.get("synthetic")),
              "verification_accuracy": round(ver["accuracy"], 6), "verification_std": round(ver["std"], 6),
              "ci95": {"verification_accuracy": ci["accuracy"]},
              "pairs": int(len(same)), "positive_pairs": int(same.sum()), "held_out_people": int(held["group_id"].nunique()),
              "held_out_photos": int(len(held)), "identities_trained": len(meta["class_names"]),
              "identity_val_accuracy": round(float(fit.get("best_val_accuracy") or 0.0), 6),
              "best_epoch": fit["best_epoch"], "epochs_run": fit["epochs_run"]}
    gio.write_json(metrics_path, result)
    lo, hi = ci["accuracy"]
    log.info("%s: verification accuracy %.3f (95 %% CI %.3f-%.3f; 10-fold std %.3f) on %d pairs of %d held-out "
             "people%s", meta["run"], ver["accuracy"], lo, hi, ver["std"], len(same), result["held_out_people"],
             " (synthetic)" if result["synthetic"] else "")
    return result


def evaluate_face_run(run_dir: str | Path, dataset_dir: str | Path, split_csv: str | Path, metrics_path: str | Path,
                      plots_dir: str | Path, eval_dir: str | Path, evidence: dict[str, Any]) -> dict[str, Any]:
    """The classifier evaluation every run gets (:func:`genediag.evaluation.evaluate.evaluate_run`), plus the
    paper's figures: top-1 over the patterns only, per-class precision and recall, and the penultimate features of
    every photo for the 2-D embedding figure (Fig. 5)."""
    from genediag.data.datasets import CachedImageDataset, load_split_table
    from genediag.evaluation.evaluate import evaluate_run

    result = evaluate_run(run_dir, dataset_dir, split_csv, metrics_path, plots_dir, eval_dir, evidence)
    model, meta = load_checkpoint(Path(run_dir) / "model.pt")
    names = list(meta["class_names"])
    images, table = load_split_table(dataset_dir, split_csv)
    _, targets = class_targets(table, "finetune", meta["config"]["classes"])
    keep = targets >= 0
    rows = table[keep].reset_index(drop=True)
    ds = CachedImageDataset(images, rows["index"].to_numpy(), targets[keep], images.shape[1])
    feats, scores = features_and_scores(model, ds)
    test = (rows["split"] == "test").to_numpy()
    y = targets[keep][test]
    patterns = [i for i, n in enumerate(names) if n != HEALTHY]
    pat_rows = np.isin(y, patterns)
    pat_pred = np.asarray(patterns)[scores[test][:, patterns].argmax(1)]
    per_class = classification_metrics(y, scores[test].argmax(1), names)["per_class"]
    r6 = lambda v: round(float(v), 6)  # noqa: E731
    result.update({
        "stage": "finetune", "init": meta.get("init"), "loss": meta["config"]["fit"]["loss"]["name"],
        "top1": result["accuracy"], "macro_recall": result["macro_sensitivity"],
        "top1_patterns": r6((pat_pred[pat_rows] == y[pat_rows]).mean()) if pat_rows.any() else None,
        "n_patterns": int(pat_rows.sum()),
        "per_class": {n: {"precision": r6(v["precision"]), "recall": r6(v["sensitivity"]), "support": v["support"]}
                      for n, v in per_class.items()}})
    gio.write_json(metrics_path, result)
    gio.write_with(Path(eval_dir) / "embeddings.npz",
                   lambda p: np.savez_compressed(p, features=feats.astype(np.float32), target=targets[keep],
                                                 split=rows["split"].to_numpy().astype(str), classes=np.array(names)),
                   suffix=".npz")
    log.info("%s on test (%d photos%s): top-1 %.4f (all classes), %s (patterns only)", meta["run"], result["n"],
             ", synthetic" if result["synthetic"] else "", result["top1"], result["top1_patterns"])
    return result
