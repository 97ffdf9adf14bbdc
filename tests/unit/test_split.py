import numpy as np
import pandas as pd
import pytest

from genediag.config import ConfigError
from genediag.data.split import SplitError, audit_leakage, stratification_key, stratified_group_split


def _cohort(n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for c in range(int(rng.integers(1, 4))):
            for label in ["a", "b", "c"] + (["rare"] if p % 8 == 0 else []):
                rows.append((f"P{p}", label))
    return pd.DataFrame(rows, columns=["group_id", "label"])


@pytest.mark.parametrize("ratios", [{"train": 0.8, "val": 0.1, "test": 0.1}, {"train": 0.9, "test": 0.1},
                                    {"train": 0.64, "val": 0.16, "test": 0.2}])
def test_groups_never_straddle_and_ratios_are_close(ratios):
    df = _cohort()
    split = stratified_group_split(df["label"], df["group_id"], ratios, seed=3)
    df = df.assign(split=split)
    assert (df.groupby("group_id")["split"].nunique() == 1).all()
    shares = df["split"].value_counts(normalize=True)
    for name, r in ratios.items():
        assert abs(shares[name] - r) < 0.08, (name, shares[name], r)
    # the rare class (5 patients) reaches every split
    assert set(df.loc[df["label"] == "rare", "split"]) == set(ratios)


def test_split_is_seeded():
    df = _cohort()
    r = {"train": 0.8, "val": 0.1, "test": 0.1}
    a = stratified_group_split(df["label"], df["group_id"], r, seed=1)
    b = stratified_group_split(df["label"], df["group_id"], r, seed=1)
    c = stratified_group_split(df["label"], df["group_id"], r, seed=2)
    assert (a == b).all() and not (a == c).all()


def test_class_too_small_is_named():
    df = _cohort(n_patients=20)
    df = pd.concat([df, pd.DataFrame([("P0", "lonely"), ("P1", "lonely")], columns=["group_id", "label"])])
    with pytest.raises(SplitError, match=r"'lonely' \(2 groups\)"):
        stratified_group_split(df["label"], df["group_id"], {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)


def test_bad_ratios():
    with pytest.raises(ConfigError, match="add up to 1"):
        stratified_group_split(["a"], ["g"], {"train": 0.8, "test": 0.3}, seed=0)


def test_leakage_audit_catches_same_image_in_two_splits():
    df = pd.DataFrame({"path": ["x/a.png", "y/a.png"], "sha256": ["h", "h"], "group_id": ["P1", "P2"],
                       "split": ["train", "test"]})
    with pytest.raises(SplitError, match="same sha256"):
        audit_leakage(df)
    audit_leakage(df.assign(sha256=["h1", "h2"]))


def test_few_groups_still_fill_every_split():
    """7 patients, 80/10/10: each split gets a patient (a naive greedy leaves val empty)."""
    df = pd.DataFrame([(f"P{p}", lab) for p in range(7) for lab in ["a", "b", "X"] + (["Y"] if p < 3 else ["X"])],
                      columns=["group_id", "label"])
    split = stratified_group_split(df["label"], df["group_id"], {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    assert set(split) == {"train", "val", "test"}
    assert set(df.assign(split=split).loc[df["label"] == "Y", "split"]) == {"train", "val", "test"}


def test_class_with_few_patients_reaches_every_split():
    """A rare type carried by 3 patients (each with many items of common classes) lands in train, val and test, even
    though its 80/10/10 quota deficit alone would put all three patients in train."""
    labels, groups = [], []
    for p in range(40):
        for i in range(20):
            labels.append(str(i % 4))
            groups.append(f"P{p:02d}")
    for p in range(40, 43):  # the rare type's patients: 10 rare items + the common classes
        for i in range(30):
            labels.append("rare" if i < 10 else str(i % 4))
            groups.append(f"P{p:02d}")
    for trials in (0, 200):  # 0: the stratified candidate alone must get it right
        out = stratified_group_split(labels, groups, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0, trials=trials)
        assert {s for s, lab in zip(out, labels) if lab == "rare"} == {"train", "val", "test"}
    by_group = pd.DataFrame({"g": groups, "s": out}).groupby("g")["s"].nunique()
    assert (by_group == 1).all()


def test_stratify_on_label_and_y_chromosome():
    """Karyograms stratified on label × Y: every split gets abnormal cases with and without a Y, so "no Y →
    abnormal" cannot stand in for the abnormality in one split more than in the cohort."""
    rows = []
    for g in range(40):
        abnormal, y = g % 2 == 0, (g // 2) % 2 == 0
        kt = ("47," if abnormal else "46,") + ("XY" if y else "XX") + (",+21" if abnormal else "")
        rows += [{"label": "abnormal" if abnormal else "normal", "group_id": f"P{g}", "karyotype": kt}] * 2
    df = pd.DataFrame(rows)
    key = stratification_key(df, ["label", "y_chromosome"])
    assert sorted(set(key)) == ["abnormal|Y", "abnormal|noY", "normal|Y", "normal|noY"]
    assert key.iloc[0] == "abnormal|Y" and stratification_key(df, "label").iloc[0] == "abnormal"
    split = stratified_group_split(key, df["group_id"], {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    for s in ("train", "val", "test"):
        assert set(key[split == s]) == set(key), s  # every stratum in every split
    with pytest.raises(SplitError, match="karyotype"):
        stratification_key(df.drop(columns="karyotype"), ["label", "y_chromosome"])
    with pytest.raises(SplitError, match="no column 'sex'"):
        stratification_key(df, ["label", "sex"])


# --------------------------------------------------------------------------------- fixed splits, near copies
from genediag.data.split import assign_splits, merge_groups, near_duplicate_pairs  # noqa: E402
from genediag.schema import SPLIT, validate  # noqa: E402


def _split_cfg(**kw):
    return validate(kw, SPLIT, "split")


def test_fixed_test_rows_leave_the_other_rows_split_unchanged():
    df = _cohort().assign(fixed_split="")
    before, _ = assign_splits(df, _split_cfg(seed=4))
    extra = pd.DataFrame([(f"T{p}", lab, "test") for p in range(30) for lab in ("a", "b", "c")],
                         columns=["group_id", "label", "fixed_split"])
    after, info = assign_splits(pd.concat([df, extra], ignore_index=True), _split_cfg(seed=4))
    assert list(after[: len(df)]) == list(before)          # the original patients: the same split
    assert set(after[len(df):]) == {"test"} and info["fixed_rows"] == 90


def test_a_patient_cannot_be_half_fixed():
    df = pd.DataFrame({"group_id": ["P1", "P1", "P2", "P3", "P4"], "label": ["a"] * 5,
                       "fixed_split": ["test", "", "", "", ""]})
    with pytest.raises(SplitError, match="'P1' has rows with and without a fixed split"):
        assign_splits(df, _split_cfg(ratios={"train": 0.5, "test": 0.5}))


def test_near_copies_in_two_patients_land_in_one_split_and_the_audit_checks_it():
    """A copy with one pixel changed, filed under another patient: in 10 of 10 seeds both copies share a split
    (joined groups), and an audit of a split that separates them fails."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 120, (60, 32, 32)).astype(np.uint8)     # 60 different textured images
    images[:, 8:24, 8:24] += 100
    images[59] = images[3]
    images[59][5, 5] = 255 - images[59][5, 5]                         # the one-pixel copy
    df = pd.DataFrame({"group_id": [f"P{i // 2}" for i in range(59)] + ["P99"], "label": ["a", "b"] * 30,
                       "path": [f"{i}.png" for i in range(60)]})
    pairs = near_duplicate_pairs(images)
    assert pairs == [(3, 59)]
    for seed in range(10):
        split, info = assign_splits(df, _split_cfg(seed=seed, ratios={"train": 0.6, "val": 0.2, "test": 0.2}), pairs=pairs)
        assert split[3] == split[59] and info["groups_joined_by_near_duplicates"] == 1
    forced = df.assign(split=["train"] * 59 + ["test"])
    with pytest.raises(SplitError, match="near-identical images in different splits, e.g. 3.png"):
        audit_leakage(forced, near_pairs=pairs)
    assert merge_groups(df["group_id"], pairs).iloc[59] == merge_groups(df["group_id"], pairs).iloc[3]


def test_independent_look_alikes_are_not_copies():
    """Two captures of the same scene with their own noise differ in most pixels: not a copy."""
    rng = np.random.default_rng(1)
    scene = np.zeros((32, 32), np.float32)
    scene[8:24, 10:22] = 180
    a = np.clip(scene + rng.normal(0, 3, scene.shape), 0, 255).astype(np.uint8)
    b = np.clip(scene + rng.normal(0, 3, scene.shape), 0, 255).astype(np.uint8)
    assert near_duplicate_pairs(np.stack([a, b])) == []


def test_hold_out_people_keeps_every_held_out_person_whole():
    df = pd.DataFrame([(f"p{k}", f"p{k}", f"p{k}/{j}.png") for k in range(20) for j in range(5)],
                      columns=["group_id", "label", "path"])
    split, _ = assign_splits(df, _split_cfg(method="hold_out_people",
                                            ratios={"train": 0.6, "val": 0.15, "test": 0.25}))
    df["split"] = split
    held = set(df.loc[df["split"] == "test", "group_id"])
    assert len(held) == 5 and not held & set(df.loc[df["split"] != "test", "group_id"])
    rest = df[df["split"] != "test"]
    assert (rest.groupby("group_id")["split"].nunique() == 2).all()   # every other person in train and val
