"""Saving and loading trained models with everything needed to use them again (architecture, classes, input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from genediag.models.factory import create_model
from genediag.models.timm_models import wants_tf_pooling


def save_checkpoint(path: str | Path, model: nn.Module, arch: dict[str, Any], class_names: list[str],
                    input_spec: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": "genediag-1", "arch": arch, "class_names": list(class_names), "input": input_spec,
                "state_dict": state, **(extra or {})}, path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from its checkpoint; returns (model in eval mode, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained model here; run `dvc repro` (or `dvc pull`) to produce it")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    if ckpt.get("format") != "genediag-1":
        raise ValueError(f"{path}: not a genediag checkpoint")
    arch = dict(ckpt["arch"])
    name = arch.pop("name")
    if "pretrained" in arch:  # the state dict holds every weight (and the input normalisation buffers): the
        if wants_tf_pooling(arch["pretrained"], arch.get("tf_pooling")):  # weights the training started from
            arch["tf_pooling"] = True  # are not needed to rebuild the model, only the pooling they imply
        arch["pretrained"] = False
    model = create_model(name, num_classes=len(ckpt["class_names"]), in_chans=ckpt["input"]["in_chans"],
                         img_size=ckpt["input"]["size"], **arch)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, meta
