import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from genediag.evaluation.uncertainty import (
    apply_temperature, bootstrap_ci, delong_test, expected_calibration_error, fit_temperature,
    group_bootstrap_indices, mcnemar_test, paired_bootstrap, referral_curve, reliability_table, seed_summary,
    wilson_interval,
)


def accuracy(correct):
    return {"accuracy": float(np.mean(correct))}


def rank_auc(y, score):  # Mann-Whitney AUC: ~50x faster than roc_auc_score inside bootstrap loops
    m = int(y.sum())
    n = len(y) - m
    return (rankdata(score)[y == 1].sum() - m * (m + 1) / 2) / (m * n) if m and n else None


def auc_metrics(y, score, pred):
    return {"accuracy": float(np.mean(pred == y)), "auc": rank_auc(y, score)}


def test_rank_auc_is_roc_auc():
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 200), np.round(rng.random(200), 1)
    assert rank_auc(y, s) == pytest.approx(roc_auc_score(y, s)) and rank_auc(np.ones(3), s[:3]) is None


# ---------------------------------------------------------------- bootstrap


def test_row_level_bootstrap_of_a_proportion_matches_wilson():
    correct = np.zeros(400, dtype=bool)
    correct[:120] = True
    ci = bootstrap_ci(accuracy, np.arange(400), {"correct": correct}, n_resamples=4000, seed=1)["accuracy"]
    lo, hi = wilson_interval(120, 400)
    assert lo == pytest.approx(0.2568, abs=1e-3) and hi == pytest.approx(0.3474, abs=1e-3)  # textbook values
    assert abs(ci[0] - lo) < 0.01 and abs(ci[1] - hi) < 0.01


def test_resampling_takes_whole_patients_and_widens_the_interval():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 30)
    rng.shuffle(groups)  # a patient's rows need not be adjacent
    patient_ok = rng.random(20) < 0.6
    correct = patient_ok[groups]  # 30 identical rows per patient
    rows_of = {g: set(np.flatnonzero(groups == g)) for g in range(20)}
    for idx in group_bootstrap_indices(groups, 50, seed=3):
        assert len(idx) % 30 == 0
        for block in idx.reshape(-1, 30):  # contiguous whole-patient blocks
            g = groups[block[0]]
            assert set(block) == rows_of[g] and len(set(block)) == 30
    patient = bootstrap_ci(accuracy, groups, {"correct": correct}, n_resamples=1000, seed=0)["accuracy"]
    row = bootstrap_ci(accuracy, np.arange(600), {"correct": correct}, n_resamples=1000, seed=0)["accuracy"]
    # sd ratio sqrt(600/20) ≈ 5.5
    assert patient[1] - patient[0] > 3 * (row[1] - row[0])


def test_metric_undefined_in_some_resamples():
    flag = np.zeros(40)
    flag[0] = 1  # row 0 is drawn at least once in ~64 % of resamples, at least twice in ~26 %

    def metric(flag):
        return {"once": 1.0 if flag.sum() >= 1 else None, "twice": float("nan") if flag.sum() < 2 else 2.0}

    ci = bootstrap_ci(metric, np.arange(40), {"flag": flag}, n_resamples=400, seed=0)
    assert ci == {"once": [1.0, 1.0], "twice": None}


def test_bootstrap_is_deterministic_and_seed_dependent():
    rng = np.random.default_rng(5)
    n = 300
    groups = rng.integers(0, 60, n)
    y = rng.integers(0, 2, n)
    data = {"y": y, "score": y + rng.normal(0, 1.5, n), "pred": rng.integers(0, 2, n)}
    one = bootstrap_ci(auc_metrics, groups, data, n_resamples=200, seed=7)
    assert one == bootstrap_ci(auc_metrics, groups, data, n_resamples=200, seed=7)
    assert one != bootstrap_ci(auc_metrics, groups, data, n_resamples=200, seed=8)
    a = [i.tolist() for i in group_bootstrap_indices(groups, 5, seed=2)]
    assert a == [i.tolist() for i in group_bootstrap_indices(groups, 5, seed=2)]
    data_b = {**data, "pred": y}
    assert paired_bootstrap(auc_metrics, groups, data, data_b, 100, 4, 0.95) == \
        paired_bootstrap(auc_metrics, groups, data, data_b, 100, 4, 0.95)


def test_paired_bootstrap_identical_models_are_indistinguishable():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    data = {"y": y, "score": rng.random(200), "pred": rng.integers(0, 2, 200)}
    res = paired_bootstrap(auc_metrics, np.arange(200) // 4, data, dict(data), n_resamples=200, seed=0, level=0.95)
    for key in ("accuracy", "auc"):
        assert res[key]["diff"] == 0 and res[key]["ci95"] == [0.0, 0.0]
        assert res[key]["p_value"] == 1.0 and res[key]["distinguishable"] is False
        assert res[key]["a"] == res[key]["b"]


def test_paired_bootstrap_detects_a_clearly_better_model():
    rng = np.random.default_rng(1)
    n = 400
    groups = np.arange(n) // 4  # 100 patients
    y = rng.integers(0, 2, n)
    weak = np.where(rng.random(n) < 0.6, y, 1 - y)
    strong = np.where(rng.random(n) < 0.9, y, 1 - y)
    a = {"y": y, "score": weak + rng.normal(0, 0.1, n), "pred": weak}
    b = {"y": y, "score": strong + rng.normal(0, 0.1, n), "pred": strong}
    res = paired_bootstrap(auc_metrics, groups, a, b, n_resamples=500, seed=0, level=0.95)
    acc = res["accuracy"]
    assert acc["a"] == pytest.approx(np.mean(weak == y), abs=1e-6) and acc["diff"] > 0.2
    assert acc["distinguishable"] and acc["ci95"][0] > 0 and acc["p_value"] < 0.01
    assert res["auc"]["distinguishable"]
    # swapping the models mirrors the result
    swapped = paired_bootstrap(auc_metrics, groups, b, a, n_resamples=500, seed=0, level=0.95)["accuracy"]
    assert swapped["diff"] == -acc["diff"] and swapped["ci95"] == [-acc["ci95"][1], -acc["ci95"][0]]


# ---------------------------------------------------------------- closed-form tests


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mcnemar_exact_small_example():
    a = np.array([1] * 5 + [1] * 1 + [0] * 9 + [0] * 5, dtype=bool)
    b = np.array([1] * 5 + [0] * 1 + [1] * 9 + [0] * 5, dtype=bool)
    res = mcnemar_test(a, b)
    assert (res["b"], res["c"]) == (1, 9)
    assert res["p_value"] == pytest.approx(2 * (1 + 10) / 2**10)  # 2·P(X ≤ 1), X ~ Bin(10, ½)
    assert mcnemar_test(a, a)["p_value"] == 1.0


def test_delong_hand_checked():
    y = np.array([0, 0, 1, 1, 0, 1])
    a = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    b = np.array([0.1, 0.4, 0.5, 0.8, 0.2, 0.9])
    # positives of a: 0.35 beats 2 of 3 negatives, 0.8 and 0.9 beat all → AUC (2/3 + 1 + 1)/3 = 8/9; b is perfect.
    # Structural components: a positives [2/3, 1, 1], negatives [1, 1, 2/3] (share of positives above);
    # b all ones → var(diff) = var(a_pos)/3 + var(a_neg)/3 = 2 · (1/27)/3 = 2/81.
    res = delong_test(y, a, b)
    assert res["auc_a"] == pytest.approx(8 / 9) and res["auc_b"] == 1.0
    se = np.sqrt(2 / 81)
    assert res["diff"] == pytest.approx(1 / 9)
    assert res["ci95"] == pytest.approx([1 / 9 - 1.959964 * se, 1 / 9 + 1.959964 * se], abs=1e-5)
    assert res["p_value"] == pytest.approx(0.4795, abs=1e-4)  # z = (1/9)/se = 1/√2
    same = delong_test(y, a, a)
    assert same["diff"] == 0 and same["p_value"] == 1.0


def test_delong_matches_sklearn_and_the_direct_definition():
    rng = np.random.default_rng(2)
    n = 300
    y = rng.integers(0, 2, n)
    a = np.round(y + rng.normal(0, 1.0, n), 1)  # rounding makes ties
    b = np.round(y + rng.normal(0, 0.7, n), 1)
    res = delong_test(y, a, b)
    assert res["auc_a"] == pytest.approx(roc_auc_score(y, a)) and res["auc_b"] == pytest.approx(roc_auc_score(y, b))

    def components(s):  # O(m·n) DeLong structural components
        psi = (s[y == 1][:, None] > s[y == 0][None, :]) + 0.5 * (s[y == 1][:, None] == s[y == 0][None, :])
        return psi.mean(1), psi.mean(0)

    (pa, na), (pb, nb) = components(a), components(b)
    var = np.var(pb - pa, ddof=1) / len(pa) + np.var(nb - na, ddof=1) / len(na)
    z = (res["auc_b"] - res["auc_a"]) / np.sqrt(var)
    assert res["p_value"] == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)
    with pytest.raises(ValueError):
        delong_test(np.zeros(5), a[:5], b[:5])


# ---------------------------------------------------------------- calibration


def calibrated_sample(n, c, seed):
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 2.0, (n, c))
    p = softmax(true_logits, axis=1)
    y = (p.cumsum(1) < rng.random((n, 1))).sum(1)  # y ~ Categorical(p)
    return true_logits, np.minimum(y, c - 1)


def test_ece_small_when_calibrated_large_when_overconfident():
    logits, y = calibrated_sample(20000, 4, seed=0)
    assert expected_calibration_error(softmax(logits, axis=1), y) < 0.02
    assert expected_calibration_error(softmax(3 * logits, axis=1), y) > 0.1
    t = reliability_table(softmax(logits, axis=1), y, bins=10)
    assert list(t.columns) == ["bin_lower", "bin_upper", "count", "confidence", "accuracy"]
    assert t["count"].sum() == 20000 and t["count"].iloc[:2].sum() == 0  # max prob of 4 classes ≥ 0.25
    assert np.isnan(t["accuracy"].iloc[0])


def test_ece_hand_example_and_binary_vector():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    y = np.array([0, 1, 1, 1])
    # bins of 0.5: (0.5, 1] holds all four: confidence 0.7375, accuracy 0.75 → ECE 0.0125
    assert expected_calibration_error(probs, y, bins=2) == pytest.approx(0.0125)
    # bins of 0.1: 0.9 (right), 0.8 (wrong), 0.7 (right), 0.55 (right) → (0.1 + 0.8 + 0.3 + 0.45) / 4
    assert expected_calibration_error(probs, y, bins=10) == pytest.approx(1.65 / 4)
    assert expected_calibration_error(probs[:, 1], y, bins=10) == pytest.approx(1.65 / 4)


def test_temperature_recovers_overconfidence_and_lowers_ece():
    logits, y = calibrated_sample(5000, 5, seed=1)
    t = fit_temperature(3 * logits, y)
    assert t == pytest.approx(3.0, rel=0.05)
    assert t == fit_temperature(3 * logits, y)  # deterministic
    before = expected_calibration_error(softmax(3 * logits, axis=1), y)
    after = expected_calibration_error(apply_temperature(3 * logits, t), y)
    assert after < before / 3
    assert apply_temperature(3 * logits, 3.0) == pytest.approx(softmax(logits, axis=1))


def test_temperature_binary_scores():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    two_col = np.stack([-z, z], 1) * 2.5  # softmax([-z, z]·2.5) = sigmoid(5z): over-confident by T = 5
    assert fit_temperature(two_col, y) == pytest.approx(5.0, rel=0.05)
    assert fit_temperature(4 * z, y) == pytest.approx(4.0, rel=0.05)  # (N,) class-1 logits
    assert apply_temperature(z, 1.0)[:, 1] == pytest.approx(1 / (1 + np.exp(-z)))


# ---------------------------------------------------------------- referral, seeds


def test_referral_curve_hand_example_with_ties():
    conf = [0.9, 0.5, 0.7, 0.5, 0.95]
    correct = [True, False, True, True, True]
    t = referral_curve(conf, correct)
    assert t["referred_fraction"].tolist() == [0.0, 0.4, 0.6, 0.8]  # the two 0.5s go together; "all" not a row
    assert t["retained"].tolist() == [5, 3, 2, 1]
    assert t["accuracy"].tolist() == [0.8, 1.0, 1.0, 1.0]
    assert t["threshold"].tolist() == [0.5, 0.7, 0.9, 0.95]


def test_referral_curve_informative_confidence():
    rng = np.random.default_rng(4)
    conf = rng.uniform(0.5, 1.0, 20000)
    correct = rng.random(20000) < conf
    full = referral_curve(conf, correct)
    assert len(full) == 20000 and full["referred_fraction"].iloc[0] == 0.0
    assert full["accuracy"].iloc[0] == pytest.approx(correct.mean())
    t = referral_curve(conf, correct, steps=10)
    assert t["referred_fraction"].tolist() == pytest.approx(np.arange(10) / 10)
    assert (np.diff(t["accuracy"]) > 0).all()
    assert t.equals(referral_curve(conf, correct, steps=10))


def test_seed_summary():
    runs = [{"acc": 0.8, "auc": None}, {"acc": 0.9, "auc": 0.7}, {"acc": 0.85}, {"acc": float("nan"), "auc": 0.8}]
    s = seed_summary(runs, ["acc", "auc", "f1"])
    assert s["acc"]["mean"] == pytest.approx(0.85) and s["acc"]["sd"] == pytest.approx(0.05) and s["acc"]["n"] == 3
    assert (s["acc"]["min"], s["acc"]["max"]) == (0.8, 0.9)
    assert s["auc"]["n"] == 2 and s["auc"]["sd"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert s["f1"] == {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
