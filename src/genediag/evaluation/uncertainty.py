"""How sure are the evaluation numbers? Patient-level bootstrap, paired model comparison, calibration, referral.

- Crops, cells and photos of one patient are correlated, so every bootstrap here resamples *patients* (groups)
  with replacement and takes all rows of each drawn patient, as many times as it was drawn. One engine
  (:func:`group_bootstrap_indices` → ``_resample_metrics``) serves :func:`bootstrap_ci` and
  :func:`paired_bootstrap`.
- Closed-form companions: :func:`wilson_interval` (a proportion), :func:`mcnemar_test` (two models' correctness
  on the same items), :func:`delong_test` (two correlated ROC AUCs).
- Calibration: :func:`expected_calibration_error`, :func:`reliability_table`, :func:`fit_temperature`,
  :func:`apply_temperature`. Referral: :func:`referral_curve`. Spread over training seeds: :func:`seed_summary`.

Pure functions (no I/O); inputs are array-likes (NumPy arrays; CPU tensors convert through ``np.asarray``).
Everything random takes a ``seed`` and uses ``np.random.default_rng(seed)``: same inputs + seed → same output.
Bootstrap results are rounded to 6 decimals (JSON-ready); None marks an undefined value.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

MetricFn = Callable[..., Mapping[str, Any]]


# ---------------------------------------------------------------- patient-level bootstrap


def group_bootstrap_indices(groups: Sequence, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of ``n_resamples`` patient-level bootstrap resamples (a generator).

    ``groups``: shape (N,), the patient id of each row (any sortable values). Each resample draws G patients
    with replacement out of the G distinct ones; a drawn patient contributes all its rows, once per draw, as
    one contiguous block (its rows in their original order). Yields int arrays of varying length (the sum of
    the drawn patients' row counts). Vectorised: no Python loop over rows or patients."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise ValueError(f"groups must be a non-empty 1-D array, got shape {groups.shape}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    _, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.ravel()
    rows = np.argsort(inverse, kind="stable")  # rows sorted by patient; patient g is rows[start[g]:start[g]+count[g]]
    count = np.bincount(inverse)
    start = np.cumsum(count) - count
    return _draw_blocks(rows, start, count, n_resamples, np.random.default_rng(seed))


def _draw_blocks(rows, start, count, n_resamples, rng) -> Iterator[np.ndarray]:
    for _ in range(n_resamples):
        drawn = rng.integers(0, len(count), size=len(count))
        lengths = count[drawn]
        block_begin = np.cumsum(lengths) - lengths  # where each drawn block begins in the output
        within = np.arange(lengths.sum()) - np.repeat(block_begin, lengths)
        yield rows[np.repeat(start[drawn], lengths) + within]


def _as_float(value: Any) -> float:
    return np.nan if value is None else float(value)


def _round(value: float) -> float | None:
    return round(float(value), 6) + 0.0 if np.isfinite(value) else None  # + 0.0: no "-0.0" in JSON


def _resample_metrics(metric_fn: MetricFn, groups: Sequence, datasets: Sequence[Mapping[str, Any]],
                      n_resamples: int, seed: int) -> list[dict[str, np.ndarray]]:
    """The bootstrap engine: ``metric_fn`` on every dataset for every resample (the same rows for all datasets).

    Returns, per dataset, ``{metric key: float array of shape (n_resamples,)}``; None (or a missing key) → NaN."""
    n = len(groups)
    arrays = [{k: np.asarray(v) for k, v in d.items()} for d in datasets]
    for d in arrays:
        bad = {k: len(v) for k, v in d.items() if len(v) != n}
        if bad:
            raise ValueError(f"data arrays must have one row per group entry ({n}); got lengths {bad}")
    results: list[list[Mapping[str, Any]]] = [[] for _ in arrays]
    for idx in group_bootstrap_indices(groups, n_resamples, seed):
        for out, d in zip(results, arrays):
            out.append(metric_fn(**{k: v[idx] for k, v in d.items()}))
    keys = list(dict.fromkeys(k for out in results for r in out for k in r))
    return [{k: np.array([_as_float(r.get(k)) for r in out]) for k in keys} for out in results]


def _finite_or_none(values: np.ndarray) -> np.ndarray | None:
    """The finite resampled values, or None when fewer than half of the resamples gave one."""
    finite = values[np.isfinite(values)]
    return finite if finite.size and finite.size >= values.size / 2 else None


def _percentile_interval(values: np.ndarray, level: float) -> list[float] | None:
    finite = _finite_or_none(values)
    if finite is None:
        return None
    alpha = (1 - level) / 2
    return [_round(q) for q in np.quantile(finite, [alpha, 1 - alpha])]


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def bootstrap_ci(metric_fn: MetricFn, groups: Sequence, data: Mapping[str, Any], n_resamples: int = 1000,
                 seed: int = 0, level: float = 0.95) -> dict[str, list[float] | None]:
    """Percentile bootstrap interval of every metric, resampling patients.

    ``groups``: (N,) patient ids; ``data``: name → array with N rows (e.g. ``y_true``, ``y_pred``, ``probs``
    N×C), sliced by the same rows and passed as ``metric_fn(**sliced) -> {key: float | None}``. Returns
    ``{key: [lo, hi]}`` (metric units, 6 decimals) at ``level``; a metric undefined (None/NaN) in some resamples
    (e.g. AUC with one class drawn) uses the finite ones, and is None if fewer than half are finite. The point
    estimate stays the caller's (``metric_fn(**data)``)."""
    _check_level(level)
    (samples,) = _resample_metrics(metric_fn, groups, [data], n_resamples, seed)
    return {k: _percentile_interval(v, level) for k, v in samples.items()}


def paired_bootstrap(metric_fn: MetricFn, groups: Sequence, data_a: Mapping[str, Any], data_b: Mapping[str, Any],
                     n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Compare two models on the same test set: both are evaluated on the same resampled patients.

    ``data_a``/``data_b``: the two models' inputs to ``metric_fn`` (N rows each, row i = the same item).
    Returns per metric key ``{"a", "b"}`` (point estimates on the full data), ``"diff"`` (b − a),
    ``"ci95"`` (percentile interval of the resampled b − a at ``level``; the key keeps its name for other
    levels), ``"p_value"`` (two-sided: 2 × the share of resampled differences on the other side of 0 from the
    observed one, zeros counting as the other side, capped at 1; 1.0 when the observed difference is 0; its
    resolution is 1/n_resamples) and ``"distinguishable"`` (the interval excludes 0). Undefined → None."""
    _check_level(level)
    points = [metric_fn(**{k: np.asarray(v) for k, v in d.items()}) for d in (data_a, data_b)]
    samples_a, samples_b = _resample_metrics(metric_fn, groups, [data_a, data_b], n_resamples, seed)
    out = {}
    for key in samples_a:
        a, b = (_as_float(p.get(key)) for p in points)
        diffs = samples_b[key] - samples_a[key]
        ci = _percentile_interval(diffs, level)
        finite = _finite_or_none(diffs)
        if finite is None or not np.isfinite(b - a):
            p_value = None
        elif b - a == 0:
            p_value = 1.0
        else:
            other_side = finite <= 0 if b - a > 0 else finite >= 0
            p_value = _round(min(1.0, 2 * other_side.mean()))
        out[key] = {"a": _round(a), "b": _round(b), "diff": _round(b - a), "ci95": ci, "p_value": p_value,
                    "distinguishable": ci is not None and (ci[0] > 0 or ci[1] < 0)}
    return out


# ---------------------------------------------------------------- closed-form tests and intervals


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion k/n (k successes out of n); (0.0, 1.0) when n = 0."""
    from scipy import stats

    _check_level(level)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z2 = stats.norm.ppf(0.5 + level / 2) ** 2
    p = k / n
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = np.sqrt(z2 * p * (1 - p) / n + z2 * z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def mcnemar_test(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, Any]:
    """Exact McNemar test: do models A and B err on the same items equally often?

    ``correct_a``, ``correct_b``: (N,) booleans, item i right/wrong for each model. ``b`` = items A gets right
    and B wrong, ``c`` = A wrong and B right; ``p_value`` is the two-sided exact binomial test of b out of b + c
    against ½ (1.0 when there are no discordant items)."""
    from scipy import stats

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b differ in shape: {a.shape} vs {b.shape}")
    n_ab, n_ba = int((a & ~b).sum()), int((~a & b).sum())
    p = stats.binomtest(n_ab, n_ab + n_ba, 0.5).pvalue if n_ab + n_ba else 1.0
    return {"b": n_ab, "c": n_ba, "p_value": float(p)}


def delong_test(y_true: Sequence[int], score_a: Sequence[float], score_b: Sequence[float]) -> dict[str, Any]:
    """DeLong et al. (1988) test of two correlated ROC AUCs on the same items (fast version, Sun & Xu 2014).

    ``y_true``: (N,) labels in {0, 1} (at least two of each); ``score_a``, ``score_b``: (N,) scores, higher =
    more likely class 1. Returns ``auc_a``, ``auc_b`` (ties count ½, as in scikit-learn), ``diff`` = auc_b −
    auc_a, ``ci95`` (normal 95 % interval of diff from the DeLong variance) and the two-sided ``p_value``."""
    from scipy import stats

    y = np.asarray(y_true).ravel()
    if not np.isin(y, (0, 1)).all() or min((y == 1).sum(), (y == 0).sum()) < 2:
        raise ValueError("y_true must be 0/1 with at least two items of each class")
    scores = np.vstack([np.asarray(score_a, dtype=float).ravel(), np.asarray(score_b, dtype=float).ravel()])
    if scores.shape[1] != y.size:
        raise ValueError(f"scores must have {y.size} entries, got {scores.shape[1]}")
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    rank_all = stats.rankdata(np.hstack([pos, neg]), axis=1)  # midranks: ties count ½
    v_pos = (rank_all[:, :m] - stats.rankdata(pos, axis=1)) / n  # per positive: share of negatives below it
    v_neg = 1 - (rank_all[:, m:] - stats.rankdata(neg, axis=1)) / m  # per negative: share of positives above it
    auc = v_pos.mean(axis=1)
    cov = np.cov(v_pos) / m + np.cov(v_neg) / n  # 2×2 covariance of the two AUC estimates
    var = max(0.0, cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = auc[1] - auc[0]
    half = stats.norm.ppf(0.975) * np.sqrt(var)
    if var > 0:
        p = 2 * stats.norm.sf(abs(diff) / np.sqrt(var))
    else:
        p = 1.0 if diff == 0 else 0.0
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "diff": float(diff),
            "ci95": [float(diff - half), float(diff + half)], "p_value": float(p)}


# ---------------------------------------------------------------- calibration


def _as_probs(probs: Any) -> np.ndarray:
    """N×C probabilities; a 1-D array is read as P(class 1) of a binary task."""
    p = np.asarray(probs, dtype=float)
    return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p


def _as_logits(logits: Any) -> np.ndarray:
    """N×C logits; a 1-D array is read as the class-1 logit of a binary task (softmax([0, z]) = sigmoid(z))."""
    z = np.asarray(logits, dtype=float)
    return np.stack([np.zeros_like(z), z], axis=1) if z.ndim == 1 else z


def reliability_table(probs: Any, y: Sequence[int], bins: int = 15) -> pd.DataFrame:
    """Reliability diagram data: one row per equal-width confidence bin (lower, upper] on [0, 1].

    ``probs``: N×C class probabilities (or (N,) P(class 1)); ``y``: (N,) true class indices. Confidence = the
    maximum probability, a prediction is correct when its argmax (first on ties) equals y. Columns
    ``bin_lower, bin_upper, count, confidence`` (mean confidence) ``, accuracy`` (share correct); empty bins
    have count 0 and NaN confidence/accuracy."""
    p, y = _as_probs(probs), np.asarray(y).ravel()
    if p.ndim != 2 or p.shape[0] != y.size or y.size == 0:
        raise ValueError(f"need N×C probs and N labels (N > 0), got {p.shape} and {y.shape}")
    confidence, correct = p.max(axis=1), p.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, confidence, bins) / count
        accuracy = np.bincount(which, correct, bins) / count
    return pd.DataFrame({"bin_lower": edges[:-1], "bin_upper": edges[1:], "count": count,
                         "confidence": mean_conf, "accuracy": accuracy})


def expected_calibration_error(probs: Any, y: Sequence[int], bins: int = 15) -> float:
    """ECE (Guo et al. 2017): Σ_bins (count/N)·|accuracy − confidence| over the :func:`reliability_table` bins.

    A proportion in [0, 1]; 0 = perfectly calibrated max-probability confidence."""
    t = reliability_table(probs, y, bins)
    filled = t[t["count"] > 0]
    return float((filled["count"] * (filled["accuracy"] - filled["confidence"]).abs()).sum() / t["count"].sum())


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    from scipy import special

    return float(-special.log_softmax(logits / temperature, axis=1)[np.arange(y.size), y].mean())


def fit_temperature(logits: Any, y: Sequence[int], max_iter: int = 200) -> float:
    """Temperature scaling (Guo et al. 2017): the scalar T > 0 minimising the mean NLL of softmax(logits / T).

    ``logits``: N×C (binary tasks: N×2 scores, or (N,) class-1 logits); ``y``: (N,) class indices. Fitted on a
    held-out (validation) split, never the test split. Bounded Brent search on log T over [0.01, 100]
    (deterministic; an optimum outside that range returns the bound). T > 1 softens over-confident logits."""
    from scipy import optimize

    z, y = _as_logits(logits), np.asarray(y, dtype=np.int64).ravel()
    if z.ndim != 2 or z.shape[0] != y.size or y.size == 0:
        raise ValueError(f"need N×C logits and N labels (N > 0), got {z.shape} and {y.shape}")
    res = optimize.minimize_scalar(lambda log_t: _nll(z, y, np.exp(log_t)), bounds=(np.log(1e-2), np.log(1e2)),
                                   method="bounded", options={"maxiter": max_iter, "xatol": 1e-7})
    return float(np.exp(res.x))


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """softmax(logits / T): N×C probabilities (rows sum to 1) from N×C logits (or (N,) class-1 logits → N×2)."""
    from scipy import special

    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return special.softmax(_as_logits(logits) / temperature, axis=1)


# ---------------------------------------------------------------- referral and seed spread


def referral_curve(confidence: Sequence[float], correct: Sequence[bool], steps: int | None = None) -> pd.DataFrame:
    """Accuracy on the cases kept when the least-confident ones are referred to an expert.

    ``confidence``: (N,) e.g. max probability; ``correct``: (N,) booleans. One row per distinct cut: the cut at
    confidence value t refers every case with confidence < t and keeps the rest, so tied cases are always
    referred together (deterministic, no arbitrary order). Columns ``referred_fraction`` (0 in the first row),
    ``retained`` (count), ``accuracy`` (share of retained correct), ``threshold`` (= t, the lowest confidence
    kept). "Everything referred" is not a row (its accuracy is undefined). ``steps``: keep only, for each
    target fraction in ``linspace(0, 1, steps, endpoint=False)``, the last cut referring at most that
    fraction (duplicates dropped)."""
    conf, ok = np.asarray(confidence, dtype=float).ravel(), np.asarray(correct, dtype=bool).ravel()
    if conf.shape != ok.shape or conf.size == 0 or not np.isfinite(conf).all():
        raise ValueError("confidence and correct must be non-empty, of equal length, confidence finite")
    order = np.argsort(conf, kind="stable")
    conf, ok = conf[order], ok[order]
    threshold, referred = np.unique(conf, return_index=True)  # first sorted position of each value = # below it
    retained = conf.size - referred
    correct_kept = ok.sum() - np.concatenate(([0], np.cumsum(ok)))[referred]
    table = pd.DataFrame({"referred_fraction": referred / conf.size, "retained": retained,
                          "accuracy": correct_kept / retained, "threshold": threshold})
    if steps is not None:
        targets = np.linspace(0.0, 1.0, steps, endpoint=False)
        rows = np.searchsorted(table["referred_fraction"].to_numpy(), targets, side="right") - 1
        table = table.iloc[np.unique(rows)].reset_index(drop=True)
    return table


def seed_summary(results: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Spread of metrics over runs that differ only in their seed.

    ``results``: one metrics dict per seed; ``keys``: the (top-level) metric names. Returns per key
    ``{mean, sd (ddof=1; None below 2 values), min, max, n}``; None, NaN and missing values are skipped
    (n counts the rest; all None when n = 0)."""
    out = {}
    for key in keys:
        v = np.array([_as_float(r.get(key)) for r in results], dtype=float)
        v = v[np.isfinite(v)]
        out[key] = {"mean": float(v.mean()) if v.size else None, "sd": float(v.std(ddof=1)) if v.size > 1 else None,
                    "min": float(v.min()) if v.size else None, "max": float(v.max()) if v.size else None,
                    "n": int(v.size)}
    return out
