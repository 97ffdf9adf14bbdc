"""Face training runs, on the one trainer (:func:`genediag.training.run.train_and_save`).

A run is one entry of ``faces.pretrain`` (stage 1: softmax over the identities of the identity dataset's training
people) or ``faces.finetune`` (stage 2: syndromes, started from a stage-1 run), each over its family in
``faces.families``:

    model: crossloss                  # the model's name in reports
    init: faces-identity-seresnet64   # (finetune) the stage-1 run whose weights start this one; its
                                      # classifier is replaced by a new head for this run's classes
    arch: {name: se_resnet64, width: 8, head: angular}
    augment: [{name: Affine, rotate: [-5, 5], ...}]   # albumentations 2.x, training split only
    fit: {epochs: …, loss: {name: a_softmax, margin: 4}, …}   # the trainer's keys

Cross-loss = stage 1 with softmax, stage 2 with A-softmax (``arch.head: angular``, ``loss.name: a_softmax``);
the softmax ablation uses softmax in both stages; the DeepGestalt-style baseline is a CASIA-Net pretrained on
identities, then fine-tuned with a new softmax head. The input is the aligned crop of the dataset (its size is the
crop's height; nothing is resized).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from genediag.config import ConfigError
from genediag.data.datasets import load_split_table
from genediag.data.ingest import ingest_summary
from genediag.data.tasks import resolve_classes
from genediag.models.checkpoint import read_checkpoint
from genediag.training.run import train_and_save

log = logging.getLogger(__name__)


def class_targets(table: pd.DataFrame, kind: str, classes: Any) -> tuple[list[str], np.ndarray]:
    """Stage 1: the identities of the training split (held-out people get −1); stage 2: the class spec."""
    if kind == "pretrain":
        names = sorted(table.loc[table["split"] == "train", "label"].unique())
        index = {n: i for i, n in enumerate(names)}
        return names, table["label"].map(index).fillna(-1).astype(int).to_numpy()
    names, mapping = resolve_classes(classes, table["label"])
    index = {n: i for i, n in enumerate(names)}
    return names, table["label"].map(mapping).map(index).fillna(-1).astype(int).to_numpy()


def init_from_checkpoint(model: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """Copy every weight but the classifier (``head.*``) from a stage-1 checkpoint; the shapes must match."""
    ckpt = read_checkpoint(path)
    own = model.state_dict()
    body = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("head.")}
    wrong = [k for k, v in body.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if not k.startswith("head.") and k not in body]
    if wrong or missing:
        raise ConfigError(f"{path} (arch {ckpt.get('arch')}) does not fit this run's architecture: "
                          f"mismatched {wrong[:4]}, missing {missing[:4]}; use the same arch (width) in both stages")
    model.load_state_dict(body, strict=False)
    log.info("initialised %d tensors from %s (new %s head)", len(body), path, type(model.head).__name__)
    return {"init_checkpoint": str(path), "init_tensors": len(body)}


def train_face_run(run: str, cfg: dict[str, Any], kind: str, dataset_dir: str | Path, split_csv: str | Path,
                   out_dir: str | Path, live_dir: str | Path | None = None, init_dir: str | Path | None = None,
                   resume_root: str | Path | None = ".genediag/resume") -> dict[str, Any]:
    """Train a resolved ``faces.<kind>.<run>`` config (kind: pretrain or finetune)."""
    if kind == "finetune" and not (cfg.get("init") and init_dir):
        raise ConfigError(f"faces.finetune.{run}: a fine-tuning run needs 'init' (the stage-1 run to start from)")
    if kind == "pretrain" and cfg.get("init"):
        raise ConfigError(f"faces.pretrain.{run}: 'init' belongs to faces.finetune runs")
    summary = ingest_summary(dataset_dir)
    images, table = load_split_table(dataset_dir, split_csv)
    names, targets = class_targets(table, kind, cfg["classes"])
    cfg = {**cfg, "input_size": int(images.shape[1])}   # the aligned crop's height: never resized
    init = partial(init_from_checkpoint, path=Path(init_dir) / "model.pt") if kind == "finetune" else None
    return train_and_save(run, cfg, images, table.assign(target=targets), names, summary, out_dir, live_dir,
                          resume_root, branch="faces", init=init, extra={"stage": kind, "init": cfg.get("init")})
