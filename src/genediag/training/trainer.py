"""One trainer for every branch (chromosome and karyogram classifiers, the karyogram base, the face models).

:func:`fit`: factories for optimiser/scheduler/loss (``fit`` entries of params.yaml, see :mod:`genediag.schema`),
plain ``train_one_epoch``/``validate`` functions, early stopping on the validation loss (or accuracy) with the best
weights restored, a per-epoch ``summary.csv`` and dvclive curves, CPU/CUDA/MPS, AMP on CUDA, channels_last,
DDP under ``torchrun`` (gloo on CPU, nccl on CUDA), and **resumable**: after every epoch the whole training state
(model, optimiser, scheduler, early stopping, best weights, history and every random generator: torch, numpy,
Python, the data order and the augmentation's) is written to ``resume_dir``; a killed run started again continues
from its last finished epoch and ends byte-identical to an uninterrupted one on the same machine. The state is
removed when the run finishes.

It also measures what the run cost — ``train_images_per_second`` (training epochs only), the seconds of every
epoch, the share of the epoch spent waiting for data, a model-only forward+backward rate on random inputs of the
same shape measured in the same process, and the peak resident memory — returned in :class:`FitResult.timing`
(machine-dependent, so callers keep it out of outputs other stages depend on).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import math
import os
import random
import resource
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from genediag.config import ConfigError, select_device
from genediag.models.inference import _to_device, class_scores
from genediag.training.losses import create_loss

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- factories
def create_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    cfg = {k: v for k, v in cfg.items() if v is not None}
    name = cfg.pop("name", "adam").lower()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    if "betas" in cfg:
        cfg["betas"] = tuple(cfg["betas"])
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    if name not in classes:
        raise ConfigError(f"optimizer.name: unknown '{name}' (adam, adamw, sgd)")
    try:
        return classes[name](params, **cfg)
    except TypeError as exc:
        raise ConfigError(f"optimizer {name}: {exc}") from None


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: dict[str, Any], epochs: int, steps_per_epoch: int):
    """Return (scheduler, step_per_batch). 'onecycle' follows ChromosomeNet's one-cycle policy."""
    cfg = {k: v for k, v in cfg.items() if v is not None}
    name = cfg.pop("name", "none").lower()
    if name in ("none", "constant"):
        return None, False
    if name == "onecycle":
        max_lr = cfg.pop("max_lr", optimizer.param_groups[0]["lr"])
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, epochs=epochs,
                                                   steps_per_epoch=max(1, steps_per_epoch), **cfg), True
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs)), False
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, **cfg), False
    raise ConfigError(f"scheduler.name: unknown '{name}' (none, onecycle, cosine, step)")


# ------------------------------------------------------------------------------------------ distributed
def distributed_env() -> tuple[int, int]:
    """(rank, world_size) under torchrun; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: torch.device) -> bool:
    rank, world = distributed_env()
    if world <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    log.info("DDP: rank %d of %d (%s)", rank, world, dist.get_backend())
    return True


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def is_main_process() -> bool:
    return distributed_env()[0] == 0


# ---------------------------------------------------------------------------------------------- loops
class _Tally:
    """Running loss and accuracy over batches, summed across DDP ranks at the end."""

    def __init__(self, criterion: nn.Module):
        self.criterion = criterion
        self.loss, self.correct, self.seen = 0.0, 0.0, 0.0

    def add(self, loss: torch.Tensor, out: Any, y: torch.Tensor) -> None:
        self.loss += loss.item() * len(y)
        if hasattr(self.criterion, "correct"):
            self.correct += self.criterion.correct(out, y)
        else:
            scores = self.criterion.scores(out) if hasattr(self.criterion, "scores") else class_scores(out)
            self.correct += (scores.argmax(1) == y).sum().item()
        self.seen += len(y)

    def result(self, device: torch.device) -> OrderedDict:
        loss, correct, seen = _all_reduce([self.loss, self.correct, self.seen], device)
        return OrderedDict(loss=loss / max(seen, 1), accuracy=correct / max(seen, 1))


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    device: torch.device, scheduler=None, step_per_batch: bool = False, amp: bool = False,
                    scaler: torch.amp.GradScaler | None = None, channels_last: bool = False,
                    desc: str = "train") -> OrderedDict:
    """One pass over `loader`; the result also holds ``data_seconds`` (time spent waiting for batches)."""
    model.train()
    tally = _Tally(criterion)
    data_seconds, t = 0.0, time.perf_counter()
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not is_main_process(), mininterval=5.0):
        data_seconds += time.perf_counter() - t
        x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, enabled=amp):
            out = model(x)
            loss = criterion(out, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()}; lower optimizer.lr or check the data")
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None and step_per_batch:
            scheduler.step()
        tally.add(loss, out, y)
        t = time.perf_counter()
    res = tally.result(device)
    res["data_seconds"] = data_seconds
    return res


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
             amp: bool = False, channels_last: bool = False) -> OrderedDict:
    model.eval()
    tally = _Tally(criterion)
    for x, y in loader:
        x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=amp):
            out = model(x)
        tally.add(criterion(out, y), out, y)
    return tally.result(device)


# ----------------------------------------------------------------------------------------------- fit
@dataclass
class FitResult:
    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float | None
    epochs_run: int
    stopped_early: bool
    resumed_from_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)


class EarlyStopping:
    """Stop when the monitored validation figure has not improved by `min_delta` for `patience` epochs."""

    def __init__(self, patience: int, min_delta: float = 0.0, monitor: str = "val_loss"):
        self.patience, self.min_delta, self.monitor = int(patience), float(min_delta), monitor
        self.best = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def step(self, row: dict[str, float], epoch: int) -> bool:
        """Record an epoch's row; True when this epoch is a new best."""
        value = row[self.monitor] if self.monitor == "val_loss" else -row[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


def _rng_state(gen: torch.Generator, augment: Any) -> dict[str, Any]:
    """Every random generator the next epoch draws from, as tensors and plain values (weights_only-loadable)."""
    np_state = np.random.get_state(legacy=False)
    np_state = {**np_state, "state": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                                      "pos": int(np_state["state"]["pos"])}}
    state = {"torch": torch.get_rng_state(), "numpy": np_state, "python": random.getstate(),
             "loader": gen.get_state()}
    state["augment"] = [{"numpy": t.random_generator.bit_generator.state, "python": t.py_random.getstate()}
                        for t in _random_parts(augment)]
    return state


def _random_parts(augment: Any) -> list[Any]:
    """The augmentation pipeline and each of its transforms, recursively: albumentations 2.x gives every
    transform its own copy of the generators."""
    if augment is None or getattr(augment, "random_generator", None) is None:
        return []
    parts = [augment]
    for t in getattr(augment, "transforms", []) or []:
        parts += _random_parts(t)
    return parts


def _set_rng_state(state: dict[str, Any], gen: torch.Generator, augment: Any) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state({**np_state, "state": {"key": np_state["state"]["key"].numpy().astype(np.uint32),
                                               "pos": int(np_state["state"]["pos"])}})
    random.setstate(_tuples(state["python"]))
    gen.set_state(state["loader"])
    for part, saved in zip(_random_parts(augment), state.get("augment", [])):
        part.random_generator.bit_generator.state = saved["numpy"]
        part.py_random.setstate(_tuples(saved["python"]))


def _tuples(x: Any) -> Any:
    """Lists back to tuples (Python's random state is nested tuples; the checkpoint keeps them as such)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def _fingerprint(model: nn.Module, cfg: dict[str, Any], n_train: int, n_val: int) -> str:
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    text = json.dumps({"cfg": cfg, "shapes": shapes, "n": [n_train, n_val]}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _augmentation_of(dataset: Dataset) -> Any:
    return getattr(dataset, "augment", None)


def model_only_rate(model: nn.Module, criterion: nn.Module, example: tuple[Any, Any], device: torch.device,
                    batch_size: int, batches: int = 5, budget_seconds: float = 5.0) -> float | None:
    """Images per second of forward + backward (+ an optimiser step) on a copy of `model`, on one fixed batch of the
    training input's shape: no data loading, the ceiling a training epoch is compared against. At most
    `budget_seconds` of timed work."""
    x, y = example
    x = torch.as_tensor(x)
    net = copy.deepcopy(model).train()
    xb = x.unsqueeze(0).repeat(batch_size, *([1] * x.ndim)).to(device)
    y = torch.as_tensor(y)
    yb = y.unsqueeze(0).repeat(batch_size, *([1] * y.ndim)).to(device)
    crit = copy.deepcopy(criterion)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.0)
    done, elapsed = 0, 0.0
    with torch.random.fork_rng(devices=[]):
        for i in range(batches + 1):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            crit(net(xb), yb).backward()
            opt.step()
            if i:   # the first pass warms up (allocations, kernel choice)
                done, elapsed = done + batch_size, elapsed + time.perf_counter() - t0
                if elapsed > budget_seconds:
                    break
    return round(done / elapsed, 1) if elapsed else None


def fit(model: nn.Module, train_ds: Dataset, val_ds: Dataset, cfg: dict[str, Any], out_dir: str | Path | None,
        live_dir: str | Path | None = None, resume_dir: str | Path | None = None,
        desc: str = "epoch") -> tuple[nn.Module, FitResult]:
    """Train `model` with the resolved ``fit`` config; return it with the best weights restored (unless
    ``restore_best: false``). Writes ``summary.csv`` into `out_dir` and dvclive curves into `live_dir`."""
    device = select_device(cfg["device"])
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    distributed = init_distributed(device)
    rank, world = distributed_env()
    cuda = device.type == "cuda"
    amp, channels_last = bool(cfg["amp"]) and cuda, bool(cfg["channels_last"])
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None) if distributed else model

    seed = int(cfg["seed"])
    gen = torch.Generator().manual_seed(seed)
    bs = int(cfg["batch_size"])
    if distributed:
        train_sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        val_sampler = DistributedSampler(val_ds, num_replicas=world, rank=rank, shuffle=False)
        train_loader = DataLoader(train_ds, batch_size=bs, sampler=train_sampler, num_workers=cfg["num_workers"])
        val_loader = DataLoader(val_ds, batch_size=cfg["eval_batch_size"], sampler=val_sampler,
                                num_workers=cfg["num_workers"])
    else:
        train_sampler = None
        train_loader = DataLoader(train_ds, batch_size=bs, shuffle=True, generator=gen, num_workers=cfg["num_workers"],
                                  pin_memory=cuda)
        val_loader = DataLoader(val_ds, batch_size=cfg["eval_batch_size"], shuffle=False,
                                num_workers=cfg["num_workers"])

    epochs = int(cfg["epochs"])
    criterion = create_loss(cfg["loss"]).to(device)
    optimizer = create_optimizer(net, cfg["optimizer"])
    scheduler, per_batch = create_scheduler(optimizer, cfg["scheduler"], epochs, len(train_loader))
    scaler = torch.amp.GradScaler("cuda") if amp else None
    stopper = EarlyStopping(**cfg["early_stopping"])
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    augment = _augmentation_of(train_ds)

    resume_file = Path(resume_dir) / "state.pt" if resume_dir is not None and cfg.get("resume", True) else None
    fingerprint = _fingerprint(model, cfg, len(train_ds), len(val_ds))
    start = 0
    if resume_file is not None and resume_file.is_file() and not distributed:
        state = torch.load(resume_file, map_location=device, weights_only=True)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            stopper.load_state_dict(state["stopper"])
            best_state = state["best_state"]
            history = [dict(r) for r in state["history"]]
            if state.get("criterion_steps") is not None:
                criterion.steps = int(state["criterion_steps"])
            _set_rng_state(state["rng"], gen, augment)
            start = int(state["epoch"])
            log.info("resuming from %s: %d of %d epochs done", resume_file, start, epochs)
        else:
            log.warning("%s belongs to another configuration or dataset; starting from epoch 1", resume_file)

    live = None
    if live_dir is not None and is_main_process():
        from dvclive import Live

        live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
        for row in history:   # a resumed run: the finished epochs' curves first (DVC cleared the folder)
            _log_live(live, row)
    if out_dir is not None and is_main_process():
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    log.info("training %d params on %s%s for up to %d epochs (%d train / %d val items, batch %d)",
             sum(p.numel() for p in model.parameters()), device, f" ×{world}" if distributed else "",
             epochs, len(train_ds), len(val_ds), bs)
    epoch_seconds, data_seconds, train_seconds = [], 0.0, 0.0
    for epoch in range(start, epochs):
        if stopper.should_stop:
            break
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        tr = train_one_epoch(net, train_loader, criterion, optimizer, device, scheduler, per_batch, amp, scaler,
                             channels_last, desc=f"{desc} {epoch + 1}/{epochs}")
        t1 = time.perf_counter()
        if scheduler is not None and not per_batch:
            scheduler.step()
        va = validate(net, val_loader, criterion, device, amp, channels_last)
        epoch_seconds.append(round(time.perf_counter() - t0, 3))
        train_seconds += t1 - t0
        data_seconds += tr["data_seconds"]
        row = {"epoch": epoch + 1, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
               "val_loss": va["loss"], "val_accuracy": va["accuracy"], "lr": lr}
        improved = stopper.step(row, epoch)
        if improved:
            best_state = copy.deepcopy(model.state_dict())
        history.append(row)
        log.info("epoch %d/%d train loss %.4f acc %.4f | val loss %.4f acc %.4f%s", epoch + 1, epochs, tr["loss"],
                 tr["accuracy"], va["loss"], va["accuracy"], " *" if improved else "")
        if is_main_process():
            if out_dir is not None:
                _write_summary(Path(out_dir) / "summary.csv", history)
            if live is not None:
                _log_live(live, row)
            if resume_file is not None and epoch + 1 < epochs and not stopper.should_stop:
                _save_resume(resume_file, {
                    "fingerprint": fingerprint, "epoch": epoch + 1, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "stopper": stopper.state_dict(), "best_state": best_state, "history": history,
                    "criterion_steps": getattr(criterion, "steps", None), "rng": _rng_state(gen, augment)})
    if stopper.should_stop:
        log.info("early stopping: %s has not improved for %d epochs", stopper.monitor, stopper.patience)
    if cfg.get("restore_best", True):
        model.load_state_dict(best_state)
    if live is not None:
        live.end()
    if resume_file is not None and resume_file.exists() and is_main_process():
        resume_file.unlink()
    best = history[stopper.best_epoch] if 0 <= stopper.best_epoch < len(history) else {}
    n_epochs_here = len(epoch_seconds)
    timing = {
        "epoch_seconds": epoch_seconds,
        "train_images_per_second": round(n_epochs_here * len(train_ds) / train_seconds, 1) if train_seconds else None,
        "data_loading_share": round(data_seconds / train_seconds, 4) if train_seconds else None,
        "model_only_images_per_second": None,
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(), "device": str(device),
        "resumed_from_epoch": start,
    }
    if len(train_ds) and n_epochs_here:
        timing["model_only_images_per_second"] = model_only_rate(model, criterion, train_ds[0], device, bs)
        rate = timing["train_images_per_second"]
        if rate and timing["model_only_images_per_second"]:
            timing["epoch_rate_vs_model_only"] = round(rate / timing["model_only_images_per_second"], 3)
    result = FitResult(best_epoch=stopper.best_epoch + 1, best_val_loss=float(best.get("val_loss", math.nan)),
                       best_val_accuracy=best.get("val_accuracy"), epochs_run=len(history),
                       stopped_early=stopper.should_stop, resumed_from_epoch=start, history=history, timing=timing)
    log.info("trained in %.1f s (%s img/s; data loading %s of the epoch; model alone %s img/s); best epoch %d "
             "(val loss %.4f); %s", sum(epoch_seconds), timing["train_images_per_second"],
             timing["data_loading_share"], timing["model_only_images_per_second"], result.best_epoch,
             result.best_val_loss,
             "restored its weights" if cfg.get("restore_best", True) else f"kept the last epoch's ({len(history)})")
    return model, result


def _log_live(live, row: dict[str, float]) -> None:
    for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        live.log_metric(k.replace("_", "/", 1), row[k])
    live.next_step()


def _save_resume(path: Path, state: dict[str, Any]) -> None:
    from genediag import io as gio

    gio.save_torch(path, state)


def _write_summary(path: Path, history: list[dict[str, float]]) -> None:
    from genediag import io as gio

    def write(p: Path) -> None:
        with p.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(history[0]))
            w.writeheader()
            w.writerows(history)

    gio.write_with(path, write)
