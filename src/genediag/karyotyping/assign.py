"""From one cell's per-crop class probabilities to its (numerical) karyotype, by constrained assignment.

A **hypothesis** is a numerical karyotype in ISCN form (``46,XX``, ``47,XY,+21``, ``45,X``, ``47,XXY``…). It
expects a multiset of **slots**: two per autosome, one per sex chromosome it names, one more (or one less) per
``+N`` (``-N``). For a cell of n crops with class probabilities P (n×K) the crops are matched to the m slots by
:func:`scipy.optimize.linear_sum_assignment` on the augmented (n+m)×(m+n) cost matrix

    ┌──────────────────────────┬─────────────────────────┐
    │ crop i → slot j:          │ crop i → "extra" dummy:  │
    │   −ln max(P[i, c_j], ε)   │   extra_penalty          │
    ├──────────────────────────┼─────────────────────────┤
    │ "missing" dummy → slot j: │ dummy → dummy: 0         │
    │   missing_penalty         │                          │
    └──────────────────────────┴─────────────────────────┘

so every crop either fills a slot or is declared extra (a crop the hypothesis has no room for: debris, an
overlap split in two, a chromosome no hypothesis expects), and every slot is either filled or declared missing.
The hypothesis' log-likelihood is minus the optimal cost; its **score** adds the log-prior (the hypotheses'
prior weights, normalised). The cell's karyotype is the hypothesis with the highest score; ties go to the
earlier hypothesis in the list.

With ``extra_penalty + missing_penalty > −ln ε`` (the defaults: 8 + 8 > 13.8 for ε = 1e−6) declaring a crop extra
*and* its slot missing is always dearer than forcing the crop into the slot, so dummies are used exactly when the
number of crops differs from the hypothesis' slot count.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

AUTOSOMES = [str(i) for i in range(1, 23)]
SEX_CHROMOSOMES = ["X", "Y"]
CHROMOSOME_ORDER = AUTOSOMES + SEX_CHROMOSOMES
NORMAL_KARYOTYPES = ("46,XX", "46,XY")
EXTRA = -1  # crop_class value of a crop assigned to an "extra" dummy

_ISCN_RE = re.compile(r"^(\d+),([XY]+)((?:,[+-](?:[1-9]|1\d|2[0-2]|X|Y))*)$")


# ------------------------------------------------------------------------------------------------ ISCN
def parse_iscn(iscn: str) -> dict[str, int]:
    """Chromosome counts {"1": 2, …, "X": 1, "Y": 1} of a numerical ISCN karyotype.

    Grammar: ``<total>,<sex chromosomes>[,+N|,-N]...`` with N in 1–22, X, Y (e.g. ``47,XY,+21``, ``45,X``,
    ``47,XXY``, ``45,XX,-21``). Structural notation (``del(5)(p14)``…) is not a numerical karyotype: ValueError.
    The total must equal the sum of the counts.
    """
    s = str(iscn).replace(" ", "")
    m = _ISCN_RE.match(s)
    if not m:
        raise ValueError(f"not a numerical ISCN karyotype: {iscn!r} (expected e.g. '46,XX', '47,XY,+21', '45,X')")
    counts = {c: 2 for c in AUTOSOMES}
    counts.update({"X": m.group(2).count("X"), "Y": m.group(2).count("Y")})
    for change in filter(None, m.group(3).split(",")):
        counts[change[1:]] += 1 if change[0] == "+" else -1
    if min(counts.values()) < 0:
        raise ValueError(f"{iscn!r}: a chromosome count below zero")
    total = sum(counts.values())
    if total != int(m.group(1)):
        raise ValueError(f"{iscn!r}: the changes add up to {total} chromosomes, not {m.group(1)}")
    return counts


def counts_to_iscn(counts: Mapping[str, int]) -> str:
    """Canonical numerical ISCN for chromosome counts (inverse of :func:`parse_iscn`).

    Sex chromosomes are written out (``XXY``, ``X``); autosome gains/losses follow in chromosome order
    (``47,XY,+21``; ``45,XX,-21``; ``48,XY,+13,+21``). Labels other than 1–22, X, Y are an error.
    """
    unknown = sorted(set(k for k, v in counts.items() if v) - set(CHROMOSOME_ORDER))
    if unknown:
        raise ValueError(f"counts_to_iscn: not chromosome classes: {unknown}")
    get = lambda c: int(counts.get(c, 0))  # noqa: E731
    total = sum(get(c) for c in CHROMOSOME_ORDER)
    parts = [str(total), "X" * get("X") + "Y" * get("Y") or "?"]
    for c in AUTOSOMES:
        d = get(c) - 2
        parts += [f"+{c}"] * max(d, 0) + [f"-{c}"] * max(-d, 0)
    iscn = ",".join(parts)
    if parts[1] == "?":
        raise ValueError(f"counts_to_iscn: no sex chromosome in {dict(counts)}; ISCN cannot write {iscn}")
    return iscn


def is_numerically_abnormal(iscn: str) -> bool:
    """True unless the karyotype is 46,XX or 46,XY."""
    return counts_to_iscn(parse_iscn(iscn)) not in NORMAL_KARYOTYPES


# ------------------------------------------------------------------------------------------ hypotheses
@dataclass(frozen=True)
class Hypothesis:
    iscn: str
    counts: tuple[tuple[str, int], ...]
    log_prior: float
    slots: np.ndarray = field(compare=False, repr=False)  # class index of every expected chromosome


def make_hypotheses(priors: Mapping[str, float] | Sequence[str], class_names: Sequence[str]) -> list[Hypothesis]:
    """Hypotheses from {ISCN: prior weight} (normalised to sum 1) or a list of ISCN strings (equal priors).

    Every ISCN must be in canonical form (as :func:`counts_to_iscn` writes it) and every chromosome it expects
    must be one of the model's ``class_names``.
    """
    if not isinstance(priors, Mapping):
        priors = {str(h): 1.0 for h in priors}
    if not priors:
        raise ValueError("no karyotype hypotheses given")
    total = float(sum(priors.values()))
    if any(float(w) <= 0 for w in priors.values()) or not math.isfinite(total):
        raise ValueError(f"hypothesis priors must be positive numbers, got {dict(priors)}")
    index = {str(c): i for i, c in enumerate(class_names)}
    out = []
    for iscn, weight in priors.items():
        counts = parse_iscn(iscn)
        canonical = counts_to_iscn(counts)
        if canonical != iscn:
            raise ValueError(f"hypothesis {iscn!r}: write it as {canonical!r} (canonical ISCN)")
        absent = [c for c, k in counts.items() if k and c not in index]
        if absent:
            raise ValueError(f"hypothesis {iscn!r} expects chromosome(s) {absent} that the model does not classify "
                             f"(its classes: {list(class_names)})")
        slots = np.array([index[c] for c in CHROMOSOME_ORDER for _ in range(counts[c])], dtype=np.int64)
        out.append(Hypothesis(iscn, tuple((c, counts[c]) for c in CHROMOSOME_ORDER), math.log(float(weight) / total),
                              slots))
    return out


# ------------------------------------------------------------------------------------------ assignment
@dataclass
class Assignment:
    """The best crop-to-slot matching of one cell under one hypothesis."""

    hypothesis: Hypothesis
    log_likelihood: float          # −(optimal cost): Σ ln P of the matched crops − penalties
    crop_class: np.ndarray         # per crop: class index of its slot, or EXTRA
    missing: list[int]             # class indices of the slots left empty

    @property
    def score(self) -> float:
        return self.log_likelihood + self.hypothesis.log_prior

    @property
    def n_extra(self) -> int:
        return int((self.crop_class == EXTRA).sum())


def log_probabilities(probs: np.ndarray, min_prob: float = 1e-6) -> np.ndarray:
    """ln of the probabilities clipped at ``min_prob`` (one confident mistake costs at most −ln min_prob)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be a crops×classes matrix, got shape {p.shape}")
    return np.log(np.clip(p, min_prob, 1.0))


def assign(log_probs: np.ndarray, hypothesis: Hypothesis, extra_penalty: float = 8.0,
           missing_penalty: float = 8.0) -> Assignment:
    """Optimal crop-to-slot assignment of one cell (n×K log-probabilities) under one hypothesis.

    Solved as an equivalent rectangular problem with the same optimum as the square matrix drawn in the module
    docstring. In general n×(m+n): every slot costs ``missing_penalty`` up front and filling it refunds that, so
    crop i → slot j costs −ln P[i, c_j] − missing_penalty and crop i → an "extra" column costs
    ``extra_penalty``; the log-likelihood is minus (optimal cost + m·missing_penalty). When every −ln P of the
    cell is below ``extra_penalty + missing_penalty`` (always, with the defaults: −ln min_prob = 13.8 < 16) an
    optimum never has an extra crop and a missing slot at once (moving the crop into the slot is cheaper), so it
    has exactly max(0, n−m) extras and max(0, m−n) missing slots and the problem shrinks to n×max(m, n).
    """
    neg = -np.asarray(log_probs, dtype=np.float64)
    return _assign_neg(neg, hypothesis, extra_penalty, missing_penalty, _compact_ok(neg, extra_penalty,
                                                                                    missing_penalty))


def _compact_ok(neg_log_probs: np.ndarray, extra_penalty: float, missing_penalty: float) -> bool:
    return not neg_log_probs.size or float(neg_log_probs.max()) < extra_penalty + missing_penalty


def _assign_neg(neg_log_probs: np.ndarray, hypothesis: Hypothesis, extra_penalty: float, missing_penalty: float,
                compact: bool) -> Assignment:
    """:func:`assign` on −ln P computed once per cell (not once per hypothesis)."""
    n, slots = len(neg_log_probs), hypothesis.slots
    m = len(slots)
    if compact:  # exactly max(0, n−m) extra crops and max(0, m−n) missing slots
        cost = np.empty((n, max(m, n)))
        cost[:, :m] = neg_log_probs[:, slots]
        cost[:, m:] = extra_penalty
        constant = max(0, m - n) * missing_penalty
    else:
        cost = np.empty((n, m + n))
        cost[:, :m] = neg_log_probs[:, slots]
        cost[:, :m] -= missing_penalty
        cost[:, m:] = extra_penalty
        constant = m * missing_penalty
    rows, cols = linear_sum_assignment(cost)
    crop_class = np.full(n, EXTRA, dtype=np.int64)
    to_slot = cols < m
    crop_class[rows[to_slot]] = slots[cols[to_slot]]
    filled = np.zeros(m, dtype=bool)
    filled[cols[to_slot]] = True
    log_likelihood = -(float(cost[rows, cols].sum()) + constant)
    return Assignment(hypothesis, log_likelihood, crop_class, [int(s) for s in slots[~filled]])


def mean_log_likelihood(assignment: Assignment) -> float:
    """Per-crop fit of an assignment: its log-likelihood (penalties included, prior not) / the number of crops.

    Dividing by the crop count makes cells of any size comparable (a 47-crop cell is not penalised for one more
    crop's −ln P); this is the score :func:`genediag.karyotyping.calls.fit_nofit_threshold` thresholds.
    """
    n = len(assignment.crop_class)
    return assignment.log_likelihood / n if n else 0.0


@dataclass
class CellCall:
    """A cell's karyotype call: every hypothesis' assignment, best first.

    With a ``nofit_threshold`` (see :func:`genediag.karyotyping.calls.fit_nofit_threshold`) a cell whose best
    assignment's per-crop log-likelihood falls below it does not fit any hypothesis: ``fits`` is False, the cell is
    **referred** (to a cytogeneticist), ``reason`` says why, and ``karyotype`` is kept for the record only (the
    metrics count a referred cell as not called). Without a threshold every cell fits.
    """

    ranked: list[Assignment]
    nofit_threshold: float | None = None

    @property
    def best(self) -> Assignment:
        return self.ranked[0]

    @property
    def karyotype(self) -> str:
        return self.best.hypothesis.iscn

    @property
    def runner_up(self) -> Assignment | None:
        return self.ranked[1] if len(self.ranked) > 1 else None

    @property
    def margin(self) -> float:
        """Score of the best minus the runner-up hypothesis (nats); inf with one hypothesis."""
        return self.best.score - self.runner_up.score if self.runner_up else math.inf

    @property
    def per_crop_log_likelihood(self) -> float:
        """:func:`mean_log_likelihood` of the best (called) assignment."""
        return mean_log_likelihood(self.best)

    @property
    def fits(self) -> bool:
        """False when the best assignment's per-crop log-likelihood is below ``nofit_threshold``."""
        return self.nofit_threshold is None or not self.per_crop_log_likelihood < self.nofit_threshold

    @property
    def referred(self) -> bool:
        return not self.fits

    @property
    def reason(self) -> str:
        """Empty when the cell fits, else "no hypothesis fits (per-crop log-likelihood x < threshold t)"."""
        if self.fits:
            return ""
        return (f"no hypothesis fits (per-crop log-likelihood {self.per_crop_log_likelihood:.4g} "
                f"< threshold {self.nofit_threshold:.4g})")

    def final_labels(self, probs: np.ndarray, class_names: Sequence[str]) -> list[str]:
        """Per crop: the class of its slot; an extra crop keeps the model's top class."""
        top = np.asarray(probs).argmax(1)
        return [str(class_names[c if c != EXTRA else t]) for c, t in zip(self.best.crop_class, top)]


def karyotype_cell(probs: np.ndarray, hypotheses: Sequence[Hypothesis], min_prob: float = 1e-6,
                   extra_penalty: float = 8.0, missing_penalty: float = 8.0,
                   nofit_threshold: float | None = None) -> CellCall:
    """Assign one cell's crops under every hypothesis and rank them by score (stable: ties keep list order).

    The log-probability matrix is computed once per cell; each hypothesis only gathers its slot columns.
    ``nofit_threshold``: per-crop log-likelihood below which the cell is referred (:class:`CellCall`).
    """
    if not hypotheses:
        raise ValueError("karyotype_cell: no hypotheses")
    neg_lp = -log_probabilities(probs, min_prob)
    k = max(int(h.slots.max()) for h in hypotheses if len(h.slots)) + 1
    if neg_lp.shape[1] < k:
        raise ValueError(f"probabilities have {neg_lp.shape[1]} classes but the hypotheses need {k}")
    compact = _compact_ok(neg_lp, extra_penalty, missing_penalty)
    results = [_assign_neg(neg_lp, h, extra_penalty, missing_penalty, compact) for h in hypotheses]
    order = sorted(range(len(results)), key=lambda i: (-results[i].score, i))
    return CellCall([results[i] for i in order], nofit_threshold)


def label_counts(labels: Sequence[str]) -> dict[str, int]:
    """Counts of 1–22, X, Y among labels (other labels are ignored by the caller's choice of labels)."""
    c = Counter(str(x) for x in labels)
    return {k: int(c.get(k, 0)) for k in CHROMOSOME_ORDER}
