"""A training run as configured in ``params.yaml: train.<run>``: data from the ingest cache and split,
a model from the factory, the generic trainer, and the outputs written next to each other."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from genediag.config import ConfigError, check_keys, seed_everything, write_yaml
from genediag.data.datasets import CachedImageDataset, build_augmentation
from genediag.data.ingest import load_ingested
from genediag.data.tasks import task_targets
from genediag.models import create_model
from genediag.models.checkpoint import save_checkpoint
from genediag.training.trainer import fit, is_main_process, resolve_train_config

log = logging.getLogger(__name__)

RUN_KEYS = {"task", "model", "dataset", "classes", "arch", "input_size", "invert", "augment", "fit",
            "max_train_per_class", "max_val_per_class", "cache_features", "warmup", "recalibrate_bn"}
SPLITS = ("train", "val", "test")


def resolve_run_config(run: str, cfg: dict[str, Any]) -> dict[str, Any]:
    where = f"params.yaml: train.{run}"
    check_keys(cfg, RUN_KEYS, where)
    for key in ("task", "model", "dataset", "classes", "arch", "input_size"):
        if key not in cfg:
            raise ConfigError(f"{where}: missing '{key}'")
    if "name" not in cfg["arch"]:
        raise ConfigError(f"{where}.arch: missing 'name' (the model factory's name, e.g. pinnacle_dcnn)")
    out = {"invert": False, "augment": [], "cache_features": False, **cfg}
    if out["cache_features"] and out["augment"]:
        raise ConfigError(f"{where}: cache_features needs augment: [] (online augmentation changes every epoch's "
                          f"input; augment offline, e.g. with a balance stage, or set cache_features: false)")
    for key in ("max_train_per_class", "max_val_per_class"):
        cap = out.get(key)
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ConfigError(f"{where}.{key}: expected an integer >= 1 or null (no cap), got {cap!r}")
    out["fit"] = resolve_train_config(cfg.get("fit", {}), f"{where}.fit")
    return out


def cap_train_per_class(table: pd.DataFrame, cap: int | None, seed: int, split: str = "train") -> pd.DataFrame:
    """Keep at most `cap` rows per class of `split` (``max_train_per_class``; ``max_val_per_class`` with
    ``split="val"``): a seeded random subsample per target. Rows of other splits and rows outside the task are
    untouched, the kept rows keep their order; ``cap=None`` keeps everything. The test split is never capped."""
    if cap is None:
        return table
    if split not in ("train", "val"):
        raise ValueError(f"only the train and val splits can be capped, not {split!r}")
    in_split = (table["split"] == split) & (table["target"] >= 0)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(cap)] + ([] if split == "train" else [1])))
    drop = []
    for target in sorted(table.loc[in_split, "target"].unique()):
        rows = table.index[in_split & (table["target"] == target)].to_numpy()
        if len(rows) > cap:
            keep = rng.choice(len(rows), size=cap, replace=False)
            drop.extend(np.delete(rows, keep).tolist())
    if drop:
        log.info("max_%s_per_class=%d: using %d of %d %s items", split, cap, int(in_split.sum()) - len(drop),
                 int(in_split.sum()), split)
    return table.drop(index=drop)


def balanced_class_weights(targets: np.ndarray, num_classes: int) -> list[float]:
    """Inverse class frequency of the training targets, normalised to mean 1 (for ``loss.weight: balanced``)."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        raise ConfigError(f"loss.weight: balanced needs training items of every class; none for class index(es) "
                          f"{np.nonzero(counts == 0)[0].tolist()}")
    inv = 1.0 / counts
    return [round(float(w), 6) for w in inv / inv.mean()]


def load_split_data(dataset_dir: str | Path, split_csv: str | Path, classes: Any):
    """(images memmap, split table with 'target' column, class names) for one task."""
    manifest, images = load_ingested(dataset_dir)
    split = pd.read_csv(split_csv, dtype={"label": str, "group_id": str, "cell_id": str}, keep_default_na=False)
    if len(split) != len(manifest) or not (split["sha256"].to_numpy() == manifest["sha256"].to_numpy()).all():
        raise ConfigError(f"{split_csv} does not match {dataset_dir}/manifest.csv; re-run the split stage")
    missing = [s for s in SPLITS if s not in set(split["split"])]
    if missing:
        raise ConfigError(f"{split_csv}: split(s) {missing} are empty; the trainer needs train, val and test")
    names, targets = task_targets(split, classes)
    split = split.assign(target=targets)
    return images, split, names


def make_datasets(images: np.ndarray, table: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, CachedImageDataset]:
    aug = build_augmentation(cfg["augment"], seed=cfg["fit"]["seed"])
    out = {}
    for s in SPLITS:
        rows = table[(table["split"] == s) & (table["target"] >= 0)]
        out[s] = CachedImageDataset(images, rows["index"].to_numpy(), rows["target"].to_numpy(), cfg["input_size"],
                                    invert=cfg["invert"], augment=aug if s == "train" else None)
    return out


class FeatureDataset(Dataset):
    """Precomputed model inputs (e.g. a frozen prefix's outputs) with integer targets."""

    def __init__(self, features: torch.Tensor, targets: np.ndarray):
        self.features, self.targets = features, np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.features[i], int(self.targets[i])


@torch.no_grad()
def cached_features(prefix: nn.Module, dataset: Dataset, batch_size: int = 32, desc: str = "features") -> FeatureDataset:
    """`prefix` applied once to every item of `dataset` (in order), as a dataset of the outputs."""
    prefix.eval()
    out = [prefix(x) for x, _ in tqdm(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc=desc,
                                       leave=False)]
    return FeatureDataset(torch.cat(out).contiguous(), dataset.targets)


def _warmup(model: nn.Module, split, train_ds: Dataset, val_ds: Dataset, cfg: dict[str, Any], run_dir: Path) -> None:
    """``warmup: {epochs, lr}``: train the head alone on the (still untrained) base's outputs, computed once, before
    the blocks are unfrozen — the usual two-phase fine-tuning. A randomly initialised head on top of trainable
    blocks otherwise sends large, noisy gradients into them. Curves: ``<run_dir>/warmup/summary.csv``."""
    import copy

    tail = model.base_tail(split)
    was = model.training
    model.eval()  # the base in inference mode (batch-norm statistics untouched) while its outputs are computed
    feats = {name: cached_features(tail, d, desc=f"warmup features {name}")
             for name, d in (("train", train_ds), ("val", val_ds))}
    model.train(was)
    fit_cfg = copy.deepcopy(cfg["fit"])
    fit_cfg["epochs"] = int(cfg["warmup"]["epochs"])
    fit_cfg["optimizer"]["lr"] = float(cfg["warmup"]["lr"])
    fit_cfg["scheduler"] = {"name": "none"}
    fit_cfg["early_stopping"] = {"patience": 0, "min_delta": 0.0}
    log.info("warmup: the head alone for %d epochs at lr %g", fit_cfg["epochs"], fit_cfg["optimizer"]["lr"])
    fit(model.head_part(), feats["train"], feats["val"], fit_cfg, run_dir / "warmup", live_dir=None)


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, dataset: Dataset, exclude: Sequence[nn.Module] = (), batch_size: int = 32) -> int:
    """Recompute the running statistics of `net`'s batch-norm layers (except `exclude`, e.g. frozen ones) as plain
    averages over `dataset` with everything else in inference mode (dropout off); returns the number of layers.

    During training a batch-norm layer after dropout collects statistics of dropped-out activations, which differ
    from inference-time ones ("variance shift", Li et al. 2019); the thesis head has dropout → dense → batch norm,
    and with the default's few epochs the shift moved every probability of some variants below 0.5 (recall 0 at a
    test AUC of 0.9). Recomputing the statistics with the final weights and dropout off removes the shift."""
    skip = {id(m) for m in exclude}
    layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in skip]
    if not layers:
        return 0
    net.eval()
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        net(x)
    for m, mom in zip(layers, momenta):
        m.momentum = mom
        m.eval()
    return len(layers)


def train_run(run: str, cfg: dict[str, Any], data_dir: str | Path = "data", out_dir: str | Path = "models",
              live_root: str | Path = "plots/training") -> dict[str, Any]:
    cfg = resolve_run_config(run, cfg)
    seed_everything(cfg["fit"]["seed"])
    data_dir = Path(data_dir)
    images, table, names = load_split_data(data_dir / "ingested" / cfg["dataset"],
                                           data_dir / "splits" / f"{cfg['dataset']}.csv", cfg["classes"])
    table = cap_train_per_class(table, cfg.get("max_train_per_class"), cfg["fit"]["seed"])
    table = cap_train_per_class(table, cfg.get("max_val_per_class"), cfg["fit"]["seed"], split="val")
    ds = make_datasets(images, table, cfg)
    if cfg["fit"]["loss"].get("weight") == "balanced":
        cfg["fit"]["loss"]["weight"] = balanced_class_weights(ds["train"].targets, len(names))
        log.info("class weights (balanced): %s", dict(zip(names, cfg["fit"]["loss"]["weight"])))
    weight = cfg["fit"]["loss"].get("weight")
    if isinstance(weight, list) and len(weight) != len(names):
        raise ConfigError(f"params.yaml: train.{run}.fit.loss.weight: {len(weight)} weights for {len(names)} classes "
                          f"{names}; give one per class or 'balanced'")
    in_chans = ds["train"].in_chans
    arch = dict(cfg["arch"])
    model = create_model(arch.pop("name"), num_classes=len(names), in_chans=in_chans, img_size=cfg["input_size"], **arch)
    run_dir = Path(out_dir) / run
    split = model.cache_split() if cfg["cache_features"] and hasattr(model, "cache_split") else None
    warm = cfg.get("warmup")
    if warm:
        check_keys(warm, {"epochs", "lr"}, f"params.yaml: train.{run}.warmup")
        if not hasattr(model, "head_part"):
            raise ConfigError(f"params.yaml: train.{run}.warmup: arch '{cfg['arch']['name']}' has no separate head to "
                              "warm up; remove warmup")
    if cfg["cache_features"] and split is None:
        log.info("cache_features: %s trains every layer; nothing to cache", cfg["arch"]["name"])
    if split is not None:
        # the frozen prefix runs once per image; the trainer sees its outputs and trains the suffix, whose
        # parameters are the model's own, so the saved model is the whole network
        prefix, suffix = split
        train_ds, val_ds = (cached_features(prefix, ds[s], desc=f"cache {s}") for s in ("train", "val"))
        log.info("cache_features: prefix outputs %s cached for %d train / %d val items", tuple(train_ds.features.shape[1:]),
                 len(train_ds), len(val_ds))
        if hasattr(model, "calibrate"):
            model.calibrate(train_ds.features.split(64), split=split)
        if warm:
            _warmup(model, split, train_ds, val_ds, cfg, run_dir)
        _, result = fit(suffix, train_ds, val_ds, cfg["fit"], run_dir, live_dir=Path(live_root) / run)
        if cfg.get("recalibrate_bn"):
            n = recalibrate_batchnorm(suffix, train_ds, exclude=getattr(model, "_frozen", ()))
            log.info("recalibrate_bn: running statistics of %d batch-norm layers recomputed on the train split", n)
        model = model.to(memory_format=torch.contiguous_format)
    else:
        if hasattr(model, "calibrate"):  # statistics of the base's outputs over (at most 64) training images
            sub = torch.utils.data.Subset(ds["train"], np.linspace(0, len(ds["train"]) - 1, min(64, len(ds["train"])))
                                          .round().astype(int).tolist())
            model.calibrate(x for x, _ in DataLoader(sub, batch_size=16, shuffle=False))
        if warm:
            _warmup(model, None, ds["train"], ds["val"], cfg, run_dir)
        model, result = fit(model, ds["train"], ds["val"], cfg["fit"], run_dir, live_dir=Path(live_root) / run)
        if cfg.get("recalibrate_bn"):
            n = recalibrate_batchnorm(model, ds["train"], exclude=getattr(model, "_frozen", ()))
            log.info("recalibrate_bn: running statistics of %d batch-norm layers recomputed on the train split", n)
    info = {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "items": {s: len(d) for s, d in ds.items()}, "classes": names}
    # fit.json is part of a DVC output that other stages depend on: it holds no wall-clock time (fit logs it), so
    # a deterministic retrain leaves it, and everything downstream, unchanged.
    if is_main_process():
        save_checkpoint(run_dir / "model.pt", model, cfg["arch"], names,
                        {"size": cfg["input_size"], "in_chans": in_chans, "invert": cfg["invert"]},
                        extra={"run": run, "task": cfg["task"], "dataset": cfg["dataset"]})
        write_yaml({"run": run, **cfg}, run_dir / "args.yaml")
        (run_dir / "fit.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
