"""Bayesian hyper-parameter search (Optuna TPE) of the learning rate and the batch size, on validation loss.

``karyograms.hpsearch.<name>`` in params.yaml::

    run: karyograms-vgg16-all   # the karyograms.runs entry whose model, data and fit settings are searched
    trials: 3
    epochs: 1                   # per trial (early stopping off); the best val loss over them scores the trial
    max_train_items: 48         # seeded, class-stratified subset of the train split (null: all)
    lr: [1.0e-5, 1.0e-2]        # log-uniform range
    batch_size: [8, 16, 32]     # categorical
    seed: 0

Writes ``hpsearch/<name>.json`` ({lr, batch_size, best_val_loss, ...}), ``hpsearch/<name>.trials.csv`` and
``hpsearch/<name>.preset.yaml``: the best values as a params preset for the searched run (``fit.optimizer.lr``,
a scheduler's ``max_lr``, ``fit.batch_size`` under ``karyograms.runs.<run>``). The training stage uses them once
they are params:

    python -m genediag.presets apply hpsearch/<name>.preset.yaml && dvc exp run

so DVC tracks them like any other setting (``dvc params diff`` shows the change, only the affected
``karyogram_train@``/``karyogram_evaluate@`` stages rerun, and the values are versioned with the commit). A stage reading the JSON
directly would need a per-run dependency that DVC's ``foreach`` cannot express. Every trial is seeded with
`seed` and so is the TPE sampler: the search is deterministic on CPU.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader

from genediag import io as gio
from genediag.config import ConfigError, seed_everything
from genediag.schema import HPSEARCH, validate

log = logging.getLogger(__name__)

def stratified_subset(table: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """At most `cap` train rows, each class keeping its share (at least one row); other splits untouched."""
    train = (table["split"] == "train") & (table["target"] >= 0)
    n = int(train.sum())
    if cap is None or n <= cap:
        return table
    rng = np.random.default_rng(seed)
    keep = []
    groups = table[train].groupby("target")
    for _, g in groups:
        k = max(1, int(round(cap * len(g) / n)))
        keep.extend(rng.choice(g.index.to_numpy(), size=min(k, len(g)), replace=False).tolist())
    drop = table.index[train].difference(keep)
    return table.drop(index=drop)


def with_hparams(fit_cfg: dict[str, Any], lr: float, batch_size: int) -> dict[str, Any]:
    out = copy.deepcopy(fit_cfg)
    out["optimizer"]["lr"] = float(lr)
    if (out.get("scheduler") or {}).get("max_lr") is not None:   # validated configs always have the key (null)
        out["scheduler"]["max_lr"] = float(lr)
    out["batch_size"] = int(batch_size)
    return out


def write_preset(path: Path, name: str, run: str, fit_cfg: dict[str, Any], best: dict[str, Any]) -> Path:
    """The best values as a params preset (``python -m genediag.presets apply <path>``)."""
    fit_part: dict[str, Any] = {"optimizer": {"lr": best["lr"]}, "batch_size": best["batch_size"]}
    if (fit_cfg.get("scheduler") or {}).get("max_lr") is not None:
        fit_part["scheduler"] = {"max_lr": best["lr"]}
    preset = {"preset": f"hpsearch@{name}: best of {best['trials']} TPE trials for karyograms.runs.{run} "
                        f"(validation loss {best['best_val_loss']})",
              "karyograms": {"runs": {run: {"fit": fit_part}}}}
    header = (f"# Written by stage hpsearch@{name}. Use the search result for karyograms.runs.{run}:\n"
              f"#   python -m genediag.presets apply {path} && dvc exp run\n")
    return gio.write_text(path, header + yaml.safe_dump(preset, sort_keys=False))


def run_hpsearch(name: str, cfg: dict[str, Any], rcfg: dict[str, Any], dataset_dir: str | Path,
                 split_csv: str | Path, out_dir: str | Path = "hpsearch") -> dict[str, Any]:
    """Search the resolved run config `rcfg` (``karyograms.runs.<cfg.run>`` over its family) on its data."""
    import optuna

    from genediag.data.datasets import load_split_data, split_datasets
    from genediag.models import create_model
    from genediag.training.run import cached_features
    from genediag.training.trainer import fit

    cfg = validate(cfg, HPSEARCH, f"params.yaml: karyograms.hpsearch.{name}")
    if float(cfg["lr"][0]) >= float(cfg["lr"][1]):
        raise ConfigError(f"karyograms.hpsearch.{name}.lr: expected [low, high] with low < high, got {cfg['lr']}")
    run = cfg["run"]
    seed = int(cfg["seed"])
    images, table, names = load_split_data(dataset_dir, split_csv, rcfg["classes"])
    table = stratified_subset(table, cfg["max_train_items"], seed)
    ds = split_datasets(images, table, rcfg["input_size"], rcfg["invert"], rcfg["augment"], seed)
    arch = dict(rcfg["arch"])
    arch_name = arch.pop("name")

    def new_model():
        seed_everything(seed)
        return create_model(arch_name, num_classes=len(names), in_chans=ds["train"].in_chans,
                            img_size=rcfg["input_size"], **arch)

    # cache_features (as in training): every trial's model is initialised with the same seed, so the frozen
    # prefix is the same network in every trial; its outputs are computed once and each trial trains its suffix
    first = new_model()
    split = first.cache_split() if rcfg["cache_features"] and hasattr(first, "cache_split") else None
    if split is not None:
        prefix_state = {k: v.clone() for k, v in split[0].state_dict().items()}
        train_ds, val_ds = (cached_features(split[0], ds[s], desc=f"cache {s}") for s in ("train", "val"))
    else:
        train_ds, val_ds = ds["train"], ds["val"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(int(cfg["trials"]), 10))
    study = optuna.create_study(direction="minimize", sampler=sampler, study_name=name)
    log.info("hpsearch %s: %d TPE trials of %s (%d train / %d val items, %d epoch(s) each)", name, cfg["trials"], run,
             len(ds["train"]), len(ds["val"]), cfg["epochs"])

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", float(cfg["lr"][0]), float(cfg["lr"][1]), log=True)
        bs = trial.suggest_categorical("batch_size", list(cfg["batch_size"]))
        fit_cfg = with_hparams(rcfg["fit"], lr, bs)
        fit_cfg.update(epochs=int(cfg["epochs"]), seed=seed, resume=False,
                       early_stopping={"patience": 0, "min_delta": 0.0, "monitor": "val_loss"})
        model = new_model()
        if split is not None:
            parts = model.cache_split()
            same = parts[0].state_dict()
            if any(not torch.equal(same[k], v) for k, v in prefix_state.items()):
                raise RuntimeError("hpsearch: the frozen prefix differs between trials; cached features are invalid")
            if hasattr(model, "calibrate"):
                model.calibrate(train_ds.features.split(64), split=parts)
            model = parts[1]
        elif hasattr(model, "calibrate"):
            model.calibrate(x for x, _ in DataLoader(train_ds, batch_size=16, shuffle=False))
        _, result = fit(model, train_ds, val_ds, fit_cfg, None, live_dir=None, desc=f"trial {trial.number} epoch")
        log.info("trial %d: lr %.3g, batch %d → best val loss %.4f", trial.number, lr, bs, result.best_val_loss)
        return float(result.best_val_loss)

    study.optimize(objective, n_trials=int(cfg["trials"]))
    best = study.best_trial
    out_dir = Path(out_dir)
    trials = pd.DataFrame([{"trial": t.number, "lr": t.params["lr"], "batch_size": t.params["batch_size"],
                            "val_loss": t.value} for t in study.trials]).round(8)
    gio.write_with(out_dir / f"{name}.trials.csv", lambda p: trials.to_csv(p, index=False))
    result = {"name": name, "run": run, "lr": float(f"{best.params['lr']:.6g}"),
              "batch_size": int(best.params["batch_size"]), "best_val_loss": round(float(best.value), 6),
              "best_trial": best.number, "trials": int(cfg["trials"]), "epochs_per_trial": int(cfg["epochs"]),
              "train_items": len(ds["train"]), "sampler": "optuna TPE", "seed": seed}
    gio.write_json(out_dir / f"{name}.json", result)
    write_preset(out_dir / f"{name}.preset.yaml", name, run, rcfg["fit"], result)
    log.info("hpsearch %s: best lr %.3g, batch size %d (val loss %.4f, trial %d)", name, result["lr"],
             result["batch_size"], result["best_val_loss"], best.number)
    return result
