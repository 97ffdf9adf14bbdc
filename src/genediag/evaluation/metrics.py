"""Classification metrics from a confusion matrix (one metrics module for every branch).

Per class c, one-vs-rest: TP, FP, FN, TN from the confusion matrix C (rows = truth, columns = prediction).
- accuracy = trace(C) / sum(C)
- precision_c = TP / (TP + FP); sensitivity_c (recall) = TP / (TP + FN)
- specificity_c = TN / (TN + FP)   (ChromosomeNet prints TN/(TP+TN); that is not specificity, we use the
  standard definition)
- F1_c = 2·precision_c·sensitivity_c / (precision_c + sensitivity_c)
- macro_* = unweighted mean over the classes present in the truth (support > 0); a 0/0 ratio counts as 0
  (scikit-learn's zero_division=0). A class absent from the evaluated items (a bootstrap resample drew none of its
  patients) is left out rather than counted as 0, which would drag the interval down.
- per_class_accuracy_c = TP / (TP + FN): the share of class-c items classified correctly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> dict:
    """Accuracy, macro precision/sensitivity/specificity/F1 and their per-class values (JSON-ready)."""
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k).astype(np.float64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    precision = _ratio(tp, tp + fp)
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    f1 = _ratio(2 * precision * sensitivity, precision + sensitivity)
    support = cm.sum(1)
    names = [str(c) for c in class_names]
    present = support > 0
    macro = (lambda v: float(v[present].mean())) if present.any() else (lambda v: 0.0)  # noqa: E731
    return {
        "n": int(cm.sum()),
        "accuracy": float(tp.sum() / cm.sum()) if cm.sum() else 0.0,
        "macro_precision": macro(precision),
        "macro_sensitivity": macro(sensitivity),
        "macro_specificity": macro(specificity),
        "macro_f1": macro(f1),
        "per_class": {
            n: {"accuracy": float(sensitivity[i]), "precision": float(precision[i]),
                "sensitivity": float(sensitivity[i]), "specificity": float(specificity[i]),
                "f1": float(f1[i]), "support": int(support[i])}
            for i, n in enumerate(names)
        },
    }


def rank_auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC from ranks (ties share their mean rank; the Mann-Whitney U statistic); None with one class."""
    from scipy.stats import rankdata

    truth = np.asarray(truth).astype(bool)
    npos, nneg = int(truth.sum()), int((~truth).sum())
    if npos == 0 or nneg == 0:
        return None
    r = rankdata(score)
    return float((r[truth].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def headline_metrics(y: np.ndarray, pred: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict:
    """The scalars every classifier reports (and gets a confidence interval for): accuracy and the macro
    averages; with two classes also the positive class's (class 1's) precision, recall and the ROC AUC (None when
    undefined: no predicted positive, no positive, or one class only — a bootstrap interval then uses the resamples
    where it is defined)."""
    m = classification_metrics(y, pred, class_names)
    out = {k: m[k] for k in ("accuracy", "macro_precision", "macro_sensitivity", "macro_specificity", "macro_f1")}
    if len(class_names) == 2:
        tp = int(((pred == 1) & (y == 1)).sum())
        pp, p = int((pred == 1).sum()), int((y == 1).sum())
        out.update(precision=tp / pp if pp else None, recall=tp / p if p else None,
                   auc=rank_auc(y == 1, probs[:, 1]))
    return out
