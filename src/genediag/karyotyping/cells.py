"""Stage logic of ``karyotype``: group crops by ``cell_id``, predict every crop with the chosen chromosome
classifier, call each cell's karyotype by constrained assignment (:mod:`genediag.karyotyping.assign`), and
write per-cell and per-crop tables, metrics, a karyotype confusion table and composed karyograms.

Outputs (``<name>`` = the ``model_run`` param, ``best`` included):

- ``metrics/karyotyping/<name>.json``            crop accuracy before/after assignment, cells with exact
  counts, karyotype accuracy, sensitivity/specificity for "numerically abnormal" (no timings)
- ``plots/karyotyping/<name>.csv``               actual,predicted numerical ISCN per cell (confusion template)
- ``evaluation/karyotyping/<name>/cells.csv``     one row per cell; ``crops.csv`` one row per crop;
  ``karyograms/<cell_id>.png`` + ``karyograms/manifest.csv`` (the karyogram dataset format)
- ``reports/figures/karyotyping_example.png``     one of the karyograms, for the report

Ground truth, where the data has it: a crop's true class is its ``origin`` (the normal chromosome an abnormal
one derives from: der22 → 22) if the manifest has that column, else its ``label``. A cell's true numerical
karyotype is written from the counts of its crops' true classes; a cell with a crop whose true class is not a
model class, or whose ``karyotype`` column (if any) names a different chromosome total than its crop count
(e.g. a crop was quarantined), has no truth and is left out of the truth-dependent metrics (logged).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from genediag.config import ConfigError, check_keys
from genediag.karyotyping.assign import (EXTRA, NORMAL_KARYOTYPES, counts_to_iscn, is_numerically_abnormal,
                                         karyotype_cell, label_counts, make_hypotheses, parse_iscn)

log = logging.getLogger(__name__)

WHERE = "params.yaml: karyotype"
DEFAULTS: dict[str, Any] = {
    "dataset": "chromosomes",      # ingested dataset whose crops carry cell_id
    "model_run": None,             # a train.<run> name, or "best" (lowest best_val_loss among candidate_runs)
    "candidate_runs": [],          # runs compared when model_run is "best"
    "splits": ["test"],            # which split rows to karyotype; "all" = every row
    "hypotheses": None,            # {ISCN: prior weight}; weights are normalised
    "min_prob": 1.0e-6,            # probabilities are clipped here before the log
    "extra_penalty": 8.0,          # nats for a crop the hypothesis has no slot for
    "missing_penalty": 8.0,        # nats for a slot no crop fills
    "low_confidence": 0.5,         # a crop is low-confidence when P(final label) is below this
    "karyogram_size": [640, 480],  # (W, H) of the composed karyograms
    "example_cell": "auto",        # cell_id of the report's example; auto = first abnormal call, else first cell
    "batch_size": 256,
}
SKIPPED_NO_CELL_ID = "no cell_id in manifest"
CELL_COLUMNS = ["cell_id", "group_id", "n_crops", "true_karyotype", "true_numerical", "predicted", "score",
                "runner_up", "margin", "suspected_abnormal", "n_low_confidence", "n_extra", "missing",
                "counts_exact_before", "counts_exact_after", "karyogram"]
CROP_COLUMNS = ["index", "path", "cell_id", "label", "true_class", "argmax", "p_argmax", "final_label", "p_final",
                "assigned", "low_confidence"]


def resolve_config(cfg: dict[str, Any]) -> dict[str, Any]:
    check_keys(cfg, set(DEFAULTS), WHERE)
    out = {**DEFAULTS, **cfg}
    if not out["model_run"]:
        raise ConfigError(f"{WHERE}.model_run: name a train.<run> (e.g. chromosomes24-dcnn) or 'best'")
    if out["model_run"] == "best" and not out["candidate_runs"]:
        raise ConfigError(f"{WHERE}.candidate_runs: model_run is 'best' but no candidate runs are listed")
    hyp = out["hypotheses"]
    if not isinstance(hyp, dict) or not hyp:
        raise ConfigError(f"{WHERE}.hypotheses: give a mapping {{ISCN: prior weight}}, e.g. {{'46,XX': 0.4}}")
    for iscn, w in hyp.items():
        try:
            canonical = counts_to_iscn(parse_iscn(iscn))
        except ValueError as exc:
            raise ConfigError(f"{WHERE}.hypotheses: {exc}") from exc
        if canonical != iscn:
            raise ConfigError(f"{WHERE}.hypotheses: write {iscn!r} as {canonical!r}")
        if not isinstance(w, (int, float)) or not w > 0:
            raise ConfigError(f"{WHERE}.hypotheses.{iscn}: prior weight must be a positive number, got {w!r}")
    splits = out["splits"]
    if splits != "all" and not (isinstance(splits, list) and splits):
        raise ConfigError(f"{WHERE}.splits: a list of split names (e.g. [test]) or 'all'")
    for key in ("min_prob", "extra_penalty", "missing_penalty"):
        if not float(out[key]) > 0:
            raise ConfigError(f"{WHERE}.{key}: must be positive, got {out[key]!r}")
    if out["extra_penalty"] + out["missing_penalty"] <= -math.log(out["min_prob"]):
        log.warning("%s: extra_penalty + missing_penalty <= -ln(min_prob): the assignment may declare a crop extra "
                    "and its slot missing rather than force a confident mistake into the slot", WHERE)
    return out


def select_model_run(cfg: dict[str, Any], models_dir: str | Path = "models") -> str:
    """The run to use: ``model_run`` itself, or for ``best`` the candidate with the lowest best_val_loss."""
    if cfg["model_run"] != "best":
        return str(cfg["model_run"])
    losses = {}
    for run in cfg["candidate_runs"]:
        path = Path(models_dir) / run / "fit.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: candidate run '{run}' of {WHERE}.candidate_runs is not trained; "
                                    "run its train stage or remove it from the list")
        losses[run] = float(json.loads(path.read_text())["best_val_loss"])
    best = min(losses, key=lambda r: (losses[r], list(losses).index(r)))
    log.info("model_run best: %s (validation loss %s)", best, {r: round(v, 6) for r, v in losses.items()})
    return best


def _paths(name: str, metrics_dir, plots_dir, eval_dir) -> dict[str, Path]:
    out = Path(eval_dir) / "karyotyping" / name
    return {"metrics": Path(metrics_dir) / "karyotyping" / f"{name}.json",
            "confusion": Path(plots_dir) / "karyotyping" / f"{name}.csv",
            "out": out, "cells": out / "cells.csv", "crops": out / "crops.csv", "karyograms": out / "karyograms"}


def _fresh_outputs(paths: dict[str, Path], example_png: Path) -> None:
    if paths["out"].exists():
        shutil.rmtree(paths["out"])
    for p in (paths["metrics"], paths["confusion"], example_png):
        p.parent.mkdir(parents=True, exist_ok=True)
    paths["karyograms"].mkdir(parents=True)


def _write_json(obj: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _message_png(text: str, path: Path, size: tuple[int, int]) -> None:
    import cv2

    img = np.full((int(size[1]) // 4, int(size[0])), 255, np.uint8)
    cv2.putText(img, text, (10, img.shape[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 0, 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def _load_rows(cfg: dict[str, Any], data_dir: Path) -> tuple[pd.DataFrame, np.ndarray, pd.Series]:
    """(the selected split rows, the image cache, crops per cell_id over the whole dataset)."""
    from genediag.data.ingest import load_ingested

    dataset_dir = data_dir / "ingested" / cfg["dataset"]
    manifest, images = load_ingested(dataset_dir)
    for col in ("origin", "karyotype"):  # pandas would read an all-numeric origin column as integers
        if col in manifest.columns:
            manifest[col] = manifest[col].astype(str)
    cell_sizes = manifest["cell_id"].astype(str).value_counts() if "cell_id" in manifest.columns else pd.Series(dtype=int)
    if cfg["splits"] == "all":
        return manifest, images, cell_sizes
    split_csv = data_dir / "splits" / f"{cfg['dataset']}.csv"
    split = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    if len(split) != len(manifest) or not (split["sha256"].to_numpy() == manifest["sha256"].to_numpy()).all():
        raise ConfigError(f"{split_csv} does not match {dataset_dir}/manifest.csv; re-run the split stage")
    unknown = sorted(set(cfg["splits"]) - set(split["split"]))
    if unknown:
        raise ConfigError(f"{WHERE}.splits: {unknown} not in {split_csv} (it has {sorted(set(split['split']))})")
    rows = manifest[split["split"].isin(cfg["splits"]).to_numpy()]
    return rows, images, cell_sizes


def _cell_truth(cell: pd.DataFrame, class_set: set[str], cell_size: int) -> tuple[list[str | None], str | None, str]:
    """(per-crop true class or None, true numerical ISCN or None, reason when None)."""
    if "origin" in cell.columns:
        origin = [o if o else lab for o, lab in zip(cell["origin"], cell["label"])]
    else:
        origin = list(cell["label"])
    true_class = [o if o in class_set else None for o in origin]
    if any(t is None for t in true_class):
        bad = sorted({o for o, t in zip(origin, true_class) if t is None})
        return true_class, None, f"crop classes {bad} are not model classes"
    if cell_size != len(cell):
        return true_class, None, f"only {len(cell)} of its {cell_size} crops are in the karyotyped splits " \
                                 "(the split separated them: give group_id so a patient's cells stay together)"
    if "karyotype" in cell.columns and cell["karyotype"].iloc[0]:
        head = str(cell["karyotype"].iloc[0]).split(",")[0]
        if head.isdigit() and int(head) != len(cell):
            return true_class, None, f"karyotype {cell['karyotype'].iloc[0]!r} has {head} chromosomes but the data " \
                                     f"holds {len(cell)} crops of this cell"
    try:
        return true_class, counts_to_iscn(label_counts(true_class)), ""
    except ValueError as exc:
        return true_class, None, str(exc)


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def karyotype_cells(cfg: dict[str, Any], synthetic: bool = False, data_dir: str | Path = "data",
                    models_dir: str | Path = "models", metrics_dir: str | Path = "metrics",
                    plots_dir: str | Path = "plots", eval_dir: str | Path = "evaluation",
                    example_png: str | Path = "reports/figures/karyotyping_example.png") -> dict[str, Any]:
    """Run cell-level karyotyping as configured in ``params.yaml: karyotype``; returns the metrics dict."""
    t0 = time.perf_counter()
    cfg = resolve_config(cfg)
    name = str(cfg["model_run"])
    paths = _paths(name, metrics_dir, plots_dir, eval_dir)
    example_png = Path(example_png)
    rows, images, cell_sizes = _load_rows(cfg, Path(data_dir))

    has_cells = "cell_id" in rows.columns and (rows["cell_id"].astype(str).str.len() > 0).any()
    if not has_cells:
        log.warning("karyotype: the manifest of dataset '%s' has no cell_id for the %s split rows, so crops cannot "
                    "be grouped into cells; skipping (give a cell_id column in the source manifest to karyotype)",
                    cfg["dataset"], cfg["splits"])
        _fresh_outputs(paths, example_png)
        _write_json({"skipped": SKIPPED_NO_CELL_ID, "dataset": cfg["dataset"], "model_run": name}, paths["metrics"])
        pd.DataFrame(columns=["actual", "predicted"]).to_csv(paths["confusion"], index=False)
        pd.DataFrame(columns=CELL_COLUMNS).to_csv(paths["cells"], index=False)
        pd.DataFrame(columns=CROP_COLUMNS).to_csv(paths["crops"], index=False)
        _message_png(f"karyotyping skipped: {SKIPPED_NO_CELL_ID} ({cfg['dataset']})", example_png,
                     cfg["karyogram_size"])
        return {"skipped": SKIPPED_NO_CELL_ID}

    no_cell = rows["cell_id"].astype(str).str.len() == 0
    if no_cell.any():
        log.warning("karyotype: %d of %d crops have no cell_id and are not karyotyped", int(no_cell.sum()), len(rows))
    rows = rows[~no_cell].sort_values("index", kind="stable").reset_index(drop=True)
    partial = sorted(c for c, n in rows["cell_id"].value_counts().items() if n != cell_sizes.get(c, n))
    if partial:
        log.warning("karyotype: %d cells have crops outside the splits %s (e.g. %s); they are karyotyped on the "
                    "crops present but have no ground truth; split by patient (group_id) to keep cells whole",
                    len(partial), cfg["splits"], partial[:3])

    import cv2
    import torch

    from genediag.data.datasets import CachedImageDataset
    from genediag.models.checkpoint import load_checkpoint
    from genediag.synthetic.karyogram import compose_karyogram
    from genediag.training.trainer import predict_proba

    run = select_model_run(cfg, models_dir)
    model, meta = load_checkpoint(Path(models_dir) / run / "model.pt")
    if meta.get("dataset", cfg["dataset"]) != cfg["dataset"]:
        raise ConfigError(f"{WHERE}: model run '{run}' was trained on dataset '{meta['dataset']}', "
                          f"not '{cfg['dataset']}'")
    names = [str(c) for c in meta["class_names"]]
    try:
        hypotheses = make_hypotheses(cfg["hypotheses"], names)
    except ValueError as exc:
        raise ConfigError(f"{WHERE}.hypotheses: {exc}") from exc
    spec = meta["input"]
    in_chans = 1 if images.ndim == 3 else images.shape[-1]
    if in_chans != spec["in_chans"]:
        raise ConfigError(f"{WHERE}: model '{run}' takes {spec['in_chans']}-channel input, the cache of "
                          f"'{cfg['dataset']}' has {in_chans} channels")
    torch.manual_seed(0)
    ds = CachedImageDataset(images, rows["index"].to_numpy(), np.zeros(len(rows), np.int64), spec["size"],
                            invert=spec["invert"])
    log.info("karyotype: predicting %d crops of %d cells with %s", len(rows), rows["cell_id"].nunique(), run)
    probs = predict_proba(model, ds, batch_size=int(cfg["batch_size"])).numpy().astype(np.float64)

    _fresh_outputs(paths, example_png)
    class_set, index = set(names), {c: i for i, c in enumerate(names)}
    title_tag = ", synthetic" if synthetic else ""
    cell_rows, crop_tables, truth_skips = [], [], []
    argmax_all = probs.argmax(1)
    for cell_id, cell in tqdm(rows.groupby("cell_id", sort=True), desc="cells", mininterval=5.0):
        pos = cell.index.to_numpy()
        p = probs[pos]
        call = karyotype_cell(p, hypotheses, cfg["min_prob"], cfg["extra_penalty"], cfg["missing_penalty"])
        best = call.best
        final = call.final_labels(p, names)
        top = [names[i] for i in argmax_all[pos]]
        p_final = p[np.arange(len(p)), [index[f] for f in final]]
        assigned = best.crop_class != EXTRA
        low = (p_final < cfg["low_confidence"]) | ~assigned
        true_class, true_iscn, reason = _cell_truth(cell, class_set, int(cell_sizes.get(cell_id, len(cell))))
        if true_iscn is None:
            truth_skips.append(f"{cell_id}: {reason}")
        truth_counts = label_counts(true_class) if true_iscn else None
        kg_name = f"{cell_id}.png"
        kg = compose_karyogram([np.asarray(images[i]) for i in cell["index"]], final, tuple(cfg["karyogram_size"]),
                               title=f"{cell_id}: {call.karyotype} (predicted{title_tag})", orient=True)
        cv2.imwrite(str(paths["karyograms"] / kg_name), kg)
        cell_rows.append({
            "cell_id": cell_id, "group_id": cell["group_id"].iloc[0], "n_crops": len(cell),
            "true_karyotype": cell["karyotype"].iloc[0] if "karyotype" in cell.columns else "",
            "true_numerical": true_iscn or "", "predicted": call.karyotype, "score": round(best.score, 6),
            "runner_up": call.runner_up.hypothesis.iscn if call.runner_up else "",
            "margin": round(call.margin, 6) if math.isfinite(call.margin) else "",
            "suspected_abnormal": bool(is_numerically_abnormal(call.karyotype) or best.n_extra or best.missing),
            "n_low_confidence": int(low.sum()), "n_extra": best.n_extra,
            "missing": " ".join(names[s] for s in best.missing),
            "counts_exact_before": (label_counts(top) == truth_counts) if truth_counts else "",
            "counts_exact_after": (label_counts(final) == truth_counts) if truth_counts else "",
            "karyogram": f"karyograms/{kg_name}",
        })
        crop_tables.append(pd.DataFrame({
            "index": cell["index"].to_numpy(), "path": cell["path"].to_numpy(), "cell_id": cell_id,
            "label": cell["label"].to_numpy(), "true_class": [t or "" for t in true_class], "argmax": top,
            "p_argmax": np.round(p.max(1), 6), "final_label": final, "p_final": np.round(p_final, 6),
            "assigned": ["slot" if a else "extra" for a in assigned], "low_confidence": low,
        }))
    cells = pd.DataFrame(cell_rows, columns=CELL_COLUMNS)
    crops = pd.concat(crop_tables, ignore_index=True)[CROP_COLUMNS]
    cells.to_csv(paths["cells"], index=False)
    crops.to_csv(paths["crops"], index=False)
    _write_karyogram_manifest(cells, paths["karyograms"] / "manifest.csv")

    example = cfg["example_cell"]
    if example == "auto":
        abnormal = cells[cells["predicted"].map(is_numerically_abnormal)]
        example = (abnormal if len(abnormal) else cells)["cell_id"].iloc[0]
    elif example not in set(cells["cell_id"]):
        raise ConfigError(f"{WHERE}.example_cell: {example!r} is not among the karyotyped cells")
    shutil.copyfile(paths["karyograms"] / f"{example}.png", example_png)

    if truth_skips:
        log.warning("karyotype: %d of %d cells have no usable ground truth and are left out of the truth-dependent "
                    "metrics: %s", len(truth_skips), len(cells), "; ".join(truth_skips[:5]) +
                    (" …" if len(truth_skips) > 5 else ""))
    metrics = _metrics(cfg, name, run, synthetic, cells, crops, names, hypotheses)
    metrics["example_cell"] = str(example)
    _write_json(metrics, paths["metrics"])
    truth = cells[cells["true_numerical"] != ""]
    pd.DataFrame({"actual": truth["true_numerical"], "predicted": truth["predicted"]}).to_csv(paths["confusion"],
                                                                                           index=False)
    log.info("karyotype (%s%s): %d cells; crop accuracy %s → %s; counts exact %s → %s; karyotype accuracy %s; "
             "sensitivity %s, specificity %s; %.1f s", run, ", synthetic" if synthetic else "", len(cells),
             metrics.get("crop_accuracy_before"), metrics.get("crop_accuracy_after"),
             metrics.get("cells_counts_exact_before"), metrics.get("cells_counts_exact_after"),
             metrics.get("karyotype_accuracy"), metrics.get("sensitivity"), metrics.get("specificity"),
             time.perf_counter() - t0)
    return metrics


def _write_karyogram_manifest(cells: pd.DataFrame, path: Path) -> None:
    """The composed karyograms in the karyogram dataset's format (path,label,group_id,cell_id,karyotype);
    label is the truth (normal: 46,XX or 46,XY) when the cells carry a karyotype, else empty."""
    truth = cells["true_karyotype"].astype(str)
    label = [("normal" if t in NORMAL_KARYOTYPES else "abnormal") if t else "" for t in truth]
    pd.DataFrame({"path": [Path(k).name for k in cells["karyogram"]], "label": label, "group_id": cells["group_id"],
                  "cell_id": cells["cell_id"], "karyotype": truth, "predicted": cells["predicted"]}).to_csv(
        path, index=False)


def _metrics(cfg, name, run, synthetic, cells, crops, names, hypotheses) -> dict[str, Any]:
    scored = crops[crops["label"].isin(set(names))]
    with_origin = crops[crops["true_class"] != ""]
    out: dict[str, Any] = {
        "dataset": cfg["dataset"], "model_run": name, "selected_run": run, "synthetic": bool(synthetic),
        "splits": cfg["splits"], "hypotheses": [h.iscn for h in hypotheses],
        "cells": int(len(cells)), "crops": int(len(crops)),
        # crop accuracy counts only crops whose own label is a model class (a der22 crop is left out)
        "crops_scored": int(len(scored)),
        "crop_accuracy_before": _rate(int((scored["argmax"] == scored["label"]).sum()), len(scored)),
        "crop_accuracy_after": _rate(int((scored["final_label"] == scored["label"]).sum()), len(scored)),
        # the same against each crop's true class (origin: der22 → 22), over every crop that has one
        "crops_with_true_class": int(len(with_origin)),
        "true_class_accuracy_before": _rate(int((with_origin["argmax"] == with_origin["true_class"]).sum()),
                                            len(with_origin)),
        "true_class_accuracy_after": _rate(int((with_origin["final_label"] == with_origin["true_class"]).sum()),
                                           len(with_origin)),
        "low_confidence_crops": int(crops["low_confidence"].sum()),
        "extra_crops": int(cells["n_extra"].sum()),
        "cells_flagged_abnormal": int(cells["suspected_abnormal"].sum()),
        "predicted_karyotypes": {k: int(v) for k, v in cells["predicted"].value_counts().sort_index().items()},
    }
    truth = cells[cells["true_numerical"] != ""]
    out["cells_with_truth"] = int(len(truth))
    if not len(truth):
        log.warning("karyotype: no cell has ground truth (labels/origin/karyotype columns); the truth-dependent "
                    "metrics (counts, karyotype accuracy, sensitivity, specificity) are skipped")
        out["truth"] = "unavailable: no cell has a complete set of crops with known chromosome classes"
        return out
    actual = truth["true_numerical"].map(is_numerically_abnormal).to_numpy(bool)
    called = truth["predicted"].map(is_numerically_abnormal).to_numpy(bool)
    out.update({
        "cells_counts_exact_before": _rate(int(truth["counts_exact_before"].astype(bool).sum()), len(truth)),
        "cells_counts_exact_after": _rate(int(truth["counts_exact_after"].astype(bool).sum()), len(truth)),
        "karyotype_accuracy": _rate(int((truth["true_numerical"] == truth["predicted"]).sum()), len(truth)),
        "abnormal_cells": int(actual.sum()), "normal_cells": int((~actual).sum()),
        "sensitivity": _rate(int((actual & called).sum()), int(actual.sum())),
        "specificity": _rate(int((~actual & ~called).sum()), int((~actual).sum())),
    })
    return out
