"""Monte-Carlo dropout: dropout left on at inference, N stochastic passes per case, a vote and a confidence.

For every case: the predicted label is the majority of the N passes (a tie goes to the class with the higher
mean probability), ``confidence`` is the share of passes that agree with it, ``mean_p_<class>`` the mean
softmax (for a single sigmoid unit: [1 − σ, σ]) over the passes. A case whose confidence is below the
threshold (0.80 in the thesis) is referred for manual review. Reported: the referral rate, accuracy / recall /
precision on the retained cases (positive class = class 1, ``abnormal``), the wrong predictions with their mean
probability and confidence (thesis Tables 4.1/4.2) and a referral curve (metrics on the retained cases against
the fraction referred, one point per distinct confidence).

Passes are batched: batch-norm layers stay in inference mode, only dropout layers are switched to training mode.
A model exposing ``forward_features`` / ``forward_head`` whose feature part has no active dropout (the thesis
transfer models) runs the feature part once per case and the head on the features repeated N times; any other
model gets its input repeated N times. Both give the same numbers for the same seed (the random draws happen
in the same dropout layers on tensors of the same shapes), in chunks of at most ``chunk`` rows. Draws come
from ``torch.manual_seed(seed)`` inside a forked RNG, so a fixed seed gives identical passes on CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from genediag import io as gio
from genediag.config import ConfigError
from genediag.models.inference import class_scores
from genediag.schema import MC_DROPOUT, validate

log = logging.getLogger(__name__)

def _dropouts(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def enable_mc_dropout(model: nn.Module) -> int:
    """Eval mode everywhere (batch norm uses its running statistics) except dropout; returns #dropout layers."""
    model.eval()
    drops = _dropouts(model)
    for m in drops:
        m.train()
    return len(drops)


def _split_model(model: nn.Module) -> bool:
    """True when the model can run its deterministic feature part once and repeat only the head."""
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        return False
    head = getattr(model, "head", None)
    if head is None:
        return False
    return len(_dropouts(model)) == len(_dropouts(head))


@torch.no_grad()
def mc_dropout_predict(model: nn.Module, dataset: Dataset, passes: int = 100, seed: int = 0, batch_size: int = 32,
                       chunk: int = 4096, temperature: float = 1.0, repeat_input: bool = False,
                       device: torch.device | None = None) -> np.ndarray:
    """Class probabilities of every pass (softmax of the class scores / `temperature`): N × passes × C, in dataset
    order.

    `repeat_input` forces the generic path (input repeated) even for a split model (used by the tests)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    n_drop = enable_mc_dropout(model)
    if n_drop == 0:
        log.warning("MC dropout: the model has no active dropout layer; all passes will agree")
    split = _split_model(model) and not repeat_input
    out: list[np.ndarray] = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(seed))
            for x, _ in tqdm(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc=f"MC dropout ×{passes}",
                             leave=False, mininterval=5.0):
                x = x.to(device)
                base = model.forward_features(x) if split else x
                rep = base.repeat_interleave(passes, dim=0)  # case 0 × N, case 1 × N, …
                probs = []
                for i in range(0, len(rep), chunk):
                    part = rep[i:i + chunk]
                    scores = class_scores(model.forward_head(part) if split else model(part))
                    probs.append(torch.softmax(scores.float() / float(temperature), dim=1))
                out.append(torch.cat(probs).reshape(len(x), passes, -1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, passes, 0), dtype=np.float32)


def mc_summary(pass_probs: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Per case: predicted (majority vote), votes, confidence (share agreeing), mean_p_<class>, sd_p_<class>."""
    n, t, k = pass_probs.shape
    votes = np.stack([(pass_probs.argmax(2) == c).sum(1) for c in range(k)], axis=1)  # N × C
    mean = pass_probs.mean(1)
    # majority; ties broken by the higher mean probability
    key = votes.astype(np.float64) + 1e-6 * mean
    pred = key.argmax(1)
    conf = votes[np.arange(n), pred] / t
    table = pd.DataFrame({"predicted": [names[i] for i in pred], "pred_index": pred, "votes": votes[np.arange(n), pred],
                          "confidence": np.round(conf, 6)})
    for c, name in enumerate(names):
        table[f"mean_p_{name}"] = np.round(mean[:, c], 6)
        table[f"sd_p_{name}"] = np.round(pass_probs[:, :, c].std(1), 6)
    return table


def _rates(y: np.ndarray, pred: np.ndarray, positive: int) -> dict[str, float | None]:
    n = len(y)
    tp = int(((pred == positive) & (y == positive)).sum())
    p, pp = int((y == positive).sum()), int((pred == positive).sum())
    return {"n": n, "accuracy": float((pred == y).mean()) if n else None,
            "recall": tp / p if p else None, "precision": tp / pp if pp else None}


def referral_metrics(y: np.ndarray, pred: np.ndarray, conf: np.ndarray, threshold: float,
                     positive: int = 1) -> dict[str, Any]:
    """Referral at `threshold`: who is referred (confidence < threshold) and how the retained cases fare.

    ``missed_positive``: positive cases retained *and* predicted negative — cleared without a person seeing
    them (in the lab workflow every positive prediction goes to a person anyway)."""
    referred = conf < threshold
    kept = ~referred
    out = {"threshold": float(threshold), "n": int(len(y)), "referred": int(referred.sum()),
           "referral_rate": float(referred.mean()) if len(y) else 0.0,
           "all": _rates(y, pred, positive), "retained": _rates(y[kept], pred[kept], positive),
           "missed_positive": int((kept & (y == positive) & (pred != positive)).sum()),
           "positives": int((y == positive).sum())}
    return out


def referral_curve(y: np.ndarray, pred: np.ndarray, conf: np.ndarray, positive: int = 1) -> pd.DataFrame:
    """One row per distinct confidence cut: referring every case below `threshold`."""
    rows = []
    cuts = np.unique(np.concatenate([conf, [np.inf]]))
    for t in cuts:
        kept = conf >= t
        r = _rates(y[kept], pred[kept], positive)
        rows.append({"threshold": min(float(t), 1.000001), "referred_fraction": float(1 - kept.mean()),
                     "retained": int(kept.sum()),
                     "accuracy": r["accuracy"], "recall": r["recall"], "precision": r["precision"],
                     "missed_positive": int((kept & (y == positive) & (pred != positive)).sum())})
    return pd.DataFrame(rows).round(6)


def run_mc_dropout(name: str, cfg: dict[str, Any], run_dir: str | Path, dataset_dir: str | Path,
                   split_csv: str | Path, metrics_path: str | Path, curve_path: str | Path,
                   eval_dir: str | Path) -> dict[str, Any]:
    """MC dropout on the run's model (``run_dir``: model.pt + args.yaml) over its `split`: metrics (referral at the
    threshold), the referral curve and ``eval_dir/{predictions.csv, wrong.csv}``."""
    import yaml

    from genediag.data.datasets import load_split_data, split_datasets
    from genediag.models.checkpoint import load_checkpoint

    cfg = validate(cfg, MC_DROPOUT, f"params.yaml: karyograms.mc_dropout.{name}")
    run_dir = Path(run_dir)
    rcfg = yaml.safe_load((run_dir / "args.yaml").read_text())
    run = rcfg["run"]
    model, meta = load_checkpoint(run_dir / "model.pt")
    images, table, names = load_split_data(dataset_dir, split_csv, rcfg["classes"])
    if names != meta["class_names"]:
        raise ConfigError(f"{run_dir}/model.pt was trained on {meta['class_names']} but the data gives {names}")
    split = cfg["split"]
    ds = split_datasets(images, table, rcfg["input_size"], rcfg["invert"], splits=(split,))[split]
    rows = table[(table["split"] == split) & (table["target"] >= 0)].reset_index(drop=True)
    passes = int(cfg["passes"])
    temperature = float(meta.get("temperature", 1.0))
    probs = mc_dropout_predict(model, ds, passes, int(cfg["seed"]), int(cfg["batch_size"]), int(cfg["chunk"]),
                               temperature=temperature)
    summary = mc_summary(probs, names)
    y = rows["target"].to_numpy()
    pred, conf = summary["pred_index"].to_numpy(), summary["confidence"].to_numpy()
    positive = 1 if len(names) == 2 else 0
    ref = referral_metrics(y, pred, conf, float(cfg["threshold"]), positive)
    curve = referral_curve(y, pred, conf, positive)

    keep = [c for c in ("index", "path", "label", "group_id", "cell_id", "karyotype") if c in rows.columns]
    per_case = pd.concat([rows[keep].assign(target=[names[i] for i in y]), summary.drop(columns="pred_index")],
                         axis=1)
    per_case["referred"] = (conf < float(cfg["threshold"])).astype(int)
    wrong = per_case[per_case["target"] != per_case["predicted"]].copy()
    wrong["mean_p_predicted"] = [r[f"mean_p_{r['predicted']}"] for _, r in wrong.iterrows()]

    result = {"name": name, "run": run, "task": rcfg["task"], "model": rcfg["model"], "dataset": meta.get("dataset"),
              "synthetic": bool(meta.get("synthetic")), "split": split, "passes": passes, "seed": int(cfg["seed"]),
              "temperature": round(temperature, 6), "positive_class": names[positive],
              **ref, "wrong": int(len(wrong)), "wrong_referred": int(wrong["referred"].sum())}
    gio.write_json(metrics_path, _round(result))
    gio.write_with(curve_path, lambda p: curve.to_csv(p, index=False))
    edir = Path(eval_dir)
    gio.write_with(edir / "predictions.csv", lambda p: per_case.to_csv(p, index=False))
    gio.write_with(edir / "wrong.csv", lambda p: wrong.to_csv(p, index=False))
    ret = ref["retained"]
    log.info("%s (%s, %d passes%s): referral rate %.3f at %.2f; retained accuracy %s, recall %s; %d wrong (%d of "
             "them referred)", name, run, passes, ", synthetic" if result["synthetic"] else "", ref["referral_rate"],
             ref["threshold"], ret["accuracy"], ret["recall"], len(wrong), int(wrong["referred"].sum()))
    return result


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    return obj
