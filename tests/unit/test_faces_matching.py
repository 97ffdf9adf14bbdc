"""GestaltMatcher-style matching (genediag.faces.matching) on hand-made embeddings whose answers are known in closed
form: nearest-neighbour and centroid similarities, the rank of the true class (ties against it), top-k with its
people-bootstrap interval, the leave-syndromes-out gallery and when that protocol applies, and the gallery file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genediag.config import ConfigError
from genediag.faces import matching as M

EVIDENCE = {"bootstrap": 200, "seed": 0}
CFG = {"method": "nearest_neighbour", "top_k": [1, 2, 3], "gallery_splits": ["train", "val"],
       "leave_out": {"syndromes": [], "gallery_people": 1, "seed": 0}}


def unit_vec(deg: float) -> list[float]:
    return [np.cos(np.radians(deg)), np.sin(np.radians(deg))]


def test_nearest_neighbour_and_centroid_similarities():
    # class a: photos at 0° and 90°; class b: one photo at 180°; a query at 30°
    gallery = np.array([unit_vec(0), unit_vec(90), unit_vec(180)]) * [[2.0], [0.5], [3.0]]   # norms do not matter
    nn_sim, cen_sim = M.class_similarities(np.array([unit_vec(30)]), gallery, ["a", "a", "b"], ["a", "b", "c"])
    assert nn_sim[0, 0] == pytest.approx(np.cos(np.radians(30)))          # nearest a-photo: 30° away
    assert nn_sim[0, 1] == pytest.approx(np.cos(np.radians(150)))
    assert cen_sim[0, 0] == pytest.approx(np.cos(np.radians(15)))         # a's centroid direction: 45°
    assert cen_sim[0, 1] == pytest.approx(np.cos(np.radians(150)))
    assert nn_sim[0, 2] == -np.inf and cen_sim[0, 2] == -np.inf            # no gallery photo of c


def test_true_class_rank_counts_ties_against_the_truth():
    sim = np.array([[0.9, 0.5, 0.1],     # truth 0: first
                    [0.9, 0.5, 0.1],     # truth 2: third
                    [0.7, 0.7, 0.1],     # truth 1, tied with class 0: second (a tie is not a win)
                    [0.2, 0.2, 0.2]])    # truth 0, all tied: third
    assert M.true_class_rank(sim, np.array([0, 2, 1, 0])).tolist() == [0, 2, 1, 2]


def test_topk_table_values_chance_and_interval():
    ranks = np.array([0, 0, 1, 3, 0, 2])            # top-1 3/6, top-2 4/6, top-3 5/6
    groups = np.array(["p1", "p1", "p2", "p3", "p4", "p5"])
    t = M.topk_table(ranks, groups, [1, 2, 3], 4, 500, 0)
    assert (t["top1"], t["top2"], t["top3"]) == (0.5, pytest.approx(4 / 6, abs=1e-6), pytest.approx(5 / 6, abs=1e-6))
    assert t["chance"] == {"top1": 0.25, "top2": 0.5, "top3": 0.75}
    assert t["queries"] == 6 and t["query_people"] == 5
    lo, hi = t["ci95"]["top1"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0 and hi - lo > 0.2                  # five people: a wide interval
    # every query of one person resampled together: one person's photos never split
    assert M.topk_table(np.zeros(4, int), np.array(["a"] * 4), [1], 2, 100, 0)["ci95"]["top1"] == [1.0, 1.0]


def _toy_table():
    """Three syndromes on the unit circle (a ≈ 0°, b ≈ 120°, c ≈ 240°), 4 people each with one photo: people 0-1
    gallery (train/val), 2-3 test; one test photo of c sits at 200°, nearer a b photo at 150°."""
    rows, feats = [], []
    centre = {"a": 0, "b": 120, "c": 240}
    for cls, deg in centre.items():
        for person in range(4):
            split = ("train", "val", "test", "test")[person]
            angle = deg + (10 * person - 15)
            if cls == "c" and person == 3:
                angle = 200
            if cls == "b" and person == 1:
                angle = 150
            rows.append({"label": cls, "group_id": f"{cls}{person}", "split": split, "path": f"{cls}/{person}.jpg"})
            feats.append(unit_vec(angle))
    return np.array(feats), pd.DataFrame(rows)


def test_match_metrics_all_photos_protocol():
    feats, table = _toy_table()
    out = M.match_metrics(feats, table, ["a", "b", "c"], CFG, EVIDENCE)
    nn_ = out["all"]["nearest_neighbour"]
    # queries: a at 5°, 15°; b at 125°, 135°; c at 245°, 200°. Gallery: a -15°, -5°; b 105°, 150°; c 225°, 235°.
    # c@200° is 25° from c@225° and 50° from b@150°: still right. Every query's nearest photo is its own class.
    assert nn_["top1"] == 1.0 and nn_["queries"] == 6 and out["all"]["gallery_photos"] == 6
    assert out["all"]["classes"] == 3 and out["method"] == "nearest_neighbour"
    assert out["all"]["centroid"]["top1"] == 1.0 and out["all"]["centroid"]["top3"] == 1.0
    assert "leave_out" not in out


def test_leave_out_gallery_keeps_a_few_people_of_the_held_out_syndromes():
    labels = np.array(["a"] * 6 + ["b"] * 6)
    groups = np.array(["a1", "a1", "a2", "a3", "a4", "a5", "b1", "b1", "b2", "b3", "b4", "b5"])
    in_gallery = np.array([True] * 5 + [False] + [True] * 5 + [False])
    mask = M.leave_out_gallery(labels, groups, in_gallery, ["b"], people=2, seed=0)
    assert mask[:5].all() and not mask[5]                                   # the other syndrome: every gallery photo
    chosen = groups[6:][mask[6:]]
    assert len(chosen) == 2 and len(set(chosen)) == 2                        # two people of b, one photo each
    assert mask.tolist() == M.leave_out_gallery(labels, groups, in_gallery, ["b"], 2, 0).tolist()   # seeded
    with pytest.raises(ConfigError, match="fewer than gallery_people"):
        M.leave_out_gallery(labels, groups, in_gallery, ["b"], people=9, seed=0)


def test_leave_out_applies_only_when_the_model_never_trained_on_them():
    feats, table = _toy_table()
    cfg = {**CFG, "leave_out": {"syndromes": ["c"], "gallery_people": 1, "seed": 0}}
    trained_on_all = M.match_metrics(feats, table, ["a", "b", "c"], cfg, EVIDENCE)["leave_out"]
    assert trained_on_all["applicable"] is False and "['c']" in trained_on_all["reason"]
    lo = M.match_metrics(feats, table, ["a", "b"], cfg, EVIDENCE)["leave_out"]
    assert lo["applicable"] is True
    assert lo["gallery_photos"] == 4 + 1                                     # a, b: 2 each; c: one person's photo
    assert lo["gallery_people"] == 5 and lo["people_per_held_out_syndrome"] == 1
    assert lo["nearest_neighbour"]["queries"] == 2                           # the two c test photos
    assert lo["seen_queries"]["nearest_neighbour"]["queries"] == 4
    untrained = M.match_metrics(feats, table, [], cfg, EVIDENCE)["leave_out"]   # raw embeddings (FaceNet)
    assert untrained["applicable"] is True
    with pytest.raises(ConfigError, match="not syndromes of the dataset"):
        M.match_metrics(feats, table, [], {**cfg, "leave_out": {**cfg["leave_out"], "syndromes": ["zzz"]}}, EVIDENCE)


def test_leave_out_top1_in_closed_form():
    """Held-out c with a single gallery photo, moved to 290°; c's other photos (235°, 245°, 200°) are the queries.
    Gallery: a at -15°/-5°, b at 105°/150°, c at 290°. 235° → c (55° vs b 85°), 245° → c (45° vs b 95°),
    200° → b (50°) before c (90°): top-1 = 2/3, top-2 = 1."""
    feats, table = _toy_table()
    c0 = table.index[(table["label"] == "c") & (table["group_id"] == "c0")][0]
    feats = feats.copy()
    feats[c0] = unit_vec(290)
    table.loc[table["label"] == "c", "split"] = ["train", "test", "test", "test"]   # c: one gallery person only
    cfg = {**CFG, "leave_out": {"syndromes": ["c"], "gallery_people": 1, "seed": 0}}
    lo = M.match_metrics(feats, table, ["a", "b"], cfg, EVIDENCE)["leave_out"]["nearest_neighbour"]
    assert lo["queries"] == 3 and lo["top1"] == pytest.approx(2 / 3, abs=1e-6) and lo["top2"] == 1.0


def test_gallery_round_trip_and_predict_ranking(tmp_path):
    feats, table = _toy_table()
    path = M.save_gallery(tmp_path / "gallery.npz", feats * 3.0, table, ["train", "val"], "toy")
    g = M.load_gallery(path)                                                  # np.load(allow_pickle=False)
    assert g["features"].shape == (6, 2) and np.allclose(np.linalg.norm(g["features"], axis=1), 1.0)
    assert sorted(set(g["label"].tolist())) == ["a", "b", "c"] and str(g["method"]) == "nearest_neighbour"
    match = M.nearest_neighbour_matches(np.array([unit_vec(100)]), g, k=2)[0]
    assert [r["class"] for r in match["ranked"]] == ["b", "a"]                # b@105° (5°), then a@-5° (105°)
    assert match["ranked"][0]["similarity"] == pytest.approx(np.cos(np.radians(5)), abs=1e-6)
    assert match["ranked"][0]["nearest_photo"] == "b/0.jpg" and match["gallery_photos"] == 6
    assert match["centroid_ranked"][0]["class"] == "b"
    with pytest.raises(ValueError, match="belongs to another model"):
        M.nearest_neighbour_matches(np.ones((1, 3)), g)
