"""One generic trainer for every branch: factories for optimiser/scheduler/loss, pure
``train_one_epoch``/``validate`` functions, early stopping on validation loss with the best weights restored,
per-epoch ``summary.csv`` and dvclive curves, CPU/CUDA/MPS, AMP on CUDA, channels_last, and DDP under
``torchrun`` (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from genediag.config import ConfigError, check_keys, select_device

log = logging.getLogger(__name__)

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 64,
    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
    "scheduler": {"name": "none"},
    "loss": {"name": "cross_entropy", "label_smoothing": 0.0},
    "early_stopping": {"patience": 5, "min_delta": 0.0},
    "restore_best": True,    # false: keep the last epoch's weights (e.g. a tiny or unrepresentative val split)
    "seed": 0,
    "device": "auto",
    "amp": True,             # mixed precision; only takes effect on CUDA
    "channels_last": True,   # NHWC memory format; faster for convolutions on CUDA and on CPU (oneDNN)
    "num_workers": 0,
    "eval_batch_size": 256,
}


def resolve_train_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    check_keys(cfg, set(TRAIN_DEFAULTS), where)
    out = copy.deepcopy(TRAIN_DEFAULTS)
    for k, v in cfg.items():
        same_kind = isinstance(out[k], dict) and isinstance(v, dict) and v.get("name", out[k].get("name")) == out[k].get("name")
        out[k] = {**out[k], **v} if same_kind else v  # a different `name` (loss, optimizer…) starts from scratch
    return out


# --------------------------------------------------------------------------------------------- factories
def create_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    cfg = dict(cfg)
    name = cfg.pop("name", "adam").lower()
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, **cfg)
    if name == "adamw":
        return torch.optim.AdamW(params, **cfg)
    if name == "sgd":
        return torch.optim.SGD(params, **cfg)
    raise ConfigError(f"optimizer.name: unknown '{name}' (adam, adamw, sgd)")


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: dict[str, Any], epochs: int, steps_per_epoch: int):
    """Return (scheduler, step_per_batch). 'onecycle' follows ChromosomeNet's one-cycle policy."""
    cfg = dict(cfg)
    name = cfg.pop("name", "none").lower()
    if name in ("none", "constant"):
        return None, False
    if name == "onecycle":
        max_lr = cfg.pop("max_lr", optimizer.param_groups[0]["lr"])
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, epochs=epochs,
                                                   steps_per_epoch=max(1, steps_per_epoch), **cfg), True
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), **cfg), False
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, **cfg), False
    raise ConfigError(f"scheduler.name: unknown '{name}' (none, onecycle, cosine, step)")


_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str):
    """Register a loss builder; a loss may define ``scores(output) -> N×C`` when the model output is not plain
    class logits (e.g. a margin loss that needs feature norms)."""
    def deco(fn):
        if name in _LOSSES:
            raise ValueError(f"loss '{name}' registered twice")
        _LOSSES[name] = fn
        return fn
    return deco


class BinaryLogitLoss(nn.Module):
    """Sigmoid cross-entropy on a single output unit (class 1 = positive); `pos_weight` up-weights positives."""

    def __init__(self, pos_weight: float | None = None):
        super().__init__()
        self.pos_weight = None if pos_weight is None else torch.tensor(float(pos_weight))

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pw = None if self.pos_weight is None else self.pos_weight.to(out.device)
        return nn.functional.binary_cross_entropy_with_logits(out.reshape(-1).float(), y.float(), pos_weight=pw)


@register_loss("cross_entropy")
def _cross_entropy(label_smoothing: float = 0.0, weight: list[float] | None = None) -> nn.Module:
    """`weight`: per-class weights (a list, one per class); ``balanced`` is resolved from the training targets by
    :func:`genediag.training.run.train_run` before the trainer sees it."""
    if isinstance(weight, str):
        raise ConfigError(f"loss.weight: '{weight}' must be resolved to per-class weights before fit() "
                          "(training.run does this for 'balanced'); give a list of floats")
    w = None if weight is None else torch.tensor([float(v) for v in weight], dtype=torch.float32)
    return nn.CrossEntropyLoss(weight=w, label_smoothing=float(label_smoothing))

register_loss("bce")(BinaryLogitLoss)


def create_loss(cfg: dict[str, Any] | None = None) -> nn.Module:
    cfg = dict(cfg or {})
    name = cfg.pop("name", "cross_entropy")
    if name not in _LOSSES:
        raise ConfigError(f"loss.name: unknown '{name}' ({', '.join(sorted(_LOSSES))})")
    return _LOSSES[name](**cfg)


def class_scores(out: Any, criterion: nn.Module | None = None) -> torch.Tensor:
    """N×C scores whose argmax is the predicted class and whose softmax is the class probability.

    A single output unit (sigmoid models) becomes [−z/2, z/2], so softmax gives [1 − σ(z), σ(z)]."""
    if criterion is not None and hasattr(criterion, "scores"):
        return criterion.scores(out)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 2 and out.shape[1] == 1:
        z = out[:, 0]
        return torch.stack([-z / 2, z / 2], dim=1)
    return out


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

    def __init__(self):
        self.loss, self.correct, self.seen = 0.0, 0.0, 0.0

    def add(self, loss: torch.Tensor, out: Any, y: torch.Tensor, criterion: nn.Module) -> None:
        self.loss += loss.item() * len(y)
        self.correct += (class_scores(out, criterion).argmax(1) == y).sum().item()
        self.seen += len(y)

    def result(self, device: torch.device) -> OrderedDict:
        loss, correct, seen = _all_reduce([self.loss, self.correct, self.seen], device)
        return OrderedDict(loss=loss / max(seen, 1), accuracy=correct / max(seen, 1))


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    device: torch.device, scheduler=None, step_per_batch: bool = False, amp: bool = False,
                    scaler: torch.amp.GradScaler | None = None, channels_last: bool = False,
                    desc: str = "train") -> OrderedDict:
    model.train()
    tally = _Tally()
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not is_main_process(), mininterval=5.0):
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
        tally.add(loss, out, y, criterion)
    return tally.result(device)


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
             amp: bool = False, channels_last: bool = False) -> OrderedDict:
    model.eval()
    tally = _Tally()
    for x, y in loader:
        x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=amp):
            out = model(x)
        loss = criterion(out, y)
        tally.add(loss, out, y, criterion)
    return tally.result(device)


@torch.no_grad()
def predict_proba(model: nn.Module, dataset: Dataset, batch_size: int = 256, device: torch.device | None = None,
                  amp: bool = False, channels_last: bool = False, criterion: nn.Module | None = None) -> torch.Tensor:
    """Class probabilities N×C for a dataset, in dataset order (softmax of :func:`class_scores`)."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        with torch.autocast(device_type=device.type, enabled=amp):
            scores = class_scores(model(_to_device(x, device, channels_last)), criterion)
        out.append(torch.softmax(scores.float(), dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0)


# ----------------------------------------------------------------------------------------------- fit
@dataclass
class FitResult:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


class EarlyStopping:
    """Stop when validation loss has not improved by `min_delta` for `patience` epochs."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record `value`; True when this epoch is a new best."""
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


def fit(model: nn.Module, train_ds: Dataset, val_ds: Dataset, cfg: dict[str, Any], out_dir: str | Path,
        live_dir: str | Path | None = None) -> tuple[nn.Module, FitResult]:
    """Train `model`; return it with the best (lowest validation loss) weights restored.

    Writes ``summary.csv`` (one row per epoch) into `out_dir`, and dvclive curves into `live_dir`.
    """
    out_dir = Path(out_dir)
    device = select_device(cfg["device"])
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
        val_loader = DataLoader(val_ds, batch_size=cfg["eval_batch_size"], sampler=val_sampler, num_workers=cfg["num_workers"])
    else:
        train_sampler = None
        train_loader = DataLoader(train_ds, batch_size=bs, shuffle=True, generator=gen, num_workers=cfg["num_workers"],
                                  pin_memory=cuda)
        val_loader = DataLoader(val_ds, batch_size=cfg["eval_batch_size"], shuffle=False, num_workers=cfg["num_workers"])

    epochs = int(cfg["epochs"])
    criterion = create_loss(cfg["loss"]).to(device)
    optimizer = create_optimizer(net, cfg["optimizer"])
    scheduler, per_batch = create_scheduler(optimizer, cfg["scheduler"], epochs, len(train_loader))
    scaler = torch.amp.GradScaler("cuda") if amp else None
    stopper = EarlyStopping(**cfg["early_stopping"])
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    live = None
    if live_dir is not None and is_main_process():
        from dvclive import Live

        live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log.info("training %d params on %s%s for up to %d epochs (%d train / %d val items, batch %d)",
             sum(p.numel() for p in model.parameters()), device, f" ×{world}" if distributed else "",
             epochs, len(train_ds), len(val_ds), bs)
    for epoch in range(epochs):
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(net, train_loader, criterion, optimizer, device, scheduler, per_batch, amp, scaler,
                             channels_last, desc=f"epoch {epoch + 1}/{epochs}")
        if scheduler is not None and not per_batch:
            scheduler.step()
        va = validate(net, val_loader, criterion, device, amp, channels_last)
        improved = stopper.step(va["loss"], epoch)
        if improved:
            best_state = copy.deepcopy(model.state_dict())
        row = {"epoch": epoch + 1, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
               "val_loss": va["loss"], "val_accuracy": va["accuracy"], "lr": lr}
        history.append(row)
        log.info("epoch %d/%d train loss %.4f acc %.4f | val loss %.4f acc %.4f%s", epoch + 1, epochs, tr["loss"],
                 tr["accuracy"], va["loss"], va["accuracy"], " *" if improved else "")
        if is_main_process():
            _write_summary(out_dir / "summary.csv", history)
            if live is not None:
                for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
                    live.log_metric(k.replace("_", "/", 1), row[k])
                live.next_step()
        if stopper.should_stop:
            log.info("early stopping: validation loss has not improved for %d epochs", stopper.patience)
            break
    if cfg.get("restore_best", True):
        model.load_state_dict(best_state)
    if live is not None:
        live.end()
    result = FitResult(best_epoch=stopper.best_epoch + 1, best_val_loss=stopper.best, epochs_run=len(history),
                       stopped_early=stopper.should_stop, seconds=time.perf_counter() - t0, history=history)
    # wall time only here, in the log: callers keep it out of their DVC outputs (same commit, same hashes)
    log.info("trained in %.1f s; best epoch %d (val loss %.4f); %s", result.seconds, result.best_epoch,
             result.best_val_loss,
             "restored its weights" if cfg.get("restore_best", True) else f"kept the last epoch's ({len(history)})")
    return model, result


def _write_summary(path: Path, history: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
