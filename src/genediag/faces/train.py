"""Face training runs on the generic trainer (:func:`genediag.training.trainer.fit`).

A run is one entry of ``faces_pretrain:`` (stage 1: softmax over the identities of the identity dataset) or
``faces_finetune:`` (stage 2: syndromes, initialised from a stage-1 run):

    dataset: faces_syndromes          # data/faces/aligned/<dataset> + data/faces/splits/<dataset>.csv
    model: crossloss                  # name in metrics/faces/<model>.json and plots/confusion/faces/<model>.csv
    init: faces-identity-seresnet64   # (finetune) the stage-1 run whose weights start this one; its
                                      # classifier is replaced by a new head for this run's classes
    arch: {name: se_resnet64, width: 8, head: angular}
    augment: [{name: Affine, rotate: [-5, 5], ...}]   # albumentations 2.x, training split only
    fit: {epochs: …, loss: {name: a_softmax, margin: 4}, …}   # the generic trainer's keys
    threads: 1                        # torch intra-op threads (0 = torch's default)

Cross-loss = stage 1 with softmax, stage 2 with A-softmax (``arch.head: angular``, ``loss.name: a_softmax``);
the softmax ablation uses softmax in both stages; the DeepGestalt-style baseline is a CASIA-Net pretrained on
identities, then fine-tuned with a new softmax head.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from genediag.config import ConfigError, check_keys, seed_everything, write_yaml
from genediag.data.datasets import CachedImageDataset, build_augmentation
from genediag.data.ingest import load_ingested
from genediag.data.tasks import resolve_classes
from genediag.models import create_model
from genediag.models.checkpoint import save_checkpoint
from genediag.training.trainer import fit, is_main_process, resolve_train_config

log = logging.getLogger(__name__)

RUN_KEYS = {"dataset", "model", "init", "classes", "arch", "augment", "fit", "threads"}
SPLITS = ("train", "val", "test")


def register_face_components() -> None:
    """Import the face models and the A-softmax loss so the factories know them."""
    from genediag.faces import deepgestalt, losses, seresnet  # noqa: F401


def resolve_face_run(run: str, cfg: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    check_keys(cfg, RUN_KEYS, where)
    for key in ("dataset", "model", "arch"):
        if key not in cfg:
            raise ConfigError(f"{where}: missing '{key}'")
    if "name" not in cfg["arch"]:
        raise ConfigError(f"{where}.arch: missing 'name' (se_resnet64 or casia_net)")
    if kind == "finetune" and not cfg.get("init"):
        raise ConfigError(f"{where}: a fine-tuning run needs 'init' (the stage-1 run to start from)")
    if kind == "pretrain" and cfg.get("init"):
        raise ConfigError(f"{where}: 'init' belongs to faces_finetune runs")
    out = {"augment": [], "threads": 1, "classes": "all", "init": None, **cfg}
    out["fit"] = resolve_train_config({"channels_last": False, **cfg.get("fit", {})}, f"{where}.fit")
    return out


def load_face_split(data_root: str | Path, dataset: str) -> tuple[np.ndarray, pd.DataFrame]:
    data_root = Path(data_root)
    aligned, split_csv = data_root / "aligned" / dataset, data_root / "splits" / f"{dataset}.csv"
    manifest, images = load_ingested(aligned)
    split = pd.read_csv(split_csv, dtype={"label": str, "group_id": str, "cell_id": str}, keep_default_na=False)
    if len(split) != len(manifest) or not (split["path"].to_numpy() == manifest["path"].to_numpy()).all():
        raise ConfigError(f"{split_csv} does not match {aligned}/manifest.csv; re-run faces_split@{dataset}")
    return images, split


def class_targets(table: pd.DataFrame, kind: str, classes: Any) -> tuple[list[str], np.ndarray]:
    """Stage 1: the identities of the training split (held-out people get −1); stage 2: the class spec."""
    if kind == "pretrain":
        names = sorted(table.loc[table["split"] == "train", "label"].unique())
        index = {n: i for i, n in enumerate(names)}
        return names, table["label"].map(index).fillna(-1).astype(int).to_numpy()
    names, mapping = resolve_classes(classes, table["label"])
    index = {n: i for i, n in enumerate(names)}
    return names, table["label"].map(mapping).map(index).fillna(-1).astype(int).to_numpy()


def face_datasets(images: np.ndarray, table: pd.DataFrame, targets: np.ndarray, augment: Any,
                  seed: int) -> dict[str, CachedImageDataset]:
    aug = build_augmentation(augment, seed=seed)
    height = images.shape[1]  # crops are H×W (e.g. 112×96): input_size = H, so the dataset never resizes them
    out = {}
    for s in SPLITS:
        keep = (table["split"] == s).to_numpy() & (targets >= 0)
        out[s] = CachedImageDataset(images, table.loc[keep, "index"].to_numpy(), targets[keep], height,
                                    augment=aug if s == "train" else None)
    return out


def init_from_checkpoint(model: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """Copy every weight but the classifier (``head.*``) from a stage-1 checkpoint; the shapes must match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the stage-1 model is missing; run its faces_pretrain stage first")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    own = model.state_dict()
    body = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("head.")}
    wrong = [k for k, v in body.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if not k.startswith("head.") and k not in body]
    if wrong or missing:
        raise ConfigError(f"{path} (arch {ckpt.get('arch')}) does not fit this run's architecture: "
                          f"mismatched {wrong[:4]}, missing {missing[:4]}; use the same arch (width) in both stages")
    model.load_state_dict(body, strict=False)
    log.info("initialised %d tensors from %s (new %s head)", len(body), path, type(model.head).__name__)
    return {"init_checkpoint": str(path), "init_arch": ckpt.get("arch"), "init_tensors": len(body)}


def train_face_run(run: str, cfg: dict[str, Any], kind: str, data_root: str | Path = "data/faces",
                   models_dir: str | Path = "models", live_root: str | Path = "plots/training",
                   where: str | None = None) -> dict[str, Any]:
    register_face_components()
    where = where or f"params.yaml: faces_{kind}.{run}"
    cfg = resolve_face_run(run, cfg, kind, where)
    if int(cfg["threads"]) > 0:
        torch.set_num_threads(int(cfg["threads"]))
    seed_everything(cfg["fit"]["seed"])
    images, table = load_face_split(data_root, cfg["dataset"])
    names, targets = class_targets(table, kind, cfg["classes"])
    ds = face_datasets(images, table, targets, cfg["augment"], cfg["fit"]["seed"])
    for s in ("train", "val"):
        if len(ds[s]) == 0:
            raise ConfigError(f"{where}: split '{s}' of {cfg['dataset']} is empty; check faces_split.{cfg['dataset']}")
    arch = dict(cfg["arch"])
    h, w = images.shape[1:3]
    model = create_model(arch.pop("name"), num_classes=len(names), in_chans=3, img_size=h, **arch)
    extra: dict[str, Any] = {}
    if kind == "finetune":
        extra = init_from_checkpoint(model, Path(models_dir) / cfg["init"] / "model.pt")
    run_dir = Path(models_dir) / run
    model, result = fit(model, ds["train"], ds["val"], cfg["fit"], run_dir, live_dir=Path(live_root) / run)
    best = result.history[result.best_epoch - 1] if result.history else {}
    info = {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early, "best_val_accuracy": best.get("val_accuracy"),
            "items": {s: len(d) for s, d in ds.items()}, "classes": len(names), **extra}
    if is_main_process():
        save_checkpoint(run_dir / "model.pt", model, cfg["arch"], names, {"size": int(h), "in_chans": 3,
                        "invert": False, "shape": [int(h), int(w)]},
                        extra={"run": run, "task": "faces", "stage": kind, "dataset": cfg["dataset"],
                               "model_name": cfg["model"], "init": cfg["init"]})
        write_yaml({"run": run, "stage": kind, **cfg}, run_dir / "args.yaml")
        (run_dir / "fit.json").write_text(json.dumps(info, indent=2) + "\n")
        # no wall time in the run directory (fit logs it): it would change the directory's hash in dvc.lock on
        # every repro and re-run the stages that depend on it
    return info
