"""Karyogram branch: layout-preserving augmentation, balancing without leakage, the thesis head and trainable
variants, Monte-Carlo dropout, the hyper-parameter search, ROC metrics and the report's ISCN parsing."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from genediag.config import ConfigError
from genediag.karyograms.augment import (AUGMENT_DEFAULTS, apply_params, augment, best_layout_match, blank_top,
                                         layout_preserved, resolve_augment_config)
from genediag.karyograms.balance import balance_dataset, plan_counts
from genediag.karyograms.mc_dropout import (enable_mc_dropout, mc_dropout_predict, mc_summary, referral_curve,
                                            referral_metrics)
from genediag.models import create_model


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
    cfg = resolve_augment_config({"blur_prob": 1.0, "blur_sigma": [0.3, 1.5]})
    rng = np.random.default_rng(1)
    for seed in range(4):
        for base in (karyogram_like(seed), np.ascontiguousarray(karyogram_like(seed)[:, ::-1])):
            for _ in range(6):
                out, params = augment(base, rng, cfg)
                assert out.shape == base.shape and out.dtype == np.uint8
                assert best_layout_match(base, out) == "identity", params


def test_augmentation_bounds_and_record_replay():
    img = karyogram_like(3)
    cfg = resolve_augment_config({})
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
    with pytest.raises(ConfigError):
        resolve_augment_config({"rotate": 10})
    assert set(AUGMENT_DEFAULTS) == {"brightness", "noise_fraction", "noise_sigma", "blur_prob", "blur_sigma"}


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
    """data/ingested/kg + data/splits/kg.csv with one patient per karyogram."""
    rows, imgs = [], []
    i = 0
    for label, counts in (("normal", n_norm), ("abnormal", n_abn)):
        for split, n in zip(("train", "val", "test"), counts):
            for _ in range(n):
                imgs.append(karyogram_like(i, size))
                rows.append({"index": i, "path": f"src/{i}.png", "label": label, "group_id": f"P{i:03d}",
                             "cell_id": f"P{i:03d}-C1", "sha256": f"{i:064x}", "width": size, "height": size,
                             "karyotype": "46,XX" if label == "normal" else "47,XX,+21", "split": split})
                i += 1
    table = pd.DataFrame(rows)
    d = root / "ingested" / "kg"
    d.mkdir(parents=True)
    np.save(d / "images.npy", np.stack(imgs))
    table.drop(columns="split").to_csv(d / "manifest.csv", index=False)
    (root / "splits").mkdir()
    table.to_csv(root / "splits" / "kg.csv", index=False)
    return table


@pytest.mark.parametrize("ratio,factor", [(1.0, 1.0), (0.8, 2.0)])
def test_balancing_reaches_target_and_never_leaks(tmp_path, ratio, factor):
    src = tiny_dataset(tmp_path)
    cfg = {"source": "kg", "target_ratio": ratio, "majority_factor": factor, "blank_top": 0.1, "seed": 3}
    summary = balance_dataset("kg-bal", cfg, data_dir=tmp_path)
    out = pd.read_csv(tmp_path / "splits" / "kg-bal.csv", dtype={"group_id": str}, keep_default_na=False)
    images = np.load(tmp_path / "ingested" / "kg-bal" / "images.npy")
    source_images = np.load(tmp_path / "ingested" / "kg" / "images.npy")
    train = out[out["split"] == "train"]["label"].value_counts()
    major = int(np.ceil(12 * factor - 1e-9))
    assert train["normal"] == major and train["abnormal"] >= ratio * major
    assert train["abnormal"] < ratio * major + 1
    assert summary["balance"]["train_after"] == train.sort_index().to_dict()
    gen = out[out["generated"] == 1]
    assert len(gen) == (train.sum() - 17)
    # generated rows: train only, from train sources, same patient and label as the source
    assert set(gen["split"]) == {"train"}
    srcs = src.set_index("index").loc[gen["source_index"]]
    assert set(srcs["split"]) == {"train"}
    assert (srcs["label"].to_numpy() == gen["label"].to_numpy()).all()
    assert (srcs["group_id"].to_numpy() == gen["group_id"].to_numpy()).all()
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
    # the manifest loads like any ingested dataset and matches its split table
    from genediag.training.run import load_split_data

    _, table, names = load_split_data(tmp_path / "ingested" / "kg-bal", tmp_path / "splits" / "kg-bal.csv",
                                      ["normal", "abnormal"])
    assert names == ["normal", "abnormal"] and len(table) == len(out)


def test_balancing_rejects_bad_config(tmp_path):
    tiny_dataset(tmp_path)
    with pytest.raises(ConfigError):
        balance_dataset("kg-bal", {"source": "kg", "target_ratio": 1.5}, data_dir=tmp_path)
    with pytest.raises(ConfigError):
        balance_dataset("kg", {"source": "kg"}, data_dir=tmp_path)


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


# --------------------------------------------------------------------------------------------- hpsearch
def test_hpsearch_is_deterministic_and_writes_a_preset(tmp_path):
    import yaml

    from genediag.karyograms.hpsearch import run_hpsearch
    from genediag.training.run import resolve_run_config

    def deep_merge(base, over):  # what `python -m genediag.presets apply` does with a preset's sections
        for k, v in over.items():
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                deep_merge(base[k], v)
            else:
                base[k] = v

    tiny_dataset(tmp_path, size=32)
    run_cfg = {"task": "kg", "model": "toy", "dataset": "kg", "classes": ["normal", "abnormal"],
               "arch": {"name": "pinnacle_dcnn", "channels": [4, 4, 4], "fc": [8, 8, 8]}, "input_size": 16,
               "fit": {"epochs": 1, "batch_size": 4, "device": "cpu", "optimizer": {"name": "adam", "lr": 0.1},
                       "scheduler": {"name": "onecycle", "max_lr": 0.1}}}
    cfg = {"run": "toy", "dataset": "kg", "trials": 3, "epochs": 1, "max_train_items": 8, "seed": 0}
    a = run_hpsearch("toy", cfg, run_cfg, data_dir=tmp_path, out_dir=tmp_path / "hp1")
    b = run_hpsearch("toy", cfg, run_cfg, data_dir=tmp_path, out_dir=tmp_path / "hp2")
    assert a == b and 1e-5 <= a["lr"] <= 1e-2 and a["batch_size"] in (8, 16, 32) and a["train_items"] == 8
    trials = pd.read_csv(tmp_path / "hp1" / "toy.trials.csv")
    assert len(trials) == 3 and trials["val_loss"].min() == pytest.approx(a["best_val_loss"], abs=1e-6)
    assert trials["lr"].nunique() == 3
    # the preset turns the result into params of the searched run
    preset = yaml.safe_load((tmp_path / "hp1" / "toy.preset.yaml").read_text())
    params = {"train": {"toy": json.loads(json.dumps(run_cfg))}}
    deep_merge(params, {k: v for k, v in preset.items() if k != "preset"})
    fit_cfg = resolve_run_config("toy", params["train"]["toy"])["fit"]
    assert fit_cfg["optimizer"]["name"] == "adam" and fit_cfg["optimizer"]["lr"] == a["lr"]
    assert fit_cfg["scheduler"]["max_lr"] == a["lr"] and fit_cfg["batch_size"] == a["batch_size"]


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
    from genediag.models.checkpoint import load_checkpoint
    from genediag.training.run import (FeatureDataset, cached_features, load_split_data, make_datasets,
                                       resolve_run_config, train_run)
    from genediag.training.trainer import fit

    tiny_dataset(tmp_path, size=40)
    cfg = {"task": "kg", "model": "vgg", "dataset": "kg", "classes": ["normal", "abnormal"], "input_size": 32,
           "invert": True, "cache_features": True,
           "arch": {"name": "thesis_transfer", "backbone": "vgg16", "trainable": "last_block", "standardize": True,
                    "dense": 16},
           "fit": {"epochs": 2, "batch_size": 6, "device": "cpu", "loss": {"name": "bce"},
                   "optimizer": {"name": "sgd", "lr": 0.05}, "early_stopping": {"patience": 0},
                   "restore_best": False, "channels_last": False}}
    rc = resolve_run_config("r", cfg)
    images, table, names = load_split_data(tmp_path / "ingested" / "kg", tmp_path / "splits" / "kg.csv",
                                           rc["classes"])
    ds = make_datasets(images, table, rc)
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
    info = train_run("r", {**cfg, "recalibrate_bn": True}, data_dir=tmp_path, out_dir=tmp_path / "models",
                     live_root=tmp_path / "live")
    assert info["epochs_run"] == 2
    model, meta = load_checkpoint(tmp_path / "models" / "r" / "model.pt")
    assert model.standardize.running_var.ne(1).any()  # calibrated, saved with the model
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 1)


# ----------------------------------------------------------------------------------- metrics and report
def test_ranking_metrics_binary_and_multiclass():
    from genediag.evaluation.evaluate import ranking_metrics

    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.9])
    m, roc = ranking_metrics(y, np.stack([1 - p1, p1], 1), ["normal", "abnormal"])
    assert m["auc"] == pytest.approx(0.75) and m["positive_class"] == "abnormal"
    assert m["recall"] == 0.5 and m["precision"] == 0.5
    assert list(roc.columns) == ["fpr", "tpr", "threshold"] and roc["tpr"].iloc[-1] == 1.0
    y3 = np.array([0, 1, 2])
    m3, roc3 = ranking_metrics(y3, np.eye(3), ["a", "b", "c"])
    assert m3["auc_micro"] == 1.0 and "auc" not in m3


def test_abnormality_type():
    from genediag.reports.karyograms import abnormality_type

    assert abnormality_type("47,XX,+21") == "+21"
    assert abnormality_type("46,XY,del(5)(p14)") == "del(5)(p14)"
    assert abnormality_type("46,XX,t(9;22)(q34;q11.2)") == "t(9;22)(q34;q11.2)"
    assert abnormality_type("45,X") == "45,X" and abnormality_type("47,XXY") == "47,XXY"
    assert abnormality_type("46,XY") == "normal"


def test_report_renders_table_mc_and_missed_types(tmp_path):
    """The report from minimal stage outputs: Table 5.1 rows (published cells '—', never invented), ROC and
    referral figures, MC-dropout numbers and the missed abnormality types."""
    from genediag.reports.karyograms import write_karyogram_report

    data = tmp_path / "data"
    tiny_dataset(data)
    (data / "ingested" / "kg" / "summary.json").write_text(json.dumps(
        {"source": "src/manifest.csv", "accepted": 26, "quarantined": 0, "groups": 26,
         "classes": {"abnormal": 9, "normal": 18}, "image_shape": [48, 48]}))
    (data / "splits" / "kg.json").write_text(json.dumps(
        {"items": {"train": 17, "val": 5, "test": 5}, "groups": {"train": 17, "val": 5, "test": 5},
         "labels": {"train": {"normal": 12, "abnormal": 5}, "val": {"normal": 3, "abnormal": 2},
                    "test": {"normal": 3, "abnormal": 2}}}))
    runs = {"kg-vgg16-frozen": {"model": "vgg16-frozen", "input_size": 64,
                                "arch": {"backbone": "vgg16", "trainable": "frozen", "pretrained": False}}}
    (tmp_path / "metrics" / "kg").mkdir(parents=True)
    (tmp_path / "metrics" / "kg" / "vgg16-frozen.json").write_text(json.dumps(
        {"n": 5, "accuracy": 0.6, "precision": 0.5, "recall": 0.5, "auc": 0.75, "best_epoch": 2, "epochs_run": 3}))
    (tmp_path / "plots" / "roc" / "kg").mkdir(parents=True)
    pd.DataFrame({"fpr": [0, 0.5, 1], "tpr": [0, 0.5, 1], "threshold": [1, 0.5, 0]}).to_csv(
        tmp_path / "plots" / "roc" / "kg" / "vgg16-frozen.csv", index=False)
    (tmp_path / "evaluation" / "kg-vgg16-frozen").mkdir(parents=True)
    pd.DataFrame({"index": [24, 25, 21], "target": ["abnormal", "abnormal", "normal"],
                  "predicted": ["normal", "abnormal", "normal"]}).to_csv(
        tmp_path / "evaluation" / "kg-vgg16-frozen" / "predictions.csv", index=False)
    (tmp_path / "metrics" / "mc_dropout").mkdir(parents=True)
    (tmp_path / "metrics" / "mc_dropout" / "m.json").write_text(json.dumps(
        {"run": "kg-vgg16-frozen", "passes": 100, "seed": 0, "split": "test", "threshold": 0.8, "n": 5,
         "referred": 2, "referral_rate": 0.4, "wrong": 1, "wrong_referred": 1, "missed_positive": 0, "positives": 2,
         "all": {"n": 5, "accuracy": 0.8, "recall": 0.5, "precision": 1.0},
         "retained": {"n": 3, "accuracy": 1.0, "recall": 1.0, "precision": 1.0}}))
    (tmp_path / "evaluation" / "mc_dropout" / "m").mkdir(parents=True)
    pd.DataFrame({"cell_id": ["P024-C1"], "karyotype": ["47,XX,+21"], "target": ["abnormal"],
                  "predicted": ["normal"], "mean_p_abnormal": [0.45], "mean_p_predicted": [0.55],
                  "confidence": [0.6], "referred": [1]}).to_csv(
        tmp_path / "evaluation" / "mc_dropout" / "m" / "wrong.csv", index=False)
    (tmp_path / "plots" / "referral").mkdir(parents=True)
    pd.DataFrame({"threshold": [0.6, 0.8, 1.0], "referred_fraction": [0.0, 0.4, 0.8], "retained": [5, 3, 1],
                  "accuracy": [0.8, 1.0, 1.0], "recall": [0.5, 1.0, None]}).to_csv(
        tmp_path / "plots" / "referral" / "m.csv", index=False)
    cfg = {"dataset": "kg", "balanced": None, "task": "kg", "runs": ["kg-vgg16-frozen"], "mc_dropout": ["m"]}
    out = write_karyogram_report(cfg, runs, True, tmp_path / "reports" / "k.md", data_dir=data,
                                 metrics_dir=tmp_path / "metrics", plots_dir=tmp_path / "plots",
                                 eval_dir=tmp_path / "evaluation", hpsearch_dir=tmp_path / "hpsearch",
                                 figures_dir=tmp_path / "reports" / "figures")
    text = out.read_text()
    assert "Synthetic data" in text and "Table 5.1" in text
    published = [line for line in text.splitlines() if line.startswith("| published")]
    assert len(published) == 7 and all(line.count("—") >= 4 for line in published)
    assert "| ours (synthetic data) | VGG16 | base frozen (head only) | 0.6000 | 0.5000 | 0.5000 | 0.7500 |" in text
    assert "| +21 | numerical | 2 | 1 |" in text             # one of the two +21 test karyograms missed
    assert "| 46,XX | 1 | 0 |" in text                      # false positives among normal karyograms, by sex
    assert "| test | 0 / 3 | 0 / 2 | 0.5000 |" in text       # the "no Y -> abnormal" rule on the test split
    assert "Referral rate: **0.400**" in text and "P024-C1" in text
    assert (tmp_path / "reports" / "figures" / "roc.png").exists()
    assert (tmp_path / "reports" / "figures" / "referral_m.png").exists()
