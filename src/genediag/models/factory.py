"""A registry of model builders, in the spirit of timm's ``create_model``."""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from genediag.config import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def deco(fn: Callable[..., nn.Module]):
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' registered twice")
        _REGISTRY[name] = fn
        return fn
    return deco


def registered_models() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, in_chans: int = 1, img_size: int = 64, **kwargs: Any) -> nn.Module:
    """Build model `name` for `num_classes` outputs on `in_chans`×`img_size`×`img_size` inputs."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)


def _load_builtin() -> None:
    # importing the modules registers their models
    from genediag.models import casia_net, dcnn, facenet, seresnet, thesis_transfer, timm_models  # noqa: F401
