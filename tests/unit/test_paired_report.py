"""Paired comparisons in the reports: two runs on the same test items, resampled by patient."""

import numpy as np
import pandas as pd

from genediag.reports.paired import compare_pair, pairwise_table


def preds(correct: np.ndarray) -> pd.DataFrame:
    n = len(correct)
    target = np.arange(n) % 2
    pred = np.where(correct, target, 1 - target)
    p1 = np.where(pred == 1, 0.9, 0.1)
    return pd.DataFrame({"index": np.arange(n), "path": [f"{i}.png" for i in range(n)],
                         "group_id": [f"P{i // 5}" for i in range(n)], "target": [["n", "a"][t] for t in target],
                         "predicted": [["n", "a"][p] for p in pred], "p_n": 1 - p1, "p_a": p1})


def write(tmp_path, run, df):
    (tmp_path / run).mkdir()
    df.to_csv(tmp_path / run / "predictions.csv", index=False)


def test_a_large_gain_is_distinguishable_and_a_one_item_change_is_not(tmp_path):
    base = np.random.default_rng(0).random(200) < 0.6
    better, one = base.copy(), base.copy()
    better[np.flatnonzero(~base)[:50]] = True
    one[np.flatnonzero(~base)[0]] = True
    for run, c in (("a", base), ("b", better), ("c", one)):
        write(tmp_path, run, preds(c))
    head, rows = pairwise_table(tmp_path, ["a", "b", "c"], {}, ["accuracy"], [("a", "b"), ("a", "c")],
                                n_resamples=300)
    assert head[-1] == "verdict"
    by_pair = {(r[0], r[1]): r for r in rows}
    assert by_pair[("a", "b")][3] == "+0.250" and by_pair[("a", "b")][-1] == "distinguishable"
    assert by_pair[("a", "c")][3] == "+0.005" and by_pair[("a", "c")][-1] == "not distinguishable"


def test_different_test_items_get_no_paired_test(tmp_path):
    a = preds(np.ones(20, bool))
    b = preds(np.ones(20, bool)).iloc[:10]
    assert compare_pair(a, b, ["accuracy"]) is None
    write(tmp_path, "a", a)
    write(tmp_path, "b", b)
    _, rows = pairwise_table(tmp_path, ["a", "b"], {}, ["accuracy"])
    assert rows == [["a", "b", "—", "—", "—", "test items differ: no paired test"]]
