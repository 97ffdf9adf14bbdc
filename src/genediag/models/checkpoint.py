"""Saving and loading trained models with everything needed to use them again.

A checkpoint (``model.pt``) is a dict of plain values and tensors only, loaded with
``torch.load(weights_only=True)``: a checkpoint pulled from a shared DVC remote cannot run code. It carries

- ``arch`` and ``state_dict``: the network;
- ``class_names``;
- ``input``: how an image file becomes the model's input — ``kind`` (chromosome_crop, karyogram, face), the
  dataset's ingest settings (decode limits, mode, cache size, resize/pad) or face alignment, the model's input
  size, channels and inversion — so ``genediag predict`` needs no ``params.yaml`` and cannot drift from training;
- ``temperature`` (softmax temperature fitted on validation) and ``ood`` (the out-of-distribution detector:
  class means, precision matrix and threshold of the penultimate features);
- ``run``, ``task``, ``dataset``, ``synthetic``, ``fit`` (best epoch, validation loss/accuracy) and ``config`` (the
  resolved run entry).

Older formats are refused with a message saying to retrain; nothing is unpickled to find out.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from genediag import io as gio
from genediag.models.factory import create_model
from genediag.models.timm_models import wants_tf_pooling

FORMAT = "genediag-2"


class CheckpointError(ValueError):
    """A file is not a usable genediag checkpoint; the message says why and what to do."""


def plain(obj: Any) -> Any:
    """`obj` with numpy scalars/arrays and tuples turned into Python values and lists (weights_only-loadable)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def checkpoint_dict(model: nn.Module, arch: dict[str, Any], class_names: list[str], input_spec: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"format": FORMAT, "arch": plain(arch), "class_names": [str(c) for c in class_names],
            "input": plain(input_spec), "state_dict": state, **plain(extra or {})}


def save_checkpoint(path: str | Path, model: nn.Module, arch: dict[str, Any], class_names: list[str],
                    input_spec: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.pt`` atomically (a temporary file renamed into place)."""
    blob = checkpoint_dict(model, arch, class_names, input_spec, extra)
    return gio.save_torch(path, blob)


def save_seed_checkpoints(path: str | Path, blobs: list[dict[str, Any]]) -> Path:
    """``seeds.pt``: the checkpoints of a run's other seeds in one file (an empty list for one seed)."""
    return gio.save_torch(path, {"format": FORMAT, "checkpoints": blobs})


def load_seed_checkpoints(path: str | Path, device: str | torch.device = "cpu") -> list[tuple[nn.Module, dict]]:
    """(model, metadata) of every checkpoint in a ``seeds.pt``."""
    path = Path(path)
    if not path.is_file():
        return []
    blob = read_checkpoint(path, device)
    return [(build_model(c, device), {k: v for k, v in c.items() if k != "state_dict"}) for c in blob["checkpoints"]]


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, read without unpickling code; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained model here; run `dvc repro` (or `dvc pull`) to produce it")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused: the file holds objects other than tensors and plain values "
                              f"({str(exc).splitlines()[0][:160]}); genediag never unpickles code. Use a model.pt "
                              "written by genediag (`dvc repro` or `dvc pull`)") from None
    except Exception as exc:  # noqa: BLE001  torch.load fails in many ways on a file that is not a checkpoint
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'})") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise CheckpointError(f"{path}: not a genediag checkpoint (no 'format' entry)")
    if ckpt["format"] != FORMAT:
        raise CheckpointError(f"{path}: format {ckpt['format']!r} was written by an older genediag and does not record "
                              f"its preprocessing; retrain it with `dvc repro` (this version reads {FORMAT!r})")
    return ckpt


def build_model(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """The network of a checkpoint dict, weights loaded, in eval mode."""
    arch = dict(ckpt["arch"])
    name = arch.pop("name")
    if "pretrained" in arch:  # the state dict holds every weight (and the input normalisation buffers): the
        if wants_tf_pooling(arch["pretrained"], arch.get("tf_pooling")):  # weights the training started from
            arch["tf_pooling"] = True  # are not needed to rebuild the model, only the pooling they imply
        arch["pretrained"] = False
    model = create_model(name, num_classes=len(ckpt["class_names"]), in_chans=int(ckpt["input"]["in_chans"]),
                         img_size=int(ckpt["input"]["size"]), **arch)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from its checkpoint; returns (model in eval mode, metadata without the weights)."""
    ckpt = read_checkpoint(path, device)
    try:
        model = build_model(ckpt, device)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: the weights do not fit the recorded architecture ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160]})") from None
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, meta
