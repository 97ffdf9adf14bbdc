"""Which karyotypes a cell may be called, when no call should be made, and how calls are scored.

Pure functions (no file I/O, no torch) on top of :mod:`genediag.karyotyping.assign`:

- :func:`standard_hypotheses` / :func:`resolve_hypotheses`: the hypothesis list with prior weights. The
  **standard** list covers every single-chromosome numerical change, so a cell whose per-crop counts are a
  47,XXX, a 47,XYY or an autosomal monosomy is no longer forced into the nearest of a handful of hypotheses.
- :func:`fit_nofit_threshold`: the per-crop log-likelihood below which *no hypothesis fits* and the cell is
  referred rather than called (:attr:`genediag.karyotyping.assign.CellCall.fits`).
- :func:`karyotype_metrics`: exact-karyotype accuracy, sensitivity (exact calls only), specificity and the
  referral counts.

Standard hypotheses (94): 46,XX; 46,XY; 47,XX,+N and 47,XY,+N for N = 1–22; 45,XX,-N and 45,XY,-N for
N = 1–22; 45,X; 47,XXX; 47,XXY; 47,XYY. Prior weights are given per **group**; a group's weight is split
equally among its karyotypes and the whole is normalised to sum 1:

==================  ====================================  =======  ==================  =============
group               karyotypes                            default  each (normalised)   ln(each)
==================  ====================================  =======  ==================  =============
``normal``          46,XX; 46,XY                          0.80     0.40                −0.92
``trisomy_common``  47,XX/XY,+21, +18, +13  (6)           0.10     0.0167              −4.09
``trisomy_other``   47,XX/XY,+N, other N  (38)            0.03     0.000789            −7.14
``monosomy``        45,XX/XY,-N, N = 1–22  (44)           0.02     0.000455            −7.70
``sex``             45,X; 47,XXX; 47,XXY; 47,XYY  (4)     0.05     0.0125              −4.38
==================  ====================================  =======  ==================  =============

A referral population's rough mix (most cells normal; trisomies 21/18/13 the common autosomal aneuploidies;
other trisomies and autosomal monosomies rare; sex-chromosome aneuploidies in between), not the synthetic
cohort's own frequencies. What the priors mean in nats: with the default penalties (extra 8, missing 8) a
confident 45-crop cell lacking one 19 scores −8 + ln 0.40 = −8.92 as 46,XY (one slot missing) and
ln 0.000455 = −7.70 as 45,XY,-19, so it is called the monosomy by 1.2 nats; a single crop lost in segmentation
looks the same, so such calls deserve a look at the karyogram. The monosomy call wins exactly when
``missing_penalty > ln(prior(46,XY) / prior(45,XY,-N))``; lower ``monosomy`` (or the missing penalty) to
prefer "46 with a lost crop". Likewise a rare trisomy beats "46 with an extra crop" by 8 − 6.2 = 1.8 nats.
A group weight of 0 leaves its karyotypes out.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from genediag.karyotyping.assign import AUTOSOMES, counts_to_iscn, is_numerically_abnormal, parse_iscn

COMMON_TRISOMIES = ("21", "18", "13")
SEX_ANEUPLOIDIES = ("45,X", "47,XXX", "47,XXY", "47,XYY")
DEFAULT_GROUP_PRIORS: dict[str, float] = {
    "normal": 0.80,
    "trisomy_common": 0.10,
    "trisomy_other": 0.03,
    "monosomy": 0.02,
    "sex": 0.05,
}
STANDARD = "standard"


def standard_groups() -> dict[str, list[str]]:
    """{group: its canonical ISCN karyotypes} of the standard hypothesis list (list order = tie order)."""
    sexes = ("XX", "XY")
    return {
        "normal": [f"46,{s}" for s in sexes],
        "trisomy_common": [f"47,{s},+{n}" for n in AUTOSOMES if n in COMMON_TRISOMIES for s in sexes],
        "trisomy_other": [f"47,{s},+{n}" for n in AUTOSOMES if n not in COMMON_TRISOMIES for s in sexes],
        "monosomy": [f"45,{s},-{n}" for n in AUTOSOMES for s in sexes],
        "sex": list(SEX_ANEUPLOIDIES),
    }


def _weight(value: Any, where: str, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        need = "a non-negative number" if allow_zero else "a positive number"
        raise ValueError(f"{where}: prior weight must be {need}, got {value!r}")
    return float(value)


def standard_hypotheses(priors: Mapping[str, float] | None = None) -> dict[str, float]:
    """The 94 standard hypotheses {canonical ISCN: prior} (priors sum to 1), in :func:`standard_groups` order.

    ``priors`` overrides group weights of :data:`DEFAULT_GROUP_PRIORS` (keys ``normal``, ``trisomy_common``,
    ``trisomy_other``, ``monosomy``, ``sex``); each group's weight is split equally among its karyotypes, then
    all are normalised. A group weighted 0 is left out.
    """
    priors = dict(priors or {})
    unknown = sorted(set(priors) - set(DEFAULT_GROUP_PRIORS))
    if unknown:
        raise ValueError(f"standard hypotheses: unknown prior group(s) {unknown}; groups are "
                         f"{list(DEFAULT_GROUP_PRIORS)}")
    weights = {g: _weight(priors.get(g, w), f"standard hypotheses: group {g!r}", allow_zero=True)
               for g, w in DEFAULT_GROUP_PRIORS.items()}
    if not sum(weights.values()) > 0:
        raise ValueError(f"standard hypotheses: every group weight is 0 ({weights})")
    out: dict[str, float] = {}
    for group, members in standard_groups().items():
        if weights[group] > 0:
            out.update({iscn: weights[group] / len(members) for iscn in members})
    total = sum(out.values())
    return {iscn: w / total for iscn, w in out.items()}


def resolve_hypotheses(spec: Any) -> dict[str, float]:
    """Hypotheses {canonical ISCN: normalised prior} from the ``karyotype.hypotheses`` param.

    Accepted forms:

    - ``standard`` → :func:`standard_hypotheses` with the default group priors;
    - ``{standard: {group: weight, …}}`` (or ``{standard: null}``) → standard with those groups overridden;
    - ``{ISCN: weight, …}`` → exactly those karyotypes (canonical ISCN, positive weights), normalised;
    - a list of ISCN strings → those karyotypes with equal priors.

    Raises ValueError with the reason otherwise.
    """
    if isinstance(spec, str):
        if spec.strip() == STANDARD:
            return standard_hypotheses()
        raise ValueError(f"hypotheses: {spec!r} is not a hypothesis list; give 'standard', "
                         "{standard: {group: weight}}, {ISCN: weight} or a list of ISCN karyotypes")
    if isinstance(spec, Mapping):
        if STANDARD in spec:
            if len(spec) != 1:
                raise ValueError(f"hypotheses: 'standard' cannot be mixed with explicit karyotypes "
                                 f"{sorted(k for k in spec if k != STANDARD)}; use one form or the other")
            groups = spec[STANDARD]
            if groups is not None and not isinstance(groups, Mapping):
                raise ValueError(f"hypotheses.standard: give {{group: weight}} (groups "
                                 f"{list(DEFAULT_GROUP_PRIORS)}), got {groups!r}")
            return standard_hypotheses(groups)
        weights = {str(k): _weight(v, f"hypotheses.{k}", allow_zero=False) for k, v in spec.items()}
    elif isinstance(spec, Sequence) and not isinstance(spec, (bytes, bytearray)):
        weights = {}
        for k in spec:
            if str(k) in weights:
                raise ValueError(f"hypotheses: {k!r} is listed twice")
            weights[str(k)] = 1.0
    else:
        raise ValueError(f"hypotheses: give 'standard', {{standard: {{group: weight}}}}, {{ISCN: weight}} or a "
                         f"list of ISCN karyotypes, got {spec!r}")
    if not weights:
        raise ValueError("hypotheses: the list is empty")
    for iscn in weights:
        canonical = counts_to_iscn(parse_iscn(iscn))  # ValueError for non-numerical ISCN
        if canonical != iscn:
            raise ValueError(f"hypotheses: write {iscn!r} as {canonical!r} (canonical ISCN)")
    total = sum(weights.values())
    return {iscn: w / total for iscn, w in weights.items()}


# ------------------------------------------------------------------------------------------ no-fit
def fit_nofit_threshold(values: Sequence[float] | np.ndarray, quantile: float = 0.01) -> float:
    """Per-crop log-likelihood below which no hypothesis fits: the ``quantile`` of VALIDATION cells' values.

    ``values``: :attr:`CellCall.per_crop_log_likelihood` of validation cells (held out from training, never the
    cells being evaluated). Why a low quantile: the validation cells are in-distribution (the crops the classifier
    was built for, karyotypes the hypotheses describe), so a new in-distribution cell falls below their
    ``quantile`` with probability ≈ ``quantile`` — at most about 1 % of ordinary cells are referred by default —
    while a cell the hypotheses cannot explain (unrecognisable crops, debris, a karyotype off the list that costs
    several penalties) scores far lower and is referred. With n validation cells a quantile below ~1/n is just
    their minimum (linear interpolation between the lowest two): use enough cells for the quantile asked.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if not v.size:
        raise ValueError("fit_nofit_threshold: no validation values")
    if not np.isfinite(v).all():
        raise ValueError("fit_nofit_threshold: non-finite per-crop log-likelihoods")
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"fit_nofit_threshold: quantile must be in [0, 1), got {quantile!r}")
    return float(np.quantile(v, quantile))


# ------------------------------------------------------------------------------------------ metrics
def _rate(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def cell_outcomes(truth: Sequence[str | None], called: Sequence[str], referred: Sequence[bool]
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(positions of the cells with a truth, their outcomes as boolean arrays: exact, abnormal, called_abnormal,
    referred) — the per-cell facts :func:`karyotype_metrics` counts, computed once (ISCN parsing is the slow part),
    so a bootstrap can recount them on every resample (:func:`outcome_rates`)."""
    canon = lambda s: counts_to_iscn(parse_iscn(s))  # noqa: E731
    keep = np.array([i for i, t in enumerate(truth) if t], dtype=np.int64)
    t = [canon(truth[i]) for i in keep]
    c = [canon(called[i]) for i in keep]
    r = np.array([bool(referred[i]) for i in keep], dtype=bool)
    return keep, {"exact": np.array([a == b for a, b in zip(t, c)], dtype=bool) & ~r,
                  "abnormal": np.array([is_numerically_abnormal(x) for x in t], dtype=bool),
                  "called_abnormal": np.array([is_numerically_abnormal(x) for x in c], dtype=bool), "referred": r}


def outcome_rates(exact: np.ndarray, abnormal: np.ndarray, called_abnormal: np.ndarray,
                  referred: np.ndarray) -> dict[str, float | None]:
    """The rates of :func:`karyotype_metrics` from :func:`cell_outcomes` arrays (same definitions)."""
    n, n_abn = len(exact), int(abnormal.sum())
    n_norm = n - n_abn
    return {"exact_karyotype_accuracy": _rate(int(exact.sum()), n),
            "exact_karyotype_accuracy_abnormal": _rate(int((exact & abnormal).sum()), n_abn),
            "sensitivity": _rate(int((exact & abnormal).sum()), n_abn),
            "specificity": _rate(int((~abnormal & ~called_abnormal & ~referred).sum()), n_norm)}


def karyotype_metrics(truth: Sequence[str | None], called: Sequence[str],
                      referred: Sequence[bool]) -> dict[str, Any]:
    """Cell-level metrics over the cells with a true karyotype (``truth`` None or "" = no truth, left out).

    A referred cell counts as not called: it is never exact, never a sensitivity hit nor a specificity hit
    (its call is kept in the record only). Rates are None when their denominator is 0.

    - ``exact_karyotype_accuracy``: called == truth and not referred, over all cells;
      ``exact_karyotype_accuracy_abnormal`` the same over numerically abnormal truths;
    - ``sensitivity``: abnormal cells called EXACTLY right and not referred / abnormal cells (a wrong abnormal
      call, e.g. 47,XX,+21 for a 47,XXX, is a miss) — by definition equal to the abnormal exact accuracy;
    - ``any_abnormal_call_rate``: abnormal cells called anything abnormal and not referred / abnormal cells (the
      old lenient figure);
    - ``specificity``: normal cells called numerically normal (46,XX or 46,XY) and not referred / normal cells;
    - ``referred``, ``referred_abnormal``, ``referred_normal``: counts;
    - ``accuracy_retained``: exact accuracy over the cells not referred;
    - ``per_karyotype``: {true karyotype: {n, exact (not referred), referred}}.
    """
    if not len(truth) == len(called) == len(referred):
        raise ValueError(f"karyotype_metrics: {len(truth)} truths, {len(called)} calls, {len(referred)} referrals")
    canon = lambda s: counts_to_iscn(parse_iscn(s))  # noqa: E731
    rows = [(canon(t), canon(c), bool(r)) for t, c, r in zip(truth, called, referred) if t]
    abnormal = [is_numerically_abnormal(t) for t, _, _ in rows]
    exact = [c == t and not r for t, c, r in rows]
    called_abnormal = [is_numerically_abnormal(c) for _, c, _ in rows]
    ref = [r for _, _, r in rows]
    n_abn = sum(abnormal)
    n_norm = len(rows) - n_abn
    kept = [e for e, r in zip(exact, ref) if not r]
    per: dict[str, dict[str, int]] = {}
    for (t, _, r), e in zip(rows, exact):
        d = per.setdefault(t, {"n": 0, "exact": 0, "referred": 0})
        d["n"] += 1
        d["exact"] += int(e)
        d["referred"] += int(r)
    order = Counter(t for t, _, _ in rows)
    return {
        "cells": len(rows),
        "exact_karyotype_accuracy": _rate(sum(exact), len(rows)),
        "exact_karyotype_accuracy_abnormal": _rate(sum(e for e, a in zip(exact, abnormal) if a), n_abn),
        "abnormal_cells": n_abn,
        "normal_cells": n_norm,
        "sensitivity": _rate(sum(e for e, a in zip(exact, abnormal) if a), n_abn),
        "any_abnormal_call_rate": _rate(sum(a and ca and not r for a, ca, r in zip(abnormal, called_abnormal, ref)),
                                        n_abn),
        "specificity": _rate(sum(not a and not ca and not r for a, ca, r in zip(abnormal, called_abnormal, ref)),
                             n_norm),
        "referred": sum(ref),
        "referred_abnormal": sum(r and a for r, a in zip(ref, abnormal)),
        "referred_normal": sum(r and not a for r, a in zip(ref, abnormal)),
        "accuracy_retained": _rate(sum(kept), len(kept)),
        "per_karyotype": {t: per[t] for t in sorted(order, key=lambda t: (-order[t], t))},
    }
