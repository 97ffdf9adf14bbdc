"""Karyotype calls beyond a short hypothesis list: the 94 standard hypotheses and their priors, exact calls of
47,XXX / 45,XY,-19 / 47,XYY that the old 10-hypothesis list gets wrong, "no hypothesis fits" referral, the
exact-call metrics, and the assignment's speed and optimality."""

import importlib
import math
import time

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from genediag.karyotyping.assign import (CHROMOSOME_ORDER, EXTRA, assign, counts_to_iscn, karyotype_cell,
                                         log_probabilities, make_hypotheses, mean_log_likelihood, parse_iscn)
from genediag.karyotyping.calls import (DEFAULT_GROUP_PRIORS, fit_nofit_threshold, karyotype_metrics,
                                        resolve_hypotheses, standard_groups, standard_hypotheses)

assign_mod = importlib.import_module("genediag.karyotyping.assign")  # the package exports a function `assign`
CLASSES = list(CHROMOSOME_ORDER)  # 1..22, X, Y
IDX = {c: i for i, c in enumerate(CLASSES)}
OLD_PRIORS = {"46,XX": 0.40, "46,XY": 0.40, "47,XX,+21": 0.03, "47,XY,+21": 0.03, "47,XX,+18": 0.015,
              "47,XY,+18": 0.015, "47,XX,+13": 0.01, "47,XY,+13": 0.01, "45,X": 0.02, "47,XXY": 0.02}
OLD = make_hypotheses(OLD_PRIORS, CLASSES)
STANDARD = make_hypotheses(standard_hypotheses(), CLASSES)


def cell_labels(sex="XX", extra=(), drop=()):
    labels = [c for c in CLASSES[:22] for _ in range(2)] + list(sex) + list(extra)
    for d in drop:
        labels.remove(d)
    return labels


def confident(labels, p=0.99):
    probs = np.full((len(labels), len(CLASSES)), (1 - p) / (len(CLASSES) - 1))
    probs[np.arange(len(labels)), [IDX[c] for c in labels]] = p
    return probs


def simulated(labels, rng, low=0.6, high=0.999):
    """A clean cell as a decent classifier sees it: P(true class) ~ U(low, high), the rest Dirichlet-spread."""
    n = len(labels)
    p_true = rng.uniform(low, high, n)
    rest = rng.dirichlet(np.full(len(CLASSES) - 1, 0.5), n) * (1 - p_true)[:, None]
    probs = np.empty((n, len(CLASSES)))
    for i, c in enumerate(labels):
        probs[i] = np.insert(rest[i], IDX[c], p_true[i])
    return probs


# ------------------------------------------------------------------------------------ standard list
def test_standard_hypotheses_count_round_trip_and_priors():
    h = standard_hypotheses()
    assert len(h) == 94 == 2 + 44 + 44 + 4
    assert math.isclose(sum(h.values()), 1.0)
    for iscn in h:
        assert counts_to_iscn(parse_iscn(iscn)) == iscn
    assert list(h)[:2] == ["46,XX", "46,XY"]
    assert {"47,XXX", "47,XYY", "47,XXY", "45,X", "45,XY,-19", "45,XX,-1", "47,XY,+16"} <= set(h)
    groups = standard_groups()
    assert {g: len(v) for g, v in groups.items()} == {"normal": 2, "trisomy_common": 6, "trisomy_other": 38,
                                                     "monosomy": 44, "sex": 4}
    assert sorted(i for v in groups.values() for i in v) == sorted(h)
    for g, members in groups.items():  # a group's default weight split equally
        for iscn in members:
            assert h[iscn] == pytest.approx(DEFAULT_GROUP_PRIORS[g] / len(members))
    assert h["46,XX"] == pytest.approx(0.40) and h["47,XY,+21"] == pytest.approx(0.10 / 6)
    assert h["47,XY,+21"] > h["47,XY,+16"] > h["45,XY,-19"]
    hyp = make_hypotheses(h, CLASSES)
    assert [len(x.slots) for x in hyp] == [int(i.split(",")[0]) for i in h]


def test_standard_priors_overrides():
    h = standard_hypotheses({"normal": 0.5})
    total = 0.5 + 0.10 + 0.03 + 0.02 + 0.05
    assert math.isclose(sum(h.values()), 1.0)
    assert h["46,XY"] == pytest.approx(0.25 / total)
    assert h["45,X"] == pytest.approx(0.05 / 4 / total)
    no_mono = standard_hypotheses({"monosomy": 0})
    assert len(no_mono) == 50 and not any(i.startswith("45,X") and "-" in i for i in no_mono)
    assert math.isclose(sum(no_mono.values()), 1.0)
    with pytest.raises(ValueError, match="unknown prior group"):
        standard_hypotheses({"trisomy": 0.1})
    with pytest.raises(ValueError, match="non-negative"):
        standard_hypotheses({"sex": -0.1})
    with pytest.raises(ValueError, match="every group weight is 0"):
        standard_hypotheses({g: 0 for g in DEFAULT_GROUP_PRIORS})


def test_resolve_hypotheses_forms():
    assert resolve_hypotheses("standard") == standard_hypotheses()
    assert resolve_hypotheses({"standard": None}) == standard_hypotheses()
    assert resolve_hypotheses({"standard": {"sex": 0.1}}) == standard_hypotheses({"sex": 0.1})
    explicit = resolve_hypotheses(OLD_PRIORS)  # the existing params.yaml form keeps working
    assert list(explicit) == list(OLD_PRIORS) and math.isclose(sum(explicit.values()), 1.0)
    assert explicit["46,XX"] == pytest.approx(0.40 / sum(OLD_PRIORS.values()))
    assert [h.iscn for h in make_hypotheses(explicit, CLASSES)] == [h.iscn for h in OLD]
    assert resolve_hypotheses(["46,XX", "46,XY"]) == {"46,XX": 0.5, "46,XY": 0.5}
    for bad, match in [({"46,YX": 1}, "write '46,YX' as '46,XY'"), ({"46,XX": 0}, "positive"),
                       ({"standard": {}, "47,XXX": 1}, "cannot be mixed"), ("normal", "not a hypothesis list"),
                       ({}, "empty"), (None, "give 'standard'"), ({"standard": 0.5}, "group: weight"),
                       ({"46,XX,del(5)(p14)": 1}, "not a numerical ISCN")]:
        with pytest.raises(ValueError, match=match):
            resolve_hypotheses(bad)


# --------------------------------------------------------------------- calls outside the old list
@pytest.mark.parametrize("labels,truth,old_call", [
    (cell_labels("XXX"), "47,XXX", "46,XX"),                # the third X was an "extra" crop
    (cell_labels("XY", drop=["19"]), "45,XY,-19", "46,XY"),  # the 19 slot was "missing"
    (cell_labels("XYY"), "47,XYY", "46,XY"),
])
def test_off_list_karyotypes_called_exactly_with_standard_hypotheses(labels, truth, old_call):
    probs = confident(labels)
    argmax_counts = {c: 0 for c in CLASSES}
    for i in probs.argmax(1):
        argmax_counts[CLASSES[i]] += 1
    assert counts_to_iscn(argmax_counts) == truth  # per-crop argmax has the right counts
    old = karyotype_cell(probs, OLD)
    assert old.karyotype == old_call  # the 10-hypothesis list forces it into a wrong call
    new = karyotype_cell(probs, STANDARD)
    assert new.karyotype == truth
    assert new.best.n_extra == 0 and new.best.missing == []
    assert new.final_labels(probs, CLASSES) == labels
    assert new.runner_up.hypothesis.iscn == old_call and new.margin > 1.0


def test_monosomy_margin_is_the_missing_penalty_less_the_prior_ratio():
    probs = confident(cell_labels("XY", drop=["19"]))
    pri = standard_hypotheses()
    c = karyotype_cell(probs, STANDARD, missing_penalty=8.0)
    assert c.margin == pytest.approx(8.0 - math.log(pri["46,XY"] / pri["45,XY,-19"]), abs=1e-9)
    # a cheaper missing slot (below ln(0.40 / 0.000455) = 6.78 nats) prefers "46,XY with a lost 19"
    assert karyotype_cell(probs, STANDARD, missing_penalty=6.0).karyotype == "46,XY"


# ---------------------------------------------------------------------------------------- no fit
def test_unrecognisable_crops_are_referred():
    rng = np.random.default_rng(7)
    clean = [karyotype_cell(simulated(cell_labels("XX" if i % 2 else "XY"), rng), STANDARD) for i in range(50)]
    assert all(c.fits for c in clean)  # no threshold: every cell fits
    values = [c.per_crop_log_likelihood for c in clean]
    assert values == [mean_log_likelihood(c.best) for c in clean]
    assert values == [c.best.log_likelihood / 46 for c in clean]
    threshold = fit_nofit_threshold(values)  # 1 % quantile: between the two lowest of 50
    lo = sorted(values)
    assert lo[0] < threshold < lo[1] and threshold == pytest.approx(np.quantile(values, 0.01))

    labels = cell_labels("XY")
    probs = simulated(labels, rng)
    new_clean = karyotype_cell(probs, STANDARD, nofit_threshold=threshold)
    assert new_clean.fits and not new_clean.referred and new_clean.reason == ""
    junk = probs.copy()
    junk[[3, 10, 17, 25, 33, 41]] = 1 / len(CLASSES)  # six crops the classifier cannot place at all
    bad = karyotype_cell(junk, STANDARD, nofit_threshold=threshold)
    x = bad.per_crop_log_likelihood
    assert x < threshold and not bad.fits and bad.referred
    assert bad.reason == f"no hypothesis fits (per-crop log-likelihood {x:.4g} < threshold {threshold:.4g})"
    assert bad.karyotype in standard_hypotheses()  # the call is kept for the record
    # six uniform crops cost about 6·ln 24 / 46 = 0.41 nats per crop over a clean cell
    assert new_clean.per_crop_log_likelihood - x == pytest.approx(6 * math.log(24) / 46, abs=0.1)


def test_fit_nofit_threshold_checks():
    assert fit_nofit_threshold([-0.3, -0.1, -0.2], quantile=0.0) == -0.3
    assert fit_nofit_threshold(np.linspace(-1, 0, 101), quantile=0.05) == pytest.approx(-0.95)
    for bad in ([], [0.1, math.nan]):
        with pytest.raises(ValueError):
            fit_nofit_threshold(bad)
    with pytest.raises(ValueError, match="quantile"):
        fit_nofit_threshold([0.1], quantile=1.0)


# ---------------------------------------------------------------------------------------- metrics
def test_karyotype_metrics_hand_made():
    cells = [  # (truth, called, referred)
        ("46,XX", "46,XX", False),          # 1 exact, specificity hit
        ("46,XY", "46,XY", True),           # 2 referred: not exact, not a specificity hit
        ("46,XY", "47,XY,+21", False),      # 3 false positive
        ("46,XX", "46,XY", False),          # 4 numerically normal (specificity hit) but not exact
        ("47,XX,+21", "47,XX,+21", False),  # 5 exact, sensitivity hit
        ("47,XXX", "47,XX,+21", False),     # 6 wrong abnormal call: any-abnormal yes, sensitivity no
        ("45,XY,-19", "46,XY", False),      # 7 missed
        ("47,XXX", "47,XXX", True),         # 8 right but referred: not a hit
        ("47,XYY", "47,XYY", False),        # 9 exact, sensitivity hit
        (None, "46,XX", False),             # no truth: left out
        ("", "47,XXY", True),               # no truth: left out
    ]
    m = karyotype_metrics(*map(list, zip(*cells)))
    assert m == {
        "cells": 9,
        "exact_karyotype_accuracy": round(3 / 9, 6),
        "exact_karyotype_accuracy_abnormal": 0.4,
        "abnormal_cells": 5,
        "normal_cells": 4,
        "sensitivity": 0.4,                 # 2/5 — the lenient figure would say 3/5
        "any_abnormal_call_rate": 0.6,
        "specificity": 0.5,
        "referred": 2,
        "referred_abnormal": 1,
        "referred_normal": 1,
        "accuracy_retained": round(3 / 7, 6),
        "per_karyotype": {
            "46,XX": {"n": 2, "exact": 1, "referred": 0},
            "46,XY": {"n": 2, "exact": 0, "referred": 1},
            "47,XXX": {"n": 2, "exact": 0, "referred": 1},
            "45,XY,-19": {"n": 1, "exact": 0, "referred": 0},
            "47,XX,+21": {"n": 1, "exact": 1, "referred": 0},
            "47,XYY": {"n": 1, "exact": 1, "referred": 0},
        },
    }


def test_karyotype_metrics_empty_denominators():
    m = karyotype_metrics(["46,XX", "46,XY"], ["46,XX", "46,XY"], [True, True])
    assert m["sensitivity"] is None and m["exact_karyotype_accuracy_abnormal"] is None
    assert m["any_abnormal_call_rate"] is None and m["accuracy_retained"] is None
    assert m["specificity"] == 0.0 and m["referred_normal"] == 2 and m["exact_karyotype_accuracy"] == 0.0
    m = karyotype_metrics([None], ["46,XX"], [False])
    assert m["cells"] == 0 and m["exact_karyotype_accuracy"] is None and m["specificity"] is None
    assert m["per_karyotype"] == {}
    with pytest.raises(ValueError, match="2 truths, 1 calls"):
        karyotype_metrics(["46,XX", "46,XY"], ["46,XX"], [False])


# ------------------------------------------------------------------------------- assignment engine
def square_reference(log_probs, hypothesis, extra, missing):
    """The (n+m)×(m+n) formulation of the module docstring: the optimum the rectangular one must match."""
    n, slots = len(log_probs), hypothesis.slots
    m = len(slots)
    cost = np.zeros((n + m, m + n))
    cost[:n, :m] = -log_probs[:, slots]
    cost[:n, m:] = extra
    cost[n:, :m] = missing
    r, c = linear_sum_assignment(cost)
    return -float(cost[r, c].sum())


@pytest.mark.parametrize("seed", range(4))
def test_rectangular_assignment_matches_the_square_optimum(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 50))
    probs = rng.dirichlet(np.full(len(CLASSES), 0.2), n)
    lp = log_probabilities(probs)
    for h in STANDARD[::9]:
        for extra, missing in ((8.0, 8.0), (2.0, 3.0)):
            a = assign(lp, h, extra, missing)
            assert a.log_likelihood == pytest.approx(square_reference(lp, h, extra, missing), abs=1e-8)
            # the assignment it returns achieves that log-likelihood
            slot_part = sum(lp[i, c] for i, c in enumerate(a.crop_class) if c != EXTRA)
            assert a.log_likelihood == pytest.approx(slot_part - extra * a.n_extra - missing * len(a.missing))
            assert len(a.hypothesis.slots) - len(a.missing) == n - a.n_extra


def test_log_probabilities_once_per_cell_and_fast(monkeypatch):
    calls = []
    real = assign_mod.log_probabilities
    monkeypatch.setattr(assign_mod, "log_probabilities", lambda *a, **k: calls.append(1) or real(*a, **k))
    probs = simulated(cell_labels("XY"), np.random.default_rng(0))
    hyp = STANDARD[:90]
    karyotype_cell(probs, hyp)
    assert len(calls) == 1
    times = []
    for _ in range(5):
        t = time.perf_counter()
        karyotype_cell(probs, hyp)
        times.append(time.perf_counter() - t)
    assert min(times) < 0.5  # 5–18 ms measured (2 cores, load average ~6); a generous bound


def test_outcome_rates_equal_karyotype_metrics_on_every_subset():
    """The bootstrap counts precomputed per-cell outcomes; on any resample they give karyotype_metrics' rates."""
    import numpy as np

    from genediag.karyotyping.calls import cell_outcomes, karyotype_metrics, outcome_rates

    truth = ["46,XX", "47,XX,+21", "47,XY,+18", "46,XY", "45,X", "", "47,XXY", "46,XX", "47,XX,+21"]
    called = ["46,XX", "47,XX,+21", "46,XY", "46,XY", "45,X", "46,XX", "47,XXY", "47,XX,+13", "47,XX,+18"]
    referred = [False, False, False, True, False, False, True, False, False]
    keep, facts = cell_outcomes(truth, called, referred)
    assert list(keep) == [0, 1, 2, 3, 4, 6, 7, 8]   # the cell without truth is left out
    rng = np.random.default_rng(0)
    for _ in range(20):
        pick = rng.integers(0, len(keep), len(keep))
        sub = [keep[i] for i in pick]
        slow = karyotype_metrics([truth[i] for i in sub], [called[i] for i in sub], [referred[i] for i in sub])
        fast = outcome_rates(**{k: v[pick] for k, v in facts.items()})
        assert {k: slow[k] for k in fast} == fast
