"""Karyogram branch: layout-preserving augmentation, balancing without leakage, the thesis head and trainable
variants, Monte-Carlo dropout, the hyper-parameter search, ROC metrics and the report's ISCN parsing."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from genediag.config import ConfigError
from genediag.karyograms.augment import apply_params, augment, best_layout_match, blank_top, layout_preserved
from genediag.karyograms.balance import balance_dataset, plan_counts
from genediag.karyograms.mc_dropout import (enable_mc_dropout, mc_dropout_predict, mc_summary, referral_curve,
                                            referral_metrics)
from genediag.models import create_model
from genediag.schema import KARYOGRAM_AUGMENT, resolve_run, validate


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small nets on 2 shared cores: one intra-op thread is faster and steadier than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def augment_cfg(**over):
    """A ``balance.<name>.augment`` entry with the schema's defaults filled in."""
    return validate(over, KARYOGRAM_AUGMENT, "test.augment")


def karyogram_like(seed=0, size=96):
    """Dark-on-white image with an asymmetric arrangement of banded bars in rows (like a karyogram)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((size, size), 255, np.uint8)
    for r, y0 in enumerate(int(f * size) for f in (0.08, 0.33, 0.58, 0.8)):
        x = 4 + r * 3
        while x < size - 8:
            h = int(rng.integers(size // 12, size // 5 - r * size // 40))
            w = int(rng.integers(3, 6))
            bands = rng.integers(40, 200, size=h).astype(np.uint8)
            img[y0:y0 + h, x:x + w] = bands[:, None]
            x += w + int(rng.integers(2, 9))
    return cv2.GaussianBlur(img, (3, 3), 0.6)


# ------------------------------------------------------------------------------------------ augmentation
@pytest.mark.parametrize("move", ["flip_lr", "flip_ud", "rot90", "rot180", "transpose", "shift"])
def test_layout_check_catches_flips_rotations_and_shifts(move):
    img = karyogram_like()
    moved = {"flip_lr": img[:, ::-1], "flip_ud": img[::-1], "rot90": np.rot90(img), "rot180": img[::-1, ::-1],
             "transpose": img.T, "shift": np.roll(img, 2, axis=1)}[move]
    assert not layout_preserved(img, np.ascontiguousarray(moved))
    assert layout_preserved(img, img)


def test_augmentations_never_move_content():
    """Many random draws at the strongest settings: each output is still best explained by the original in place,
    including a flipped or rotated starting image (so the check is not fooled by symmetry)."""
    cfg = augment_cfg(blur_prob=1.0, blur_sigma=[0.3, 1.5])
    rng = np.random.default_rng(1)
    for seed in range(4):
        for base in (karyogram_like(seed), np.ascontiguousarray(karyogram_like(seed)[:, ::-1])):
            for _ in range(6):
                out, params = augment(base, rng, cfg)
                assert out.shape == base.shape and out.dtype == np.uint8
                assert best_layout_match(base, out) == "identity", params


def test_augmentation_bounds_and_record_replay():
    img = karyogram_like(3)
    cfg = augment_cfg()
    rng = np.random.default_rng(0)
    for _ in range(20):
        out, params = augment(img, rng, cfg)
        assert 0.75 <= params["brightness"] <= 1.25
        assert 0.0 <= params["noise_fraction"] <= 0.05
        assert np.array_equal(apply_params(img, json.loads(json.dumps(params))), out)  # the record re-creates it
    # noise alone touches at most 5 % of the pixels
    p = {"brightness": 1.0, "blur_sigma": 0.0, "noise_fraction": 0.05, "noise_sigma": 60.0, "noise_seed": 7}
    changed = (apply_params(img, p) != img).mean()
    assert 0.02 < changed <= 0.05
    # pixel-level knobs only: a geometric one is an unknown key; the defaults are the thesis' ranges
    with pytest.raises(ConfigError, match="unknown key"):
        augment_cfg(rotate=10)
    with pytest.raises(ConfigError, match="brightness"):
        augment_cfg(brightness=1.0)   # a factor of 0 would black out the image
    assert cfg == {"brightness": 0.25, "noise_fraction": 0.05, "noise_sigma": 40.0, "blur_prob": 0.5,
                   "blur_sigma": [0.3, 1.2]}


def test_blank_top():
    img = np.zeros((100, 10), np.uint8)
    out = blank_top(img, 0.07)
    assert (out[:7] == 255).all() and (out[7:] == 0).all() and (img == 0).all()


# ---------------------------------------------------------------------------------------------- balance
def test_plan_counts():
    assert plan_counts({"normal": 62, "abnormal": 46}, 1.0) == {"abnormal": 16, "normal": 0}
    assert plan_counts({"normal": 10, "abnormal": 4}, 0.5) == {"abnormal": 1, "normal": 0}
    assert plan_counts({"normal": 10, "abnormal": 8}, 0.5) == {"abnormal": 0, "normal": 0}
    # the thesis: 105/41 → 376/316
    assert plan_counts({"normal": 105, "abnormal": 41}, 316 / 376, 376 / 105) == {"normal": 271, "abnormal": 275}


def tiny_dataset(root, n_norm=(12, 3, 3), n_abn=(5, 2, 2), size=48):
    """``ingested/kg`` (manifest, images, summary: the ingest format) + ``splits/kg.csv`` (+ .json), one patient
    per karyogram; normal karyograms alternate 46,XX / 46,XY, abnormal ones are 47,XX,+21."""
    rows, imgs = [], []
    i = 0
    for label, counts in (("normal", n_norm), ("abnormal", n_abn)):
        for split, n in zip(("train", "val", "test"), counts):
            for _ in range(n):
                imgs.append(karyogram_like(i, size))
                karyotype = ("46,XX" if i % 2 == 0 else "46,XY") if label == "normal" else "47,XX,+21"
                rows.append({"index": i, "path": f"src/{i}.png", "label": label, "group_id": f"P{i:03d}",
                             "cell_id": f"P{i:03d}-C1", "fixed_split": "", "sha256": f"{i:064x}",
                             "pixel_sha256": f"{i + 1000:064x}", "width": size, "height": size,
                             "karyotype": karyotype, "split": split})
                i += 1
    table = pd.DataFrame(rows)
    d = root / "ingested" / "kg"
    d.mkdir(parents=True)
    np.save(d / "images.npy", np.stack(imgs))
    table.drop(columns="split").to_csv(d / "manifest.csv", index=False)
    classes = table["label"].value_counts().sort_index().to_dict()
    (d / "summary.json").write_text(json.dumps(
        {"dataset": "kg", "kind": "karyograms", "source": "src/manifest.csv", "synthetic": True, "input": len(table),
         "accepted": len(table), "quarantined": 0, "classes": classes, "groups": len(table),
         "image_shape": [size, size], "mode": "L", "ingest": {"mode": "L", "size": size, "resize": "stretch"}}))
    (root / "splits").mkdir()
    table.to_csv(root / "splits" / "kg.csv", index=False)
    (root / "splits" / "kg.json").write_text(json.dumps(
        {"stratify_on": ["label"], "items": table["split"].value_counts().sort_index().to_dict(),
         "groups": table["split"].value_counts().sort_index().to_dict(),
         "labels": {s: g["label"].value_counts().sort_index().to_dict() for s, g in table.groupby("split")}}))
    return table


def balance(root, name="kg-bal", **cfg):
    return balance_dataset(name, {"source": "kg", **cfg}, root / "ingested" / "kg", root / "splits" / "kg.csv",
                           root / "ingested" / name, root / "splits" / f"{name}.csv")


@pytest.mark.parametrize("ratio,factor", [(1.0, 1.0), (0.8, 2.0)])
def test_balancing_reaches_target_and_never_leaks(tmp_path, ratio, factor):
    src = tiny_dataset(tmp_path)
    summary = balance(tmp_path, target_ratio=ratio, majority_factor=factor, blank_top=0.1, seed=3)
    out = pd.read_csv(tmp_path / "splits" / "kg-bal.csv", dtype={"group_id": str}, keep_default_na=False)
    images = np.load(tmp_path / "ingested" / "kg-bal" / "images.npy")
    source_images = np.load(tmp_path / "ingested" / "kg" / "images.npy")
    train = out[out["split"] == "train"]["label"].value_counts()
    major = int(np.ceil(12 * factor - 1e-9))
    assert train["normal"] == major and train["abnormal"] >= ratio * major
    assert train["abnormal"] < ratio * major + 1
    assert summary["balance"]["train_after"] == train.sort_index().to_dict()
    assert summary["synthetic"] is True and summary["derived_from"] == "kg" and summary["blank_top"] == 0.1
    assert summary["balance"]["augment"] == augment_cfg()   # the schema's defaults, recorded
    gen = out[out["generated"] == 1]
    assert len(gen) == (train.sum() - 17)
    # generated rows: train only, from train sources, same patient, label and karyotype as the source
    assert set(gen["split"]) == {"train"}
    srcs = src.set_index("index").loc[gen["source_index"]]
    assert set(srcs["split"]) == {"train"}
    assert (srcs["label"].to_numpy() == gen["label"].to_numpy()).all()
    assert (srcs["group_id"].to_numpy() == gen["group_id"].to_numpy()).all()
    assert (srcs["karyotype"].to_numpy() == gen["karyotype"].to_numpy()).all()
    # a generated image is new pixels: its own hashes, so the leakage audit can tell it from its source
    assert not set(gen["pixel_sha256"]) & set(src["pixel_sha256"])
    # validation and test are the source rows, unchanged apart from the blanked top
    for s in ("val", "test"):
        a, b = out[out["split"] == s], src[src["split"] == s]
        assert a["path"].tolist() == b["path"].tolist() and a["generated"].eq(0).all()
        for i, j in zip(a["index"], b["index"]):
            assert np.array_equal(images[i], blank_top(source_images[j], 0.1))
    # no patient in two splits; every generated image is re-created by its record
    assert (out.groupby("group_id")["split"].nunique() == 1).all()
    for _, r in gen.head(5).iterrows():
        again = apply_params(blank_top(source_images[r["source_index"]], 0.1), json.loads(r["transform"]))
        assert np.array_equal(images[r["index"]], again)
    # the derived dataset loads like any ingested dataset and matches its split table
    from genediag.data.datasets import load_split_data

    _, table, names = load_split_data(tmp_path / "ingested" / "kg-bal", tmp_path / "splits" / "kg-bal.csv",
                                      ["normal", "abnormal"])
    assert names == ["normal", "abnormal"] and len(table) == len(out)
    assert json.loads((tmp_path / "splits" / "kg-bal.json").read_text())["balanced_from"] == "kg"


def test_balancing_rejects_bad_config(tmp_path):
    tiny_dataset(tmp_path)
    with pytest.raises(ConfigError, match="target_ratio"):
        balance(tmp_path, target_ratio=1.5)
    with pytest.raises(ConfigError, match="must differ from its source"):
        balance(tmp_path, name="kg")
    with pytest.raises(ConfigError, match="unknown key"):
        balance(tmp_path, augment={"rotate": 10})


# ------------------------------------------------------------------------------------------------ models
def test_head_matches_thesis_layout():
    m = create_model("thesis_transfer", num_classes=2, in_chans=1, img_size=32, backbone="vgg16",
                     trainable="frozen", dropout=[0.3, 0.5])
    kinds = [type(x) for x in m.head]
    assert kinds == [nn.Dropout, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout,
                     nn.Linear]
    assert (m.head.drop1.p, m.head.drop2.p) == (0.3, 0.5)
    assert (m.head.dense.in_features, m.head.dense.out_features) == (512, 256)
    assert m.head.bn.num_features == 256 and m.head.out.out_features == 1
    m.eval()
    assert m(torch.rand(2, 1, 32, 32)).shape == (2, 1)
    # the base is VGG16's convolutional part: 13 convolutions, 5 max-pools, no fully connected layer
    convs = [x for x in m.base.modules() if isinstance(x, nn.Conv2d)]
    assert len(convs) == 13 and sum(isinstance(x, nn.MaxPool2d) for x in m.base.modules()) == 5
    assert not any(isinstance(x, nn.Linear) for x in m.base.modules())


def _trainable(m):
    return {n.split(".")[0] + "." + n.split(".")[1] for n, p in m.named_parameters() if p.requires_grad}


def test_vgg16_training_variants():
    made = {t: create_model("thesis_transfer", 2, 1, 32, backbone="vgg16", trainable=t)
            for t in ("frozen", "last_block", "last_two_blocks", "all")}
    head = {"head.dense", "head.bn", "head.out"}
    assert _trainable(made["frozen"]) == head
    block5 = {f"base.{i}" for i in (24, 26, 28)}   # conv5_1..conv5_3
    block4 = {f"base.{i}" for i in (17, 19, 21)}
    assert _trainable(made["last_block"]) == head | block5
    assert _trainable(made["last_two_blocks"]) == head | block5 | block4
    assert len(_trainable(made["all"])) == 13 + 3
    with pytest.raises(ConfigError):
        create_model("thesis_transfer", 2, 1, 32, backbone="vgg16", trainable="some")
    with pytest.raises(ConfigError):
        create_model("thesis_transfer", 2, 1, 64, backbone="inception_v3")  # needs >= 75 px


def test_inception_frozen_parts_keep_bn_statistics():
    m = create_model("thesis_transfer", 2, 1, 75, backbone="inception_v3", trainable="last_block", bn_momentum=None)
    trainable = {n.split(".")[1] for n, p in m.named_parameters() if p.requires_grad and n.startswith("base.")}
    assert trainable == {"Mixed_7c"}
    # bn_momentum applies to the trainable batch norms only (None = cumulative mean of the batch statistics)
    assert m.head.bn.momentum is None and m.base.Mixed_7c.branch1x1.bn.momentum is None
    assert m.base.Conv2d_1a_3x3.bn.momentum == 0.1
    m.train()
    frozen_bn = m.base.Conv2d_1a_3x3.bn
    assert not frozen_bn.training and m.base.Mixed_7c.branch1x1.bn.training and m.head.bn.training
    before = frozen_bn.running_mean.clone()
    m(torch.rand(2, 1, 75, 75))
    assert torch.equal(before, frozen_bn.running_mean)


def test_pretrained_weights_missing_is_a_clear_error(tmp_path):
    from genediag.models.timm_models import PretrainedWeightsError

    with pytest.raises(PretrainedWeightsError, match="not found"):
        create_model("thesis_transfer", 2, 1, 32, backbone="vgg16", pretrained=str(tmp_path / "vgg16.pth"))


def test_pretrained_weights_from_local_file(tmp_path):
    """A timm-layout state dict (RGB, with the ImageNet head) loads into the grey base; the head is new."""
    import timm

    ref = timm.create_model("vgg16", pretrained=False, mlp_ratio=1 / 4096)
    path = tmp_path / "vgg16.pth"
    torch.save(ref.state_dict(), path)
    m = create_model("thesis_transfer", 2, 1, 32, backbone="vgg16", pretrained=str(path))
    assert torch.allclose(m.base[0].weight, ref.features[0].weight.sum(1, keepdim=True))
    assert torch.equal(m.base[28].weight, ref.features[28].weight)
    assert not torch.equal(m.normalize.mean, torch.zeros_like(m.normalize.mean))


# -------------------------------------------------------------------------------------------- MC dropout
class ToyDataset(torch.utils.data.Dataset):
    def __init__(self, n=6, size=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 1, size, size, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0


@pytest.fixture(scope="module")
def vgg_small():
    torch.manual_seed(0)
    return create_model("thesis_transfer", 2, 1, 32, backbone="vgg16", trainable="frozen").eval()


def test_mc_dropout_is_stochastic_and_seeded(vgg_small):
    ds = ToyDataset()
    bn = vgg_small.head.bn
    bn.running_mean.fill_(0.1)  # non-trivial statistics that must not change
    a = mc_dropout_predict(vgg_small, ds, passes=20, seed=5, batch_size=4)
    b = mc_dropout_predict(vgg_small, ds, passes=20, seed=5, batch_size=4)
    c = mc_dropout_predict(vgg_small, ds, passes=20, seed=6, batch_size=4)
    assert a.shape == (6, 20, 2) and np.allclose(a.sum(2), 1.0, atol=1e-5)
    assert np.array_equal(a, b)                 # fixed seed → identical passes
    assert not np.array_equal(a, c)             # another seed → other passes
    assert (a[:, :, 1].std(1) > 0).all()        # dropout really is on at inference
    assert torch.all(bn.running_mean == 0.1) and not vgg_small.training
    # eval-mode prediction (no dropout) is deterministic and differs from the passes
    vgg_small.eval()
    with torch.no_grad():
        det = torch.sigmoid(vgg_small(ds.x)).squeeze(1).numpy()
    assert not np.allclose(a[:, 0, 1], det)


def test_mc_dropout_head_shortcut_equals_repeating_the_input(vgg_small):
    ds = ToyDataset(n=5)
    fast = mc_dropout_predict(vgg_small, ds, passes=8, seed=1, batch_size=5, chunk=16)
    slow = mc_dropout_predict(vgg_small, ds, passes=8, seed=1, batch_size=5, chunk=16, repeat_input=True)
    assert np.allclose(fast, slow, atol=1e-5)


def test_enable_mc_dropout_only_touches_dropout(vgg_small):
    assert enable_mc_dropout(vgg_small) == 2
    assert vgg_small.head.drop1.training and vgg_small.head.drop2.training and not vgg_small.head.bn.training
    vgg_small.eval()


def test_mc_summary_vote_confidence_and_referral():
    # 4 cases × 5 passes of p(abnormal)
    p1 = np.array([[0.9, 0.8, 0.7, 0.6, 0.9],     # 5/5 abnormal
                   [0.2, 0.6, 0.3, 0.1, 0.4],     # 4/5 normal
                   [0.6, 0.4, 0.6, 0.4, 0.6],     # 3/5 abnormal
                   [0.1, 0.2, 0.1, 0.9, 0.7]])    # 3/5 normal
    probs = np.stack([1 - p1, p1], axis=2)
    s = mc_summary(probs, ["normal", "abnormal"])
    assert s["predicted"].tolist() == ["abnormal", "normal", "abnormal", "normal"]
    assert s["confidence"].tolist() == [1.0, 0.8, 0.6, 0.6]
    assert np.allclose(s["mean_p_abnormal"], p1.mean(1))
    y = np.array([1, 0, 0, 1])
    r = referral_metrics(y, s["pred_index"].to_numpy(), s["confidence"].to_numpy(), 0.8)
    assert r["referred"] == 2 and r["referral_rate"] == 0.5
    assert r["retained"]["accuracy"] == 1.0 and r["retained"]["recall"] == 1.0 and r["all"]["accuracy"] == 0.5
    assert r["missed_positive"] == 0
    curve = referral_curve(y, s["pred_index"].to_numpy(), s["confidence"].to_numpy())
    assert curve["referred_fraction"].tolist() == [0.0, 0.5, 0.75, 1.0]
    assert curve["accuracy"].iloc[0] == 0.5 and curve["accuracy"].iloc[1] == 1.0
    # a tie (even number of passes) goes to the higher mean probability
    tie = np.stack([1 - np.array([[0.9, 0.2]]), np.array([[0.9, 0.2]])], axis=2)
    assert mc_summary(tie, ["normal", "abnormal"])["predicted"].tolist() == ["abnormal"]


@pytest.mark.parametrize("trainable", ["frozen", "last_block"])
def test_prefix_cache_scores_and_mc_votes_equal_whole_passes(trainable):
    """evaluate@ scores a run's seeds and MC dropout through PrefixCache: the frozen prefix runs once for models
    that share it (by digest), and scores and MC-dropout votes equal those of whole forward passes."""
    from genediag.models.inference import PrefixCache, mc_dropout_votes, scores_and_features

    torch.manual_seed(0)
    a = create_model("thesis_transfer", 2, 1, 32, backbone="vgg16", trainable=trainable).eval()
    b = create_model("thesis_transfer", 2, 1, 32, backbone="vgg16", trainable=trainable).eval()
    b.base.load_state_dict(a.base.state_dict())   # one base (a pretrained file), two heads (two seeds)
    ds = ToyDataset(n=7)
    cache = PrefixCache(ds, batch_size=3)
    for m in (a, b):
        whole, fw = scores_and_features(m, ds, 3, features=True)
        part, fp = cache.scores_and_features(m, features=True)
        assert np.allclose(whole, part, atol=1e-5) and np.allclose(fw, fp, atol=1e-5)
    assert len(cache._outputs) == 1   # a's and b's prefix: the same network, computed once
    prefix, suffix, out = cache.split(a)
    assert out.shape[0] == 7
    votes = mc_dropout_votes(a, ds.x, passes=4, seed=2)
    assert np.allclose(votes, mc_dropout_votes(a, out, passes=4, seed=2, split=(prefix, suffix)), atol=1e-5)


def test_mc_dropout_stage_and_evaluation_helpers_agree(vgg_small):
    """The evaluation's MC-dropout helper (models.inference, used by evaluate@ and predict) switches on the same
    dropout layers as the mc_dropout@ stage, leaves batch norm alone, is seeded, and its referral curve
    (evaluation.uncertainty) matches the stage's on the cases both keep."""
    from genediag.evaluation.uncertainty import referral_curve as evaluation_referral_curve
    from genediag.models.inference import dropout_modules, mc_dropout_votes

    ds = ToyDataset(n=5)
    drops = dropout_modules(vgg_small)
    assert [id(m) for m in drops] == [id(vgg_small.head.drop1), id(vgg_small.head.drop2)]
    mean = vgg_small.head.bn.running_mean.clone()
    votes = mc_dropout_votes(vgg_small, ds.x, passes=6, seed=2)
    assert votes.shape == (6, 5, 2) and np.allclose(votes.sum(2), 1.0, atol=1e-5)
    assert np.array_equal(votes, mc_dropout_votes(vgg_small, ds.x, passes=6, seed=2))
    assert not np.array_equal(votes, mc_dropout_votes(vgg_small, ds.x, passes=6, seed=3))
    assert (votes[:, :, 1].std(0) > 0).all()
    assert torch.equal(mean, vgg_small.head.bn.running_mean) and not any(m.training for m in vgg_small.modules())
    plain = create_model("pinnacle_dcnn", 2, 1, 32, channels=[4, 4, 4], fc=[8, 8, 8], dropout=0.0)
    assert mc_dropout_votes(plain, ds.x, passes=3, seed=0) is None   # no dropout: no votes

    y = np.array([1, 0, 0, 1])
    pred = np.array([1, 0, 1, 0])
    conf = np.array([1.0, 0.8, 0.6, 0.6])
    stage = referral_curve(y, pred, conf)
    ev = evaluation_referral_curve(conf, pred == y)
    assert ev["referred_fraction"].tolist() == stage["referred_fraction"].tolist()[:-1] == [0.0, 0.5, 0.75]
    assert ev["accuracy"].tolist() == stage["accuracy"].tolist()[:-1] == [0.5, 1.0, 1.0]
    assert stage["referred_fraction"].iloc[-1] == 1.0 and pd.isna(stage["accuracy"].iloc[-1])  # all referred


# --------------------------------------------------------------------------------------------- hpsearch
TOY_SECTION = {   # a karyograms: section with one family and one run, as params.yaml has them
    "families": {"toy": {
        "task": "kg", "model": "toy", "classes": ["normal", "abnormal"],
        "arch": {"name": "pinnacle_dcnn", "channels": [4, 4, 4], "fc": [8, 8, 8]}, "input_size": 16,
        "fit": {"epochs": 1, "batch_size": 4, "device": "cpu", "optimizer": {"name": "adam", "lr": 0.1},
                "scheduler": {"name": "onecycle", "max_lr": 0.1}}}},
    "runs": {"toy": {"family": "toy"}, "toy-plain": {"family": "toy", "fit": {"scheduler": {"name": "none"}}}},
}


def test_hpsearch_is_deterministic_and_writes_a_preset(tmp_path):
    import copy

    import yaml

    from genediag.karyograms.hpsearch import run_hpsearch
    from genediag.presets import deep_merge

    tiny_dataset(tmp_path, size=32)
    data, split = tmp_path / "ingested" / "kg", tmp_path / "splits" / "kg.csv"
    rcfg = resolve_run("karyograms", "toy", TOY_SECTION)
    cfg = {"run": "toy", "trials": 3, "epochs": 1, "max_train_items": 8, "seed": 0}
    a = run_hpsearch("search", cfg, rcfg, data, split, out_dir=tmp_path / "hp1")
    b = run_hpsearch("search", cfg, rcfg, data, split, out_dir=tmp_path / "hp2")
    assert a == b and 1e-5 <= a["lr"] <= 1e-2 and a["batch_size"] in (8, 16, 32) and a["train_items"] == 8
    assert (tmp_path / "hp1" / "search.trials.csv").read_bytes() == (tmp_path / "hp2" / "search.trials.csv").read_bytes()
    trials = pd.read_csv(tmp_path / "hp1" / "search.trials.csv")
    assert len(trials) == 3 and trials["val_loss"].min() == pytest.approx(a["best_val_loss"], abs=1e-6)
    assert trials["lr"].nunique() == 3
    assert json.loads((tmp_path / "hp1" / "search.json").read_text()) == a
    # the preset (what `python -m genediag.presets apply` merges) turns the result into params of the searched run
    preset = yaml.safe_load((tmp_path / "hp1" / "search.preset.yaml").read_text())
    assert set(preset) == {"preset", "karyograms"} and list(preset["karyograms"]["runs"]) == ["toy"]
    params = {"karyograms": copy.deepcopy(TOY_SECTION)}
    params = deep_merge(params, {k: v for k, v in preset.items() if k != "preset"})
    fit_cfg = resolve_run("karyograms", "toy", params["karyograms"])["fit"]
    assert fit_cfg["optimizer"]["name"] == "adam" and fit_cfg["optimizer"]["lr"] == a["lr"]
    assert fit_cfg["scheduler"] == {**rcfg["fit"]["scheduler"], "max_lr": a["lr"]} and fit_cfg["batch_size"] == a["batch_size"]
    assert resolve_run("karyograms", "toy-plain", params["karyograms"]) == resolve_run("karyograms", "toy-plain", TOY_SECTION)
    # a run whose scheduler sets no max_lr gets none from the search (StepLR, e.g., would refuse the argument)
    plain = run_hpsearch("plain", {**cfg, "run": "toy-plain", "trials": 1}, resolve_run("karyograms", "toy-plain",
                                                                                         TOY_SECTION),
                         data, split, out_dir=tmp_path / "hp3")
    fit_part = yaml.safe_load((tmp_path / "hp3" / "plain.preset.yaml").read_text())["karyograms"]["runs"]["toy-plain"]["fit"]
    assert fit_part == {"optimizer": {"lr": plain["lr"]}, "batch_size": plain["batch_size"]}
    with pytest.raises(ConfigError, match="low < high"):
        run_hpsearch("bad", {**cfg, "lr": [0.1, 0.01]}, rcfg, data, split, out_dir=tmp_path / "hp4")


# -------------------------------------------------------------------------- cached features, standardisation
@pytest.mark.parametrize("backbone,size,trainable", [("vgg16", 32, "frozen"), ("vgg16", 32, "last_block"),
                                                      ("vgg16", 64, "last_two_blocks"),
                                                      ("inception_v3", 75, "frozen"),
                                                      ("inception_v3", 75, "last_block")])
def test_cache_split_is_the_same_network(backbone, size, trainable):
    torch.manual_seed(0)
    m = create_model("thesis_transfer", 2, 1, size, backbone=backbone, trainable=trainable, standardize=True)
    m.standardize.calibrate(torch.rand(4, m.head.dense.in_features, 2, 2) * 3 + 1)
    prefix, suffix = m.cache_split()
    x = torch.rand(3, 1, size, size)
    m.eval()
    suffix.eval()
    with torch.no_grad():
        assert torch.allclose(suffix(prefix(x)), m(x), atol=1e-6)
    assert not any(p.requires_grad for p in prefix.parameters())
    trainable_ids = {id(p) for p in m.parameters() if p.requires_grad}
    assert {id(p) for p in suffix.parameters() if p.requires_grad} == trainable_ids
    prefix.train()  # the frozen prefix never leaves inference mode
    assert not any(mod.training for mod in prefix.modules())
    assert create_model("thesis_transfer", 2, 1, 32, backbone="vgg16", trainable="all").cache_split() is None


def test_feature_standardize_calibration():
    from genediag.models.thesis_transfer import FeatureStandardize

    f = torch.randn(50, 6, 3, 3) * torch.arange(1, 7).view(1, 6, 1, 1) + 5
    st = FeatureStandardize(6).eval()
    assert torch.allclose(st(f), f / torch.sqrt(torch.tensor(1 + st.eps)))  # identity statistics before calibration
    st.calibrate(f)
    z = st(f)  # inference: the calibrated running statistics
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(6), atol=1e-4)
    assert torch.allclose(z.var((0, 2, 3), unbiased=False), torch.ones(6), atol=1e-3)
    assert not list(st.parameters())  # nothing trainable: the head stays the thesis head


def test_training_on_cached_features_equals_training_the_whole_model(tmp_path):
    """cache_features only changes where the frozen layers run: the suffix trained on cached prefix outputs ends
    with the same weights as the whole model trained on the images (same seed; fit.restore_best: false keeps
    the last epoch). train_run wires this up (cached outputs, calibration) and writes a loadable model."""
    from genediag.data.datasets import load_split_data, split_datasets
    from genediag.models.checkpoint import load_checkpoint
    from genediag.training.run import FeatureDataset, cached_features, train_run
    from genediag.training.trainer import fit

    tiny_dataset(tmp_path, n_norm=(6, 3, 3), n_abn=(4, 2, 2), size=40)
    section = {"families": {"vgg": {
        "task": "kg", "model": "vgg", "classes": ["normal", "abnormal"], "input_size": 32, "invert": True,
        "cache_features": True,
        "arch": {"name": "thesis_transfer", "backbone": "vgg16", "trainable": "last_block", "standardize": True,
                 "dense": 16},
        "fit": {"epochs": 2, "batch_size": 6, "device": "cpu", "loss": {"name": "bce"},
                "optimizer": {"name": "sgd", "lr": 0.05}, "early_stopping": {"patience": 0},
                "restore_best": False, "channels_last": False, "resume": False}}},
        "runs": {"r": {"family": "vgg", "recalibrate_bn": True}}}
    rc = resolve_run("karyograms", "r", section)
    data, split_csv = tmp_path / "ingested" / "kg", tmp_path / "splits" / "kg.csv"
    images, table, names = load_split_data(data, split_csv, rc["classes"])
    ds = split_datasets(images, table, rc["input_size"], rc["invert"])
    arch = {k: v for k, v in rc["arch"].items() if k != "name"}
    torch.manual_seed(0)
    a = create_model("thesis_transfer", 2, 1, 32, **arch)
    b = create_model("thesis_transfer", 2, 1, 32, **arch)
    b.load_state_dict(a.state_dict())
    split = a.cache_split()
    tr, va = cached_features(split[0], ds["train"]), cached_features(split[0], ds["val"])
    assert isinstance(tr, FeatureDataset) and len(tr) == len(ds["train"])
    a.calibrate(tr.features.split(5), split=split)
    b.calibrate(x for x, _ in torch.utils.data.DataLoader(ds["train"], batch_size=5))
    assert torch.allclose(a.standardize.running_var, b.standardize.running_var, rtol=1e-4)
    torch.manual_seed(1)
    fit(split[1], tr, va, rc["fit"], tmp_path / "a")
    torch.manual_seed(1)
    fit(b, ds["train"], ds["val"], rc["fit"], tmp_path / "b")
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-5), (k, (sa[k].float() - sb[k].float()).abs().max())
    # the run: cached, calibrated, recalibrated batch norm, last epoch kept, the whole model saved
    info = train_run("r", rc, data, split_csv, tmp_path / "models" / "r", resume_root=None, branch="karyograms")
    assert info["epochs_run"] == 2 and info["best_epoch"] in (1, 2)   # restore_best: false → the last epoch kept
    model, meta = load_checkpoint(tmp_path / "models" / "r" / "model.pt")
    assert model.standardize.running_var.ne(1).any()  # calibrated, saved with the model
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 1)
    assert meta["class_names"] == ["normal", "abnormal"] and meta["run"] == "r"


def test_seeds_share_the_frozen_prefix_outputs(tmp_path, monkeypatch):
    """cache_features with K seeds: the frozen prefix runs once per run (train and validation), not once per seed
    and again for calibration; every seed's weights, temperature and OOD thresholds are those it gets when it
    computes everything itself."""
    import genediag.training.run as run_mod
    from genediag.models.checkpoint import load_checkpoint, load_seed_checkpoints

    import timm

    tiny_dataset(tmp_path, n_norm=(6, 3, 3), n_abn=(4, 2, 2), size=40)
    torch.manual_seed(5)   # a weights file for the base (as karyogram_base@ writes): the same prefix in every seed
    weights = tmp_path / "base.pth"
    torch.save(timm.create_model("vgg16", pretrained=False, num_classes=0, mlp_ratio=1 / 4096).state_dict(), weights)
    section = {"families": {"vgg": {
        "task": "kg", "model": "vgg", "classes": ["normal", "abnormal"], "input_size": 32, "invert": True,
        "cache_features": True, "seeds": 2, "seed_workers": 1,
        "arch": {"name": "thesis_transfer", "backbone": "vgg16", "trainable": "frozen", "standardize": True,
                 "dense": 16, "pretrained": str(weights)},
        "fit": {"epochs": 2, "batch_size": 6, "device": "cpu", "loss": {"name": "bce"},
                "optimizer": {"name": "sgd", "lr": 0.05}, "early_stopping": {"patience": 0},
                "restore_best": False, "channels_last": False, "resume": False}}},
        "runs": {"r": {"family": "vgg"}}}
    rc = resolve_run("karyograms", "r", section)
    data, split_csv = tmp_path / "ingested" / "kg", tmp_path / "splits" / "kg.csv"
    calls = []
    real = run_mod.cached_features
    monkeypatch.setattr(run_mod, "cached_features", lambda *a, **k: calls.append(k.get("desc")) or real(*a, **k))

    def models(name):
        model, meta = load_checkpoint(tmp_path / name / "model.pt")
        return [(model, meta)] + load_seed_checkpoints(tmp_path / name / "seeds.pt")

    run_mod.train_run("r", rc, data, split_csv, tmp_path / "shared", resume_root=None, branch="karyograms")
    assert len(calls) == 2   # train and validation, once for both seeds
    calls.clear()
    sharing = run_mod.shared_prefix_features
    monkeypatch.setattr(run_mod, "shared_prefix_features", lambda *a, **k: None)
    run_mod.train_run("r", rc, data, split_csv, tmp_path / "own", resume_root=None, branch="karyograms")
    assert len(calls) == 4   # each seed its own
    shared, own = models("shared"), models("own")
    calls.clear()
    monkeypatch.setattr(run_mod, "shared_prefix_features", sharing)
    section["families"]["vgg"]["arch"]["pretrained"] = False   # a random prefix per seed: each computes its own
    run_mod.train_run("r", resolve_run("karyograms", "r", section), data, split_csv, tmp_path / "random",
                      resume_root=None, branch="karyograms")
    assert len(calls) == 4
    assert [m["seed"] for _, m in shared] == [m["seed"] for _, m in own] == [0, 1]
    for (ma, a), (mb, b) in zip(shared, own):
        sa, sb = ma.state_dict(), mb.state_dict()
        for k in sa:
            assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-5), k
        assert a["temperature"] == pytest.approx(b["temperature"], rel=1e-3)
        assert a["ood"]["threshold"] == pytest.approx(b["ood"]["threshold"], rel=1e-3)
    s0, s1 = shared[0][0].state_dict(), shared[1][0].state_dict()
    assert any(not torch.equal(s0[k], s1[k]) for k in s0)   # two seeds, two models


# ----------------------------------------------------------------------------------- metrics and report
def test_headline_metrics_and_roc_table_binary_and_multiclass():
    """What evaluate@ reports for the karyogram runs: with two classes the positive (class 1, abnormal) precision,
    recall and ROC AUC, and the ROC points of class 1; with more classes no AUC and a micro-averaged ROC."""
    from genediag.evaluation.evaluate import roc_table
    from genediag.evaluation.metrics import headline_metrics

    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.9])
    probs = np.stack([1 - p1, p1], 1)
    m = headline_metrics(y, probs.argmax(1), probs, ["normal", "abnormal"])
    assert m["auc"] == pytest.approx(0.75) and m["recall"] == 0.5 and m["precision"] == 0.5
    assert m["accuracy"] == 0.5 and m["macro_sensitivity"] == 0.5
    roc = roc_table(y, probs)
    assert list(roc.columns) == ["fpr", "tpr", "threshold"] and roc["tpr"].iloc[-1] == 1.0
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(0.75)
    assert roc["threshold"].between(0, 1).all()
    y3 = np.array([0, 1, 2])
    m3 = headline_metrics(y3, y3, np.eye(3), ["a", "b", "c"])
    assert "auc" not in m3 and m3["accuracy"] == 1.0
    roc3 = roc_table(y3, np.eye(3))
    assert np.trapezoid(roc3["tpr"], roc3["fpr"]) == pytest.approx(1.0)   # micro-averaged, perfect


def test_abnormality_type():
    from genediag.reports.karyograms import abnormality_type

    assert abnormality_type("47,XX,+21") == "+21"
    assert abnormality_type("46,XY,del(5)(p14)") == "del(5)(p14)"
    assert abnormality_type("46,XX,t(9;22)(q34;q11.2)") == "t(9;22)(q34;q11.2)"
    assert abnormality_type("45,X") == "45,X" and abnormality_type("47,XXY") == "47,XXY"
    assert abnormality_type("46,XY") == "normal"


def test_report_renders_table_mc_and_missed_types(tmp_path):
    """The report from minimal stage outputs: Table 5.1 rows (published cells '—', never invented), ROC and
    referral figures, MC-dropout numbers, the sex-chromosome confound check and the missed abnormality types."""
    import yaml

    from genediag.reports.karyograms import write_karyogram_report

    data = tmp_path / "data"
    tiny_dataset(data)
    balance(data, "kg-bal", blank_top=0.1)   # the runs' dataset: train balanced, val/test the source rows
    split_csv = data / "splits" / "kg-bal.csv"
    test_rows = pd.read_csv(split_csv, dtype=str, keep_default_na=False).query("split == 'test'")
    assert test_rows["karyotype"].tolist() == ["46,XY", "46,XX", "46,XY", "47,XX,+21", "47,XX,+21"]
    ev, metrics, plots = tmp_path / "evaluation", tmp_path / "metrics", tmp_path / "plots"
    run = "kg-vgg16-frozen"
    (ev / run).mkdir(parents=True)
    (ev / run / "args.yaml").write_text(yaml.safe_dump(
        {"run": run, "model": "vgg16-frozen", "input_size": 64, "fit": {"restore_best": True},
         "arch": {"name": "thesis_transfer", "backbone": "vgg16", "trainable": "frozen", "pretrained": None}}))
    metrics.mkdir()
    (metrics / f"{run}.json").write_text(json.dumps(
        {"n": 5, "accuracy": 0.6, "precision": 0.5, "recall": 0.5, "auc": 0.75, "macro_sensitivity": 0.5833,
         "best_epoch": 2, "epochs_run": 3}))
    (plots / "roc").mkdir(parents=True)
    pd.DataFrame({"fpr": [0, 0.5, 1], "tpr": [0, 0.5, 1], "threshold": [1, 0.5, 0]}).to_csv(
        plots / "roc" / f"{run}.csv", index=False)
    idx = [int(i) for i in test_rows["index"]]
    pd.DataFrame({"index": idx, "target": ["normal"] * 3 + ["abnormal"] * 2,
                  "predicted": ["normal", "abnormal", "normal", "normal", "abnormal"]}).to_csv(
        ev / run / "predictions.csv", index=False)
    (metrics / "mc_dropout").mkdir()
    (metrics / "mc_dropout" / "m.json").write_text(json.dumps(
        {"run": run, "passes": 100, "seed": 0, "split": "test", "threshold": 0.8, "n": 5,
         "referred": 2, "referral_rate": 0.4, "wrong": 1, "wrong_referred": 1, "missed_positive": 0, "positives": 2,
         "all": {"n": 5, "accuracy": 0.8, "recall": 0.5, "precision": 1.0},
         "retained": {"n": 3, "accuracy": 1.0, "recall": 1.0, "precision": 1.0}}))
    (ev / "mc_dropout" / "m").mkdir(parents=True)
    pd.DataFrame({"cell_id": [f"P{idx[3]:03d}-C1"], "karyotype": ["47,XX,+21"], "target": ["abnormal"],
                  "predicted": ["normal"], "mean_p_abnormal": [0.45], "mean_p_predicted": [0.55],
                  "confidence": [0.6], "referred": [1]}).to_csv(ev / "mc_dropout" / "m" / "wrong.csv", index=False)
    (plots / "mc_referral").mkdir(parents=True)
    pd.DataFrame({"threshold": [0.6, 0.8, 1.0], "referred_fraction": [0.0, 0.4, 0.8], "retained": [5, 3, 1],
                  "accuracy": [0.8, 1.0, 1.0], "recall": [0.5, 1.0, None]}).to_csv(
        plots / "mc_referral" / "m.csv", index=False)
    figures = tmp_path / "reports" / "figures"
    out = write_karyogram_report({"runs": [run]}, data / "ingested" / "kg", data / "ingested" / "kg-bal", split_csv,
                                 tmp_path / "reports" / "k.md", metrics_dir=metrics, plots_dir=plots, eval_dir=ev,
                                 hpsearch_dir=tmp_path / "hpsearch", figures_dir=figures)
    text = out.read_text()
    assert "Synthetic data" in text and "Table 5.1" in text and "(synthetic cohort)" in text
    published = [line for line in text.splitlines() if line.startswith("| published")]
    assert len(published) == 7 and all(line.count("—") >= 4 for line in published)
    assert ("| ours (synthetic data) | VGG16 | base frozen (head only) | 0.600 | 0.500 | 0.500 | 0.750 | 0.583 "
            "| 5 | 64 | 2/3 | no (random init) |") in text   # (no ci95 in this fixture: values alone)
    assert "Balancing (stage `balance@kg-bal`)" in text and "{'abnormal': 5, 'normal': 12}" in text
    assert "| +21 | numerical | 2 | 1 |" in text             # one of the two +21 test karyograms missed
    assert "| 46,XX | 1 | 1 |" in text and "| 46,XY | 2 | 0 |" in text   # false positives among normals, by sex
    assert "| test | 2 / 1 | 0 / 2 | 0.8330 | 1.0000 | 0.8330 |" in text   # the "no Y -> abnormal" rule on test
    assert "Referral rate: **0.400**" in text and f"P{idx[3]:03d}-C1" in text
    assert "Hyper-parameter search" not in text                # no search ran: no section
    assert (figures / "roc.png").exists() and (figures / "referral_m.png").exists()
    with pytest.raises(ConfigError, match="has no evaluation"):
        write_karyogram_report({"runs": ["nope"]}, data / "ingested" / "kg", data / "ingested" / "kg-bal", split_csv,
                               tmp_path / "reports" / "k2.md", metrics_dir=metrics, plots_dir=plots, eval_dir=ev,
                               hpsearch_dir=tmp_path / "hpsearch", figures_dir=figures)
