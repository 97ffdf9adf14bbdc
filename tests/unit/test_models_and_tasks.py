import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from genediag.config import ConfigError
from genediag.data.datasets import CachedImageDataset, build_augmentation
from genediag.data.tasks import NORMAL_CHROMOSOMES, natural_key, resolve_classes, task_targets
from genediag.models import create_model, registered_models
from genediag.models.checkpoint import (FORMAT, checkpoint_dict, load_checkpoint, load_seed_checkpoints,
                                        save_checkpoint, save_seed_checkpoints)


def test_pinnacle_dcnn_layout():
    m = create_model("pinnacle_dcnn", num_classes=24, in_chans=1, img_size=64)
    convs = [l for l in m.modules() if isinstance(l, nn.Conv2d)]
    pools = [l for l in m.modules() if isinstance(l, nn.MaxPool2d)]
    fcs = [l for l in m.modules() if isinstance(l, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 64, 64] and all(c.kernel_size == (3, 3) for c in convs)
    assert len(pools) == 3 and all(p.kernel_size == 2 for p in pools)
    assert len(fcs) == 4 and fcs[0].in_features == 64 * 8 * 8 and fcs[-1].out_features == 24
    out = m(torch.zeros(2, 1, 64, 64))
    assert out.shape == (2, 24)


def test_unknown_model_is_a_clear_error():
    # every network, the face branch's included (models/seresnet.py, models/casia_net.py), is in the one registry
    assert {"pinnacle_dcnn", "timm", "thesis_transfer", "se_resnet64", "casia_net"} <= set(registered_models())
    with pytest.raises(ConfigError, match="unknown model 'resnet9000'.*pinnacle_dcnn"):
        create_model("resnet9000", num_classes=2)


def test_checkpoint_round_trip(tmp_path):
    m = create_model("pinnacle_dcnn", num_classes=3, in_chans=1, img_size=16, fc=[8, 8, 8])
    arch = {"name": "pinnacle_dcnn", "fc": [8, 8, 8]}
    spec = {"kind": "chromosome_crop", "size": 16, "in_chans": 1, "invert": True}
    extra = {"temperature": 1.5, "run": "r", "ood": {"mean": np.arange(3.0)}}
    save_checkpoint(tmp_path / "m.pt", m, arch, ["a", "b", "c"], spec, extra)
    m2, meta = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(2, 1, 16, 16)
    m.eval()
    assert torch.equal(m(x), m2(x)) and meta["class_names"] == ["a", "b", "c"]
    # the checkpoint carries its preprocessing and extras as plain values (weights_only-loadable)
    assert meta["format"] == FORMAT and meta["arch"] == arch and meta["input"] == spec
    assert meta["temperature"] == 1.5 and meta["run"] == "r" and "state_dict" not in meta
    assert torch.equal(meta["ood"]["mean"], torch.arange(3.0, dtype=torch.float64))
    # seeds.pt: a run's other seeds in one file
    other = create_model("pinnacle_dcnn", num_classes=3, in_chans=1, img_size=16, fc=[8, 8, 8]).eval()
    save_seed_checkpoints(tmp_path / "seeds.pt", [checkpoint_dict(other, arch, ["a", "b", "c"], spec, {"seed": 1})])
    [(again, seed_meta)] = load_seed_checkpoints(tmp_path / "seeds.pt")
    assert torch.equal(again(x), other(x)) and seed_meta["seed"] == 1
    assert load_seed_checkpoints(tmp_path / "no-seeds.pt") == []  # a one-seed run has none
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        load_checkpoint(tmp_path / "missing.pt")


def test_class_specs():
    labels = pd.Series(NORMAL_CHROMOSOMES + ["der22", "del5p"])
    names, mapping = resolve_classes("normal24", labels)
    assert names == NORMAL_CHROMOSOMES and "der22" not in mapping
    assert resolve_classes("all", labels)[0][-2:] == ["del5p", "der22"]
    names, targets = task_targets(pd.DataFrame({"label": ["22", "der22", "5"]}), {"22": ["22"], "der22": ["der22"]})
    assert names == ["22", "der22"] and list(targets) == [0, 1, -1]
    with pytest.raises(ConfigError, match=r"\['del4p'\] requested but not in the data"):
        resolve_classes(["1", "del4p"], labels)
    assert sorted(["10", "2", "X", "1"], key=natural_key) == ["1", "2", "10", "X"]


def test_dataset_inverts_and_resizes():
    imgs = np.full((2, 32, 32), 255, np.uint8)
    imgs[:, 10:20, 10:20] = 0
    ds = CachedImageDataset(imgs, [0, 1], [0, 1], input_size=16, invert=True)
    x, y = ds[1]
    assert x.shape == (1, 16, 16) and y == 1
    assert x[0, 0, 0] == 0.0 and x[0, 7, 7] == 1.0


def test_augmentation_from_params():
    aug = build_augmentation([{"name": "GaussianBlur", "blur_limit": [3, 3], "p": 1.0}], seed=0)
    img = np.zeros((16, 16), np.uint8)
    img[8, 8] = 255
    assert aug(image=img)["image"][8, 7] > 0
    with pytest.raises(ValueError, match="unknown albumentations transform 'Nope'"):
        build_augmentation([{"name": "Nope"}])


@pytest.mark.parametrize("name,kwargs,shape", [
    ("pinnacle_dcnn", {"channels": [8, 8, 8], "fc": [16, 16, 16], "dropout": 0.3}, (1, 32, 32)),
    ("se_resnet64", {"width": 2, "dropout": 0.3}, (3, 56, 48)),
    ("casia_net", {"width": 0.125, "dropout": 0.3}, (3, 56, 48)),
])
def test_mc_dropout_split_gives_the_same_votes_as_whole_passes(name, kwargs, shape):
    """MC dropout on (prefix once, suffix per pass) draws the same masks in the same order as whole passes."""
    import torch

    from genediag.models import create_model
    from genediag.models.inference import mc_dropout_votes

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_chans=shape[0], img_size=shape[1], **kwargs).eval()
    x = torch.rand(10, *shape)
    split = mc_dropout_votes(model, x, passes=5, seed=3, chunk=4)

    class Whole(torch.nn.Module):   # the same model without mc_split: whole forward passes
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, t):
            return self.m(t)

    whole = mc_dropout_votes(Whole(model), x, passes=5, seed=3, chunk=4)
    assert split.shape == (5, 10, 3) and np.allclose(split, whole, atol=1e-6)
    assert not np.allclose(split[0], split[1])   # dropout is really on
