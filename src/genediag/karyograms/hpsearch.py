"""Bayesian hyper-parameter search (Optuna TPE) of the learning rate and the batch size, on validation loss.

``hpsearch.<name>`` in params.yaml::

    run: karyograms-vgg16-all   # the train.<run> entry whose model, data and fit settings are searched
    dataset: karyograms-balanced  # = train.<run>.dataset (dvc.yaml needs it for the dependencies; checked)
    trials: 3
    epochs: 1                   # per trial (early stopping off); the best val loss over them scores the trial
    max_train_items: 48         # seeded, class-stratified subset of the train split (null: all)
    lr: [1.0e-5, 1.0e-2]        # log-uniform range
    batch_size: [8, 16, 32]     # categorical
    seed: 0

Writes ``hpsearch/<name>.json`` ({lr, batch_size, best_val_loss, ...}), ``hpsearch/<name>.trials.csv`` and
``hpsearch/<name>.preset.yaml``: the best values as a params preset for the searched run (``fit.optimizer.lr``,
a scheduler's ``max_lr``, ``fit.batch_size``). The training stage uses them once they are params:

    python -m genediag.presets apply hpsearch/<name>.preset.yaml && dvc exp run

so DVC tracks them like any other setting (``dvc params diff`` shows the change, only the affected
``train@``/``evaluate@`` stages rerun, and the values are versioned with the commit). A stage reading the JSON
directly would need a per-run dependency that DVC's ``foreach`` cannot express. Every trial is seeded with
`seed` and so is the TPE sampler: the search is deterministic on CPU.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader

from genediag.config import ConfigError, check_keys, seed_everything

log = logging.getLogger(__name__)

HP_DEFAULTS: dict[str, Any] = {"trials": 3, "epochs": 1, "max_train_items": 48, "lr": [1e-5, 1e-2],
                               "batch_size": [8, 16, 32], "seed": 0}


def resolve_hpsearch_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    check_keys(cfg, set(HP_DEFAULTS) | {"run", "dataset"}, where)
    if "run" not in cfg:
        raise ConfigError(f"{where}: missing 'run' (the train.<run> entry to tune)")
    out = {**HP_DEFAULTS, **cfg}
    lr = out["lr"]
    if not (isinstance(lr, (list, tuple)) and len(lr) == 2 and 0 < float(lr[0]) < float(lr[1])):
        raise ConfigError(f"{where}.lr: expected [low, high] with 0 < low < high, got {lr}")
    bs = out["batch_size"]
    if not (isinstance(bs, (list, tuple)) and bs and all(isinstance(b, int) and b > 0 for b in bs)):
        raise ConfigError(f"{where}.batch_size: expected a list of positive integers, got {bs}")
    if int(out["trials"]) < 1 or int(out["epochs"]) < 1:
        raise ConfigError(f"{where}: trials and epochs must be >= 1")
    cap = out["max_train_items"]
    if cap is not None and (not isinstance(cap, int) or cap < 2):
        raise ConfigError(f"{where}.max_train_items: expected an integer >= 2 or null, got {cap!r}")
    return out


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
    if "max_lr" in out.get("scheduler", {}):
        out["scheduler"]["max_lr"] = float(lr)
    out["batch_size"] = int(batch_size)
    return out


def write_preset(path: Path, name: str, run: str, fit_cfg: dict[str, Any], best: dict[str, Any]) -> Path:
    """The best values as a params preset (``python -m genediag.presets apply <path>``)."""
    fit_part: dict[str, Any] = {"optimizer": {"lr": best["lr"]}, "batch_size": best["batch_size"]}
    if "max_lr" in fit_cfg.get("scheduler", {}):
        fit_part["scheduler"] = {"max_lr": best["lr"]}
    preset = {"preset": f"hpsearch@{name}: best of {best['trials']} TPE trials for train.{run} "
                        f"(validation loss {best['best_val_loss']})",
              "train": {run: {"fit": fit_part}}}
    header = (f"# Written by stage hpsearch@{name}. Use the search result for train.{run}:\n"
              f"#   python -m genediag.presets apply {path} && dvc exp run\n")
    path.write_text(header + yaml.safe_dump(preset, sort_keys=False))
    return path


def run_hpsearch(name: str, cfg: dict[str, Any], run_cfg: dict[str, Any], data_dir: str | Path = "data",
                 out_dir: str | Path = "hpsearch") -> dict[str, Any]:
    import optuna

    from genediag.models import create_model
    from genediag.training.run import cached_features, load_split_data, make_datasets
    from genediag.karyograms import resolve_target_run
    from genediag.training.trainer import fit

    where = f"hpsearch.{name}"
    cfg = resolve_hpsearch_config(cfg, where)
    run = cfg["run"]
    rcfg = resolve_target_run(cfg, run_cfg, where)
    seed = int(cfg["seed"])
    data_dir = Path(data_dir)
    images, table, names = load_split_data(data_dir / "ingested" / rcfg["dataset"],
                                           data_dir / "splits" / f"{rcfg['dataset']}.csv", rcfg["classes"])
    table = stratified_subset(table, cfg["max_train_items"], seed)
    ds = make_datasets(images, table, rcfg)
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
        fit_cfg.update(epochs=int(cfg["epochs"]), seed=seed, early_stopping={"patience": 0, "min_delta": 0.0})
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
        with tempfile.TemporaryDirectory() as tmp:
            _, result = fit(model, train_ds, val_ds, fit_cfg, tmp, live_dir=None)
        log.info("trial %d: lr %.3g, batch %d → best val loss %.4f", trial.number, lr, bs, result.best_val_loss)
        return float(result.best_val_loss)

    study.optimize(objective, n_trials=int(cfg["trials"]))
    best = study.best_trial
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = pd.DataFrame([{"trial": t.number, "lr": t.params["lr"], "batch_size": t.params["batch_size"],
                            "val_loss": t.value} for t in study.trials]).round(8)
    trials.to_csv(out_dir / f"{name}.trials.csv", index=False)
    result = {"name": name, "run": run, "lr": float(f"{best.params['lr']:.6g}"),
              "batch_size": int(best.params["batch_size"]), "best_val_loss": round(float(best.value), 6),
              "best_trial": best.number, "trials": int(cfg["trials"]), "epochs_per_trial": int(cfg["epochs"]),
              "train_items": len(ds["train"]), "sampler": "optuna TPE", "seed": seed}
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_preset(out_dir / f"{name}.preset.yaml", name, run, rcfg["fit"], result)
    log.info("hpsearch %s: best lr %.3g, batch size %d (val loss %.4f, trial %d)", name, result["lr"],
             result["batch_size"], result["best_val_loss"], best.number)
    return result
