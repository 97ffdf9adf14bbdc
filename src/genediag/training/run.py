"""A training run as configured in ``params.yaml: train.<run>``: data from the ingest cache and split,
a model from the factory, the generic trainer, and the outputs written next to each other."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genediag.config import ConfigError, check_keys, seed_everything, write_yaml
from genediag.data.datasets import CachedImageDataset, build_augmentation
from genediag.data.ingest import load_ingested
from genediag.data.tasks import task_targets
from genediag.models import create_model
from genediag.models.checkpoint import save_checkpoint
from genediag.training.trainer import fit, is_main_process, resolve_train_config

log = logging.getLogger(__name__)

RUN_KEYS = {"task", "model", "dataset", "classes", "arch", "input_size", "invert", "augment", "fit",
            "max_train_per_class", "max_val_per_class"}
SPLITS = ("train", "val", "test")


def resolve_run_config(run: str, cfg: dict[str, Any]) -> dict[str, Any]:
    where = f"params.yaml: train.{run}"
    check_keys(cfg, RUN_KEYS, where)
    for key in ("task", "model", "dataset", "classes", "arch", "input_size"):
        if key not in cfg:
            raise ConfigError(f"{where}: missing '{key}'")
    if "name" not in cfg["arch"]:
        raise ConfigError(f"{where}.arch: missing 'name' (the model factory's name, e.g. pinnacle_dcnn)")
    out = {"invert": False, "augment": [], **cfg}
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
    model, result = fit(model, ds["train"], ds["val"], cfg["fit"], run_dir, live_dir=Path(live_root) / run)
    info = {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "items": {s: len(d) for s, d in ds.items()}, "classes": names}
    # fit.json is part of a DVC output that other stages depend on: it holds no wall-clock time, so a
    # deterministic retrain leaves it, and everything downstream, unchanged.
    log.info("%s: trained in %.1f s", run, result.seconds)
    if is_main_process():
        save_checkpoint(run_dir / "model.pt", model, cfg["arch"], names,
                        {"size": cfg["input_size"], "in_chans": in_chans, "invert": cfg["invert"]},
                        extra={"run": run, "task": cfg["task"], "dataset": cfg["dataset"]})
        write_yaml({"run": run, **cfg}, run_dir / "args.yaml")
        (run_dir / "fit.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
