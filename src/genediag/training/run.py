"""A training run (``<branch>.runs.<run>`` over its family, resolved by :mod:`genediag.schema`): the data of the
branch's dataset, a model from the factory, the one trainer, then what the run's users need beside the weights —
a softmax temperature fitted on the validation split, the out-of-distribution detector, and the preprocessing
the images went through — all in the checkpoint.

``seeds: K`` trains K models (seeds ``fit.seed`` … ``fit.seed + K − 1``); the first is ``model.pt``, the others are
in ``seeds.pt`` (empty for one seed), for the seed spread the evaluation reports.

Outputs in the run folder: ``model.pt``, ``seeds.pt``, ``model.onnx`` (the first seed's model for ONNX Runtime,
checked against torch), ``args.yaml`` (the resolved run entry, a params file of the evaluate
stage, so ``dvc params diff`` shows every run's values), ``summary.csv`` (one row per epoch), ``fit.json`` (best
epochs, temperatures, and the machine-dependent timings: images per second, epoch seconds, the data-loading share,
the model-only rate and peak memory; no other stage depends on it).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from genediag import io as gio
from genediag.config import ConfigError, seed_everything, write_yaml
from genediag.data.datasets import cap_per_class, load_split_data, split_datasets
from genediag.data.ingest import ingest_summary
from genediag.evaluation.uncertainty import fit_temperature
from genediag.models import create_model
from genediag.models.checkpoint import checkpoint_dict, save_seed_checkpoints
from genediag.models.inference import (fit_ood, input_thumbnails, module_digest, prefix_outputs,
                                      scores_and_features, set_ood_thresholds)
from genediag.training.trainer import fit, is_main_process

log = logging.getLogger(__name__)

INPUT_KIND = {"chromosome_crops": "chromosome_crop", "karyograms": "karyogram", "face_syndromes": "face",
              "face_identities": "face"}


def balanced_class_weights(targets: np.ndarray, num_classes: int) -> list[float]:
    """Inverse class frequency of the training targets, normalised to mean 1 (for ``loss.weight: balanced``)."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        raise ConfigError(f"loss.weight: balanced needs training items of every class; none for class index(es) "
                          f"{np.nonzero(counts == 0)[0].tolist()}")
    inv = 1.0 / counts
    return [round(float(w), 6) for w in inv / inv.mean()]


def input_spec(summary: dict[str, Any], cfg: dict[str, Any], in_chans: int) -> dict[str, Any]:
    """How a file becomes this model's input: the dataset's ingest (or face alignment) settings and the model's
    input size, channels and inversion (stored in the checkpoint; :mod:`genediag.predict` reads it)."""
    return {"kind": INPUT_KIND.get(summary.get("kind"), "image"), "size": int(cfg["input_size"]),
            "in_chans": int(in_chans), "invert": bool(cfg["invert"]), "cache": summary.get("ingest"),
            "blank_top": float(summary.get("blank_top", 0.0)), "faces": summary.get("faces_config"),
            "dataset_kind": summary.get("kind"), "crop_shape": list(summary.get("image_shape") or [])}


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
    """`prefix` applied once to every item of `dataset` (in order), as a dataset of the outputs. Draws nothing from
    the global random generator (a DataLoader's iterator would), so computing it once or per seed trains the same."""
    return FeatureDataset(prefix_outputs(prefix, dataset, batch_size, desc), dataset.targets)


def _warmup(model: nn.Module, split, train_ds: Dataset, val_ds: Dataset, cfg: dict[str, Any]) -> None:
    """``warmup: {epochs, lr}``: train the head alone on the (still untrained) base's outputs, computed once, before
    the blocks are unfrozen — the usual two-phase fine-tuning. A randomly initialised head on top of trainable
    blocks otherwise sends large, noisy gradients into them."""
    tail = model.base_tail(split)
    was = model.training
    model.eval()  # the base in inference mode (batch-norm statistics untouched) while its outputs are computed
    feats = {name: cached_features(tail, d, desc=f"warmup features {name}")
             for name, d in (("train", train_ds), ("val", val_ds))}
    model.train(was)
    fit_cfg = copy.deepcopy(cfg["fit"])
    fit_cfg.update(epochs=int(cfg["warmup"]["epochs"]), scheduler={"name": "none"}, resume=False,
                   early_stopping={"patience": 0, "min_delta": 0.0, "monitor": "val_loss"})
    fit_cfg["optimizer"]["lr"] = float(cfg["warmup"]["lr"])
    log.info("warmup: the head alone for %d epochs at lr %g", fit_cfg["epochs"], fit_cfg["optimizer"]["lr"])
    fit(model.head_part(), feats["train"], feats["val"], fit_cfg, None, live_dir=None, desc="warmup epoch")


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


def new_model(cfg: dict[str, Any], n_classes: int, in_chans: int,
              init: Callable[[nn.Module], Any] | None = None) -> nn.Module:
    """The untrained model of a resolved run config (after `init`, e.g. a stage-1 model's weights copied in)."""
    arch = dict(cfg["arch"])
    model = create_model(arch.pop("name"), num_classes=n_classes, in_chans=in_chans, img_size=cfg["input_size"],
                         **arch)
    if init is not None:
        init(model)
    return model


def shared_prefix_features(cfg: dict[str, Any], images: np.ndarray, table: pd.DataFrame, n_classes: int,
                           in_chans: int, init: Callable[[nn.Module], Any] | None = None) -> dict[str, Any] | None:
    """``cache_features``: the frozen prefix's outputs on the (unaugmented) train and validation images, computed
    once for all of a run's seeds and for their calibration, with the prefix's digest; None when the model has no
    frozen prefix. A seed whose prefix differs (its digest) computes its own, so sharing never changes a result.

    Before this the prefix ran four times per seed (train and validation for training, both again to calibrate):
    ~95 % of a frozen-VGG16 karyogram run."""
    if not cfg["cache_features"]:
        return None
    seed = int(cfg["fit"]["seed"])
    seed_everything(seed)
    model = new_model(cfg, n_classes, in_chans, init)
    split = model.cache_split() if hasattr(model, "cache_split") else None
    if split is None:
        return None
    ds = split_datasets(images, table, cfg["input_size"], cfg["invert"], cfg["augment"], seed, splits=("train", "val"))
    if len(ds["train"]) == 0 or len(ds["val"]) == 0:
        return None   # train_seed names the empty split
    log.info("cache_features: the frozen prefix runs once on %d train + %d validation images for %d seed(s)",
             len(ds["train"]), len(ds["val"]), int(cfg["seeds"]))
    return {"digest": module_digest(split[0]),
            "train": cached_features(split[0], without_augmentation(ds["train"]), desc="cache train"),
            "val": cached_features(split[0], ds["val"], desc="cache val"),
            "train_augmented": getattr(ds["train"], "augment", None) is not None}


def train_model(cfg: dict[str, Any], ds: dict[str, Dataset], n_classes: int, in_chans: int, run_dir: Path,
                live_dir: Path | None, resume_dir: Path | None, init: Callable[[nn.Module], Any] | None = None,
                shared: dict[str, Any] | None = None):
    """Build, (initialise,) (warm up,) fit and (recalibrate) one model of a resolved run config; returns
    (model, FitResult, cache). `init` changes the new model before training (e.g. copies a stage-1 model's weights);
    `shared` is :func:`shared_prefix_features`' result; `cache` holds the trained suffix and the prefix's outputs
    on the unaugmented train and validation images (for :func:`calibrate_model`), or is None without a split."""
    model = new_model(cfg, n_classes, in_chans, init)
    split = model.cache_split() if cfg["cache_features"] and hasattr(model, "cache_split") else None
    cache = None
    warm = cfg.get("warmup")
    if warm and not hasattr(model, "head_part"):
        raise ConfigError(f"warmup: arch '{cfg['arch']['name']}' has no separate head to warm up; set warmup: null")
    if cfg["cache_features"] and split is None:
        log.info("cache_features: %s trains every layer; nothing to cache", cfg["arch"]["name"])
    if split is not None:
        # the frozen prefix runs once per image; the trainer sees its outputs and trains the suffix, whose
        # parameters are the model's own, so the saved model is the whole network
        prefix, suffix = split
        if shared is not None and shared["digest"] != module_digest(prefix):
            log.info("cache_features: this seed's frozen prefix differs from the shared one; computing its own")
            shared = None
        if shared is not None:
            val_ds = shared["val"]
            train_ds = (cached_features(prefix, ds["train"], desc="cache train (augmented)")
                        if shared["train_augmented"] else shared["train"])
        else:
            train_ds, val_ds = (cached_features(prefix, ds[s], desc=f"cache {s}") for s in ("train", "val"))
        augmented = getattr(ds["train"], "augment", None) is not None
        plain = shared["train"] if shared is not None else (None if augmented else train_ds)
        if hasattr(model, "calibrate"):
            model.calibrate(train_ds.features.split(64), split=split)
        if warm:
            _warmup(model, split, train_ds, val_ds, cfg)
        _, result = fit(suffix, train_ds, val_ds, cfg["fit"], run_dir, live_dir=live_dir, resume_dir=resume_dir)
        if cfg["recalibrate_bn"]:
            n = recalibrate_batchnorm(suffix, train_ds, exclude=getattr(model, "_frozen", ()))
            log.info("recalibrate_bn: running statistics of %d batch-norm layers recomputed on the train split", n)
        model = model.to(memory_format=torch.contiguous_format)
        cache = {"suffix": suffix.cpu().eval(), "train": plain, "val": val_ds}
    else:
        if hasattr(model, "calibrate"):  # statistics of the base's outputs over (at most 64) training images
            sub = torch.utils.data.Subset(ds["train"], np.linspace(0, len(ds["train"]) - 1, min(64, len(ds["train"])))
                                          .round().astype(int).tolist())
            model.calibrate(x for x, _ in DataLoader(sub, batch_size=16, shuffle=False))
        if warm:
            _warmup(model, None, ds["train"], ds["val"], cfg)
        model, result = fit(model, ds["train"], ds["val"], cfg["fit"], run_dir, live_dir=live_dir,
                            resume_dir=resume_dir)
        if cfg["recalibrate_bn"]:
            n = recalibrate_batchnorm(model, ds["train"], exclude=getattr(model, "_frozen", ()))
            log.info("recalibrate_bn: running statistics of %d batch-norm layers recomputed on the train split", n)
        model = model.to(memory_format=torch.contiguous_format)
    return model.cpu().eval(), result, cache


def calibrate_model(model: nn.Module, ds: dict[str, Dataset], cfg: dict[str, Any],
                    cache: dict[str, Any] | None = None) -> tuple[float, dict[str, Any]]:
    """(softmax temperature fitted on validation, OOD detectors fitted on train with thresholds on validation).
    With `cache` (:func:`train_model`'s) the scores and features come from the trained suffix on the prefix's
    cached outputs (the same network, without running the frozen prefix again)."""
    bs = int(cfg["fit"]["eval_batch_size"])
    if cache is not None:
        val_scores, val_feats = scores_and_features(cache["suffix"], cache["val"], bs, features=True)
    else:
        val_scores, val_feats = scores_and_features(model, ds["val"], bs, features=True)
    temperature = 1.0
    if cfg["calibrate"] and len(ds["val"]) >= 2:
        temperature = round(float(fit_temperature(val_scores, ds["val"].targets)), 6)
    train = without_augmentation(ds["train"])
    if cache is not None and cache["train"] is not None:
        _, train_feats = scores_and_features(cache["suffix"], cache["train"], bs, features=True)
    else:
        _, train_feats = scores_and_features(model, train, bs, features=True)
    ood = fit_ood(train_feats, train.targets, input_thumbnails(train, bs))
    ood = set_ood_thresholds(ood, val_feats, input_thumbnails(ds["val"], bs), cfg["ood_quantile"])
    log.info("temperature %.3f (validation); OOD thresholds %.3g (features), %.3g (pixels) (%.0f %% of validation "
             "below)", temperature, ood["threshold"], ood["pixel_threshold"], 100 * cfg["ood_quantile"])
    return temperature, ood


def without_augmentation(dataset: Dataset) -> Dataset:
    """The same images without the training augmentation (statistics of what the model is shown at inference)."""
    if getattr(dataset, "augment", None) is None:
        return dataset
    out = copy.copy(dataset)
    out.augment = None
    return out


def export_deployed(model: nn.Module, inputs: torch.Tensor, path: Path) -> float:
    """``model.onnx``: the model as ONNX Runtime runs it (scores and penultimate features), checked against torch
    on `inputs` (validation images) to 1e-4 (+ 1e-4 × the largest score: float32 rounding on deep networks)."""
    from genediag.models.export import check_export, export_onnx

    export_onnx(model, tuple(inputs.shape[1:]), path, features=True)
    worst = check_export(model, path, inputs, atol=1e-4, rtol=1e-4)
    log.info("%s: exported for ONNX Runtime; largest score difference from torch %.2g on %d validation images",
             path, worst, len(inputs))
    return worst


def train_run(run: str, cfg: dict[str, Any], dataset_dir: str | Path, split_csv: str | Path, out_dir: str | Path,
              live_dir: str | Path | None = None, resume_root: str | Path | None = ".genediag/resume",
              branch: str = "chromosomes") -> dict[str, Any]:
    """Train the models of one resolved run config of a chromosome or karyogram run (see the module doc)."""
    summary = ingest_summary(dataset_dir)
    images, table, names = load_split_data(dataset_dir, split_csv, cfg["classes"])
    warnings = []
    caps = cfg["caps"]
    if (caps["train"] or caps["val"]) and not summary.get("synthetic"):
        msg = (f"synthetic-default caps {caps} are active on the non-synthetic dataset '{summary.get('dataset')}': "
               f"training uses a per-class subsample; set caps: {{train: null, val: null}} (presets/real_*.yaml)")
        log.warning(msg)
        warnings.append(msg)
    table = cap_per_class(table, caps["train"], cfg["fit"]["seed"])
    table = cap_per_class(table, caps["val"], cfg["fit"]["seed"], split="val")
    return train_and_save(run, cfg, images, table, names, summary, out_dir, live_dir, resume_root, branch, warnings)


def seed_workers(cfg: dict[str, Any]) -> tuple[int, int]:
    """(processes, torch threads each) for a run's seeds: ``seed_workers: 0`` (auto) trains every seed in its own
    process on a CPU-only machine, one torch thread each, up to two processes per core (small networks use two cores
    poorly: seeds side by side, one thread each, finish sooner than one after the other on two threads; and with
    three seeds on two cores, three processes keep both cores busy where two would leave one idle while the third
    seed trains alone); 1 trains them one after the other. A seed's result depends on its seed and its thread count
    only, so the number of processes does not change it."""
    from genediag.config import select_device
    from genediag.training.trainer import distributed_env

    seeds, want = int(cfg["seeds"]), int(cfg.get("seed_workers", 1))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if seeds < 2 or want == 1 or distributed_env()[1] > 1 or select_device(cfg["fit"]["device"]).type != "cpu":
        return 1, 0
    workers = max(1, min(seeds, 2 * cores if want == 0 else want))
    return (workers, max(1, cores // workers)) if workers > 1 else (1, 0)


def _worker_init(threads: int, level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(threads)


def train_seed(k: int, run: str, cfg: dict[str, Any], images: np.ndarray, table: pd.DataFrame, names: list[str],
               in_chans: int, out_dir: Path, live_dir: str | Path | None, resume_root: str | Path | None,
               branch: str, init: Callable[[nn.Module], Any] | None,
               shared: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, calibrate and return the model of seed ``fit.seed + k`` (with its fit record and detectors)."""
    seed = int(cfg["fit"]["seed"]) + k
    seed_cfg = copy.deepcopy(cfg)
    seed_cfg["fit"]["seed"] = seed
    seed_everything(seed)
    ds = split_datasets(images, table, cfg["input_size"], cfg["invert"], cfg["augment"], seed)
    if cfg["fit"]["loss"].get("weight") == "balanced":
        seed_cfg["fit"]["loss"]["weight"] = balanced_class_weights(ds["train"].targets, len(names))
        log.info("class weights (balanced): %s", dict(zip(names, seed_cfg["fit"]["loss"]["weight"])))
    weight = seed_cfg["fit"]["loss"].get("weight")
    if isinstance(weight, list) and len(weight) != len(names):
        raise ConfigError(f"{branch}.runs.{run}.fit.loss.weight: {len(weight)} weights for {len(names)} classes "
                          f"{names}; give one per class or 'balanced'")
    for s in ("train", "val"):
        if len(ds[s]) == 0:
            raise ConfigError(f"{run}: no {s} items for its classes; check the dataset's split")
    log.info("%s: seed %d (%d of %d)", run, seed, k + 1, cfg["seeds"])
    resume = Path(resume_root) / run / f"seed-{seed}" if resume_root else None
    model, result, cache = train_model(seed_cfg, ds, len(names), in_chans, out_dir if k == 0 else None,
                                       Path(live_dir) if (live_dir and k == 0) else None, resume, init, shared)
    temperature, ood = calibrate_model(model, ds, seed_cfg, cache)
    fit_info = {"seed": seed, "best_epoch": result.best_epoch, "best_val_loss": round(result.best_val_loss, 6),
                "best_val_accuracy": None if result.best_val_accuracy is None else round(result.best_val_accuracy, 6),
                "epochs_run": result.epochs_run, "stopped_early": result.stopped_early, "temperature": temperature}
    check = torch.stack([ds["val"][i][0] for i in range(min(64, len(ds["val"])))]) if k == 0 else None
    return {"model": model, "seed": seed, "fit": fit_info, "timing": result.timing, "temperature": temperature,
            "ood": ood, "check": check}


def train_and_save(run: str, cfg: dict[str, Any], images: np.ndarray, table: pd.DataFrame, names: list[str],
                   summary: dict[str, Any], out_dir: str | Path, live_dir: str | Path | None = None,
                   resume_root: str | Path | None = ".genediag/resume", branch: str = "chromosomes",
                   warnings: list[str] | None = None, init: Callable[[nn.Module], Any] | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``cfg['seeds']`` models on the rows of `table` with a ``target`` (−1: not in the task) and write the
    run folder: checkpoints with their preprocessing, temperature and OOD detector, ``args.yaml``, ``fit.json``.

    Seeds train side by side in worker processes when :func:`seed_workers` says so (`init` must then be picklable:
    a module-level function or a ``functools.partial`` of one); each seed's result depends only on its seed and its
    thread count, so a machine type gives the same models every time."""
    out_dir = Path(out_dir)
    warnings = list(warnings or [])
    in_chans = 1 if images.ndim == 3 else images.shape[-1]
    workers, threads = seed_workers(cfg)
    shared = shared_prefix_features(cfg, images, table, len(names), in_chans, init)
    args = (run, cfg, images, table, names, in_chans, out_dir, live_dir, resume_root, branch, init, shared)
    if workers > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        log.info("%s: %d seeds in %d worker processes, %d torch thread(s) each", run, cfg["seeds"], workers, threads)
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                    initargs=(threads, logging.getLogger().getEffectiveLevel())) as pool:
            results = list(pool.map(train_seed, range(int(cfg["seeds"])), *[[a] * int(cfg["seeds"]) for a in args]))
    else:
        results = [train_seed(k, *args) for k in range(int(cfg["seeds"]))]
    infos = [{**r["fit"], "timing": r["timing"], "threads": threads or torch.get_num_threads(),
              "seed_workers": workers} for r in results]
    models = [(r["model"], r["seed"], r["fit"], r["temperature"], r["ood"]) for r in results]
    deployed_check = results[0]["check"]
    if not is_main_process():
        return infos[0]
    blobs = [checkpoint_dict(model, cfg["arch"], names, input_spec(summary, cfg, in_chans), extra={
        "run": run, "branch": branch, "task": cfg["task"], "model": cfg["model"], "dataset": summary.get("dataset"),
        "synthetic": bool(summary.get("synthetic")), "seed": seed, "fit": fit_info, "temperature": temperature,
        "ood": ood, "warnings": warnings, "config": cfg, **(extra or {})})
        for model, seed, fit_info, temperature, ood in models]
    gio.save_torch(out_dir / "model.pt", blobs[0])
    save_seed_checkpoints(out_dir / "seeds.pt", blobs[1:])
    export_deployed(models[0][0], deployed_check, out_dir / "model.onnx")
    write_yaml({"run": run, "branch": branch, **cfg}, out_dir / "args.yaml")
    first = infos[0]["timing"]
    gio.write_json(out_dir / "fit.json", {
        "run": run, "classes": names, "items": {s: int(((table["split"] == s) & (table["target"] >= 0)).sum())
                                                 for s in ("train", "val", "test")},
        "train_images_per_second": first.get("train_images_per_second"),
        "model_only_images_per_second": first.get("model_only_images_per_second"),
        "epoch_rate_vs_model_only": first.get("epoch_rate_vs_model_only"),
        "data_loading_share": first.get("data_loading_share"), "epoch_seconds": first.get("epoch_seconds"),
        "peak_memory_mb": max(i["timing"].get("peak_memory_mb") or 0 for i in infos), "threads": first.get("threads"),
        "seeds": infos, "warnings": warnings, **(extra or {})})
    return infos[0]
