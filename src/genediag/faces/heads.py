"""FaceNet-init syndrome runs (``faces.heads.<run>``, stage ``faces_head@<run>``): the converted CASIA-WebFace
FaceNet (:mod:`genediag.models.facenet`) as the stage-1 model, its first layers fixed, and what follows trained on
the syndromes — from the cached forward pass of stage ``faces_embed_facenet`` (:mod:`genediag.faces.embeddings`),
so training and evaluation cost seconds instead of a FaceNet pass per photo per epoch:

- ``arch.trainable: frozen``: FaceNet is a fixed feature extractor; the optional projection (``hidden``) and the
  classifier learn on its cached 512-d embeddings;
- ``arch.trainable: last_block``: fine-tuning of the last Inception-ResNet block (``block8``) and the 512-d
  bottleneck too, on the cached ``repeat_3`` outputs (1792×3×3) — everything before stays fixed. (Each of the
  Inception-ResNet-C blocks costs ≈14 M multiply-adds per photo on these maps: fine-tuning all six of them for 40
  epochs took over 7 minutes of CPU and was stopped; one block is the affordable variant.)

One stage trains ``seeds`` models (the one trainer, :func:`genediag.training.trainer.fit`, on the cached inputs)
and evaluates them on the test split with the evidence every evaluation gives
(:func:`genediag.evaluation.evaluate.evaluate_run`'s outputs, computed from the cache): the headline metrics with
patient-bootstrap intervals, calibration before and after the validation-fitted temperature, referral, MC-dropout
agreement (the dropout is in the trained head, so passes over the cached inputs are exactly the full model's), the
out-of-distribution check on the same probes, per-item predictions, the seed spread, the paper's per-class figures
and ``embeddings.npz`` for the nearest-neighbour matching. ``model.pt`` is the whole network (FaceNet body
included) in the usual checkpoint format, so ``genediag predict`` runs it on a photo; the other seeds are evaluated
but not saved (each would carry the 94 MB body again). No ``model.onnx``: ``predict`` runs it in torch.
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

from genediag import io as gio
from genediag.config import ConfigError, seed_everything, write_yaml
from genediag.data.datasets import CachedImageDataset, load_split_table
from genediag.data.ingest import ingest_summary
from genediag.evaluation.evaluate import ood_check, write_classifier_plots, write_csv, write_seeds_json
from genediag.evaluation.metrics import classification_metrics, headline_metrics
from genediag.evaluation.uncertainty import (bootstrap_ci, expected_calibration_error, fit_temperature,
                                             referral_curve)
from genediag.faces.embeddings import CachedPrefix, load_cache
from genediag.faces.evaluate import save_embeddings, syndrome_figures
from genediag.faces.train import class_targets
from genediag.models import create_model
from genediag.models.checkpoint import checkpoint_dict
from genediag.models.inference import (capture_features, class_scores, fit_ood, input_thumbnails, mc_dropout_votes,
                                       ood_score, set_ood_thresholds, softmax)
from genediag.training.run import FeatureDataset, input_spec
from genediag.training.trainer import fit

log = logging.getLogger(__name__)
CACHE_KEY = {"frozen": "embedding", "last_block": "repeat_3"}


@torch.no_grad()
def suffix_outputs(suffix: torch.nn.Module, feats: torch.Tensor,
                   batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(class scores N×C, penultimate features N×D) of the trained part on cached inputs."""
    suffix.eval()
    scores = []
    with capture_features(suffix) as store:
        for i in range(0, len(feats), batch_size):
            scores.append(class_scores(suffix(feats[i:i + batch_size])).float())
    if not scores:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(scores).numpy(), torch.cat(store).numpy()


class CachedRunner:
    """The whole model as :func:`genediag.models.inference.scores_and_features` sees an ONNX runner: image batches
    in, (scores, features) out, the fixed prefix served from the cache (:class:`CachedPrefix`)."""

    def __init__(self, prefix: CachedPrefix, suffix: torch.nn.Module):
        self.prefix, self.suffix = prefix, suffix

    def scores_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return suffix_outputs(self.suffix, self.prefix(torch.from_numpy(np.asarray(x, dtype=np.float32))))

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.scores_and_features(x)[0]


def _cache_rows(cache: dict[str, np.ndarray], table: pd.DataFrame, key: str, where: Path) -> dict[int, np.ndarray]:
    """Cached prefix outputs by ingest-cache row, after checking the cache is of these very images."""
    by_index = dict(zip(cache["index"].tolist(), cache["sha256"].tolist()))
    stale = [int(i) for i, h in zip(table["index"], table["sha256"]) if by_index.get(int(i)) != h]
    if stale:
        raise ConfigError(f"{where}: the FaceNet cache was made from other images than this dataset's (rows "
                          f"{stale[:5]}); re-run `dvc repro faces_embed_facenet`")
    return {int(i): cache[key][k] for k, i in enumerate(cache["index"].tolist())}


def train_head_run(run: str, cfg: dict[str, Any], cache_dir: str | Path, dataset_dir: str | Path,
                   split_csv: str | Path, out_dir: str | Path, metrics_path: str | Path, plots_dir: str | Path,
                   eval_dir: str | Path, evidence: dict[str, Any], live_dir: str | Path | None = None,
                   matching: dict[str, Any] | None = None, nn_path: str | Path | None = None,
                   gallery_path: str | Path | None = None) -> dict[str, Any]:
    """Train and evaluate one resolved ``faces.heads.<run>`` (module doc), with the nearest-neighbour matching of
    its penultimate features when `matching` (``faces.matching``) is given; returns the test metrics."""
    arch = dict(cfg["arch"])
    if arch.get("name") != "facenet":
        raise ConfigError(f"faces.heads.{run}: arch.name must be facenet (the FaceNet-init runs), got "
                          f"{arch.get('name')!r}")
    trainable = arch.get("trainable", "frozen")
    if trainable not in CACHE_KEY:
        raise ConfigError(f"faces.heads.{run}.arch.trainable: '{trainable}' is not one of {list(CACHE_KEY)}")
    cache_dir, out_dir, eval_dir, plots_dir = Path(cache_dir), Path(out_dir), Path(eval_dir), Path(plots_dir)
    summary = ingest_summary(dataset_dir)
    images, table = load_split_table(dataset_dir, split_csv)
    names, targets = class_targets(table, "finetune", cfg["classes"])
    table = table.assign(target=targets)
    cache = load_cache(cache_dir / "syndromes.npz")
    by_row = _cache_rows(cache, table, CACHE_KEY[trainable], cache_dir / "syndromes.npz")
    cfg = {**cfg, "input_size": int(images.shape[1])}
    spec = input_spec(summary, cfg, 3)
    split_rows = {s: table[(table["split"] == s) & (table["target"] >= 0)].reset_index(drop=True)
                  for s in ("train", "val", "test")}
    for s in ("train", "val"):
        if split_rows[s].empty:
            raise ConfigError(f"faces.heads.{run}: no {s} photos of its classes; check the dataset's split")
    feats = {s: torch.from_numpy(np.stack([by_row[int(i)] for i in r["index"]])) if len(r) else None
             for s, r in split_rows.items()}
    thumbs = {s: input_thumbnails(CachedImageDataset(images, r["index"].to_numpy(), r["target"].to_numpy(), 160))
              for s, r in split_rows.items()}
    arch_kwargs = {k: v for k, v in arch.items() if k not in ("name", "pretrained")}
    if not arch.get("pretrained"):
        raise ConfigError(f"faces.heads.{run}.arch.pretrained: the converted FaceNet weights "
                          "(models/facenet/weights.pt)")
    if not Path(arch["pretrained"]).is_file():
        raise FileNotFoundError(f"{arch['pretrained']}: the converted FaceNet weights are missing; run `dvc repro "
                                "facenet_weights`")
    body = torch.load(arch["pretrained"], map_location="cpu", weights_only=True)   # once for every seed

    seeds = []
    for k in range(int(cfg["seeds"])):
        seed = int(cfg["fit"]["seed"]) + k
        seed_cfg = copy.deepcopy(cfg)
        seed_cfg["fit"]["seed"] = seed
        seed_everything(seed)
        model = create_model("facenet", num_classes=len(names), in_chans=3, img_size=160, **arch_kwargs)
        model.body.load_state_dict(body, strict=True)
        prefix, suffix = model.cache_split()
        train_ds = FeatureDataset(feats["train"], split_rows["train"]["target"].to_numpy())
        val_ds = FeatureDataset(feats["val"], split_rows["val"]["target"].to_numpy())
        log.info("%s: seed %d (%d of %d): %s FaceNet, %d train / %d val photos", run, seed, k + 1, cfg["seeds"],
                 trainable, len(train_ds), len(val_ds))
        _, result = fit(suffix, train_ds, val_ds, seed_cfg["fit"], out_dir if k == 0 else None,
                        live_dir=Path(live_dir) if (live_dir and k == 0) else None, resume_dir=None)
        val_scores, val_feats = suffix_outputs(suffix, feats["val"])
        temperature = 1.0
        if cfg["calibrate"] and len(val_ds) >= 2:
            temperature = round(float(fit_temperature(val_scores, val_ds.targets)), 6)
        _, train_feats = suffix_outputs(suffix, feats["train"])
        ood = fit_ood(train_feats, train_ds.targets, thumbs["train"])
        ood = set_ood_thresholds(ood, val_feats, thumbs["val"], cfg["ood_quantile"])
        seeds.append({"model": model, "prefix": prefix, "suffix": suffix, "seed": seed, "temperature": temperature,
                      "ood": ood, "timing": result.timing,
                      "fit": {"seed": seed, "best_epoch": result.best_epoch,
                              "best_val_loss": round(result.best_val_loss, 6),
                              "best_val_accuracy": None if result.best_val_accuracy is None
                              else round(result.best_val_accuracy, 6),
                              "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
                              "temperature": temperature}})

    first = seeds[0]
    extra = {"run": run, "branch": "faces", "task": cfg["task"], "model": cfg["model"],
             "dataset": summary.get("dataset"), "synthetic": bool(summary.get("synthetic")), "seed": first["seed"],
             "fit": first["fit"], "temperature": first["temperature"], "ood": first["ood"], "warnings": [],
             "config": cfg, "stage": "finetune", "init": cfg.get("init") or "facenet"}
    blob = checkpoint_dict(first["model"], cfg["arch"], names, spec, extra=extra)
    gio.save_torch(out_dir / "model.pt", blob)
    write_yaml({"run": run, "branch": "faces", **cfg}, out_dir / "args.yaml")
    timing = first["timing"]
    gio.write_json(out_dir / "fit.json", {
        "run": run, "classes": names, "items": {s: int(len(r)) for s, r in split_rows.items()},
        "train_images_per_second": timing.get("train_images_per_second"), "epoch_seconds": timing.get("epoch_seconds"),
        "seeds": [{**s["fit"], "timing": s["timing"]} for s in seeds], "stage": "finetune",
        "init": extra["init"], "trainable": trainable, "cached_input": CACHE_KEY[trainable]})

    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    result = evaluate_head(run, cfg, seeds, names, table, images, split_rows, feats, thumbs, cache_dir, meta,
                           Path(dataset_dir), Path(metrics_path), plots_dir, eval_dir, evidence, by_row)
    if matching is not None:
        from genediag.faces.matching import match_run

        with np.load(eval_dir / "embeddings.npz", allow_pickle=False) as z:
            emb = z["features"]
        labelled = table[table["label"] != ""].reset_index(drop=True)
        match_run(run, emb, labelled, names, matching, evidence, nn_path, gallery_path, bool(meta.get("synthetic")))
    return result


def evaluate_head(run, cfg, seeds, names, table, images, split_rows, feats, thumbs, cache_dir, meta, dataset_dir,
                  metrics_path, plots_dir, eval_dir, evidence, by_row) -> dict[str, Any]:
    """The test evaluation of :func:`genediag.evaluation.evaluate.evaluate_run`, computed from the cache."""
    first = seeds[0]
    rows = split_rows["test"]
    if rows.empty:
        raise ConfigError(f"faces.heads.{run}: the test split has no photos of its classes")
    y, groups = rows["target"].to_numpy(), rows["group_id"].to_numpy()
    scores, test_feats = suffix_outputs(first["suffix"], feats["test"])
    temperature = float(first["temperature"])
    probs, raw_probs = softmax(scores, temperature), softmax(scores)
    pred = probs.argmax(1)
    headline = headline_metrics(y, pred, probs, names)
    ci = bootstrap_ci(lambda y, pred, probs: headline_metrics(y, pred, probs, names), groups,
                      {"y": y, "pred": pred, "probs": probs}, int(evidence["bootstrap"]), int(evidence["seed"]))
    full = classification_metrics(y, pred, names)
    confidence, correct = probs.max(1), pred == y
    refer = confidence < float(evidence["refer_below"])
    bins = int(evidence["ece_bins"])
    test_ood = ood_score(test_feats, thumbs["test"], first["ood"])

    probes = load_cache(cache_dir / "probes.npz")
    prefix = CachedPrefix(first["prefix"], by_digest=dict(zip(probes["digest"].tolist(),
                                                              list(probes["repeat_3"] if _trainable(cfg) == "last_block"
                                                                   else _embed_probes(first, probes)))))
    runner = CachedRunner(prefix, first["suffix"])
    ood, probe_table = ood_check(runner, meta, test_ood, int(probes["per_kind"]), int(probes["seed"]), 256)
    if prefix.computed:
        log.warning("%s: %d probe inputs were not in the FaceNet cache and went through FaceNet", run, prefix.computed)

    r6 = lambda v: round(float(v), 6) if isinstance(v, float) else v  # noqa: E731
    result = {
        "task": cfg["task"], "model": cfg["model"], "run": run, "branch": "faces", "split": "test",
        "dataset": meta.get("dataset"), "synthetic": bool(meta.get("synthetic")), "n": int(len(y)),
        "patients": int(len(set(groups))), **{k: r6(v) for k, v in headline.items()},
        "ci95": {k: v for k, v in ci.items() if k in headline},
        "ece": round(expected_calibration_error(probs, y, bins), 6),
        "ece_uncalibrated": round(expected_calibration_error(raw_probs, y, bins), 6),
        "temperature": round(temperature, 6),
        "referral": {"refer_below": float(evidence["refer_below"]), "referred": int(refer.sum()),
                     "referred_share": round(float(refer.mean()), 6),
                     "accuracy_retained": round(float(correct[~refer].mean()), 6) if (~refer).any() else None},
        "ood": ood, "best_epoch": first["fit"]["best_epoch"], "epochs_run": first["fit"]["epochs_run"],
        "seeds": int(cfg["seeds"]), "warnings": [],
        "per_class_accuracy": {c: round(v["accuracy"], 6) for c, v in full["per_class"].items()},
        "stage": "finetune", "init": meta.get("init"), "loss": cfg["fit"]["loss"]["name"],
        "trainable": _trainable(cfg), "cached_input": CACHE_KEY[_trainable(cfg)],
    }
    result.update(syndrome_figures(result, y, scores, names))
    gio.write_json(metrics_path, result)

    per_seed = []
    for s in seeds:
        sc, _ = suffix_outputs(s["suffix"], feats["test"])
        p = softmax(sc, float(s["temperature"]))
        per_seed.append({"seed": s["seed"], **{k: r6(v) for k, v in headline_metrics(y, p.argmax(1), p, names).items()},
                         "ece": round(expected_calibration_error(p, y), 6)})
    write_seeds_json(metrics_path, run, per_seed)
    csv = write_csv
    write_classifier_plots(plots_dir, run, names, y, probs, raw_probs, bins)
    passes = int(evidence.get("mc_passes", 0))
    if passes > 0:
        rng = np.random.default_rng(int(evidence["seed"]))
        idx = np.sort(rng.choice(len(y), size=min(len(y), int(evidence.get("mc_items", 500))), replace=False))
        votes = mc_dropout_votes(first["suffix"], feats["test"][idx], passes, int(evidence["seed"]), temperature)
        if votes is not None:
            agreement = (votes.argmax(2) == pred[idx][None, :]).mean(0)
            csv(plots_dir / "referral" / run / "mc_dropout.csv", referral_curve(agreement, correct[idx], steps=21)
                .round(6))

    keep = [c for c in ("index", "path", "label", "group_id") if c in rows.columns]
    pred_table = rows[keep].assign(target=[names[i] for i in y], predicted=[names[i] for i in pred],
                                   confidence=confidence.round(6), ood_score=np.round(test_ood, 4),
                                   referred=refer | (test_ood > 1.0))
    prob_cols = pd.DataFrame(np.round(probs, 6), columns=[f"p_{n}" for n in names])
    csv(eval_dir / "predictions.csv", pd.concat([pred_table, prob_cols], axis=1))
    per_class = pd.DataFrame.from_dict(full["per_class"], orient="index").rename_axis("class").round(6)
    gio.write_with(eval_dir / "per_class.csv", lambda p: per_class.to_csv(p))
    csv(eval_dir / "probes.csv", probe_table)
    gio.write_text(eval_dir / "args.yaml", yaml.safe_dump({"run": run, "branch": "faces", **cfg}, sort_keys=False))

    labelled = table[table["label"] != ""].reset_index(drop=True)
    all_in = torch.from_numpy(np.stack([by_row[int(i)] for i in labelled["index"]]))
    _, all_feats = suffix_outputs(first["suffix"], all_in)
    save_embeddings(eval_dir / "embeddings.npz", all_feats, labelled["target"].to_numpy(), labelled, names)

    from genediag.reports.model_card import write_model_card

    write_model_card(run, {**cfg, "branch": "faces"}, result, meta, eval_dir / "MODEL_CARD.md",
                     data_dir=dataset_dir.parent.parent,
                     n_parameters=sum(p.numel() for p in first["model"].parameters()))
    log.info("%s on test (%d photos%s): top-1 %.4f %s (all classes), %s (patterns only); ECE %.3f → %.3f",
             run, len(y), ", synthetic" if result["synthetic"] else "", result["top1"], ci.get("accuracy"),
             result["top1_patterns"], result["ece_uncalibrated"], result["ece"])
    return result


def _trainable(cfg: dict[str, Any]) -> str:
    return cfg["arch"].get("trainable", "frozen")


@torch.no_grad()
def _embed_probes(seed: dict[str, Any], probes: dict[str, np.ndarray]) -> np.ndarray:
    """The probes' 512-d FaceNet embeddings from their cached ``repeat_3`` outputs (a frozen run's prefix output)."""
    model = seed["model"].eval()
    z = torch.from_numpy(probes["repeat_3"])
    return torch.cat([model.top(z[i:i + 256]) for i in range(0, len(z), 256)]).numpy()

