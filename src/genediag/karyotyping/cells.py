"""Stage logic of ``karyotype``: group crops by ``cell_id``, predict every crop with the chosen chromosome
classifier (temperature-scaled probabilities), call each cell's karyotype by constrained assignment over the
hypotheses (:mod:`genediag.karyotyping.assign`; ``standard``: every autosomal trisomy and monosomy, 45,X, 47,XXX,
47,XXY, 47,XYY and the two normal karyotypes, :mod:`genediag.karyotyping.calls`), and refer a cell no hypothesis
fits: its per-crop log-likelihood is below the ``nofit_quantile`` of the validation cells'.

Outputs (paths from the stage's command line):

- metrics JSON: crop accuracy before/after assignment, cells with exact counts, ``exact_karyotype_accuracy``
  overall and on abnormal cells, sensitivity counting only exact calls, specificity, referrals, per true
  karyotype; 95 % intervals from a bootstrap over patients
- a confusion CSV: actual,predicted numerical ISCN per cell (``dvc plots``' confusion template)
- ``cells.csv`` (one row per cell), ``crops.csv`` (one per crop), ``karyograms/<cell_id>.png`` +
  ``karyograms/manifest.csv`` (the karyogram dataset format), and an example karyogram for the report

Ground truth, where the data has it: a crop's true class is its ``origin`` (the normal chromosome an abnormal
one derives from: der22 → 22) if the manifest has that column, else its ``label``. A cell's true numerical
karyotype is written from the counts of its crops' true classes; a cell with a crop whose true class is not a
model class, or whose ``karyotype`` column (if any) names a different chromosome total than its crop count
(e.g. a crop was quarantined), has no truth and is left out of the truth-dependent metrics (logged).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from genediag import io as gio
from genediag.config import ConfigError
from genediag.karyotyping.assign import (EXTRA, NORMAL_KARYOTYPES, counts_to_iscn, is_numerically_abnormal,
                                         karyotype_cell, label_counts, make_hypotheses)
from genediag.karyotyping.calls import (cell_outcomes, fit_nofit_threshold, karyotype_metrics, outcome_rates,
                                         resolve_hypotheses)
from genediag.schema import KARYOTYPING, validate

log = logging.getLogger(__name__)

WHERE = "params.yaml: karyotyping"
SKIPPED_NO_CELL_ID = "no cell_id in manifest"
CELL_COLUMNS = ["cell_id", "group_id", "split", "n_crops", "true_karyotype", "true_numerical", "predicted", "score",
                "runner_up", "margin", "per_crop_log_likelihood", "referred", "refer_reason", "suspected_abnormal",
                "n_low_confidence", "n_extra", "missing",
                "counts_exact_before", "counts_exact_after", "karyogram"]
CROP_COLUMNS = ["index", "path", "cell_id", "label", "true_class", "argmax", "p_argmax", "final_label", "p_final",
                "assigned", "low_confidence"]


def resolve_config(cfg: dict[str, Any]) -> dict[str, Any]:
    out = validate(cfg, KARYOTYPING, WHERE)
    if out["model_run"] == "best" and not out["candidate_runs"]:
        raise ConfigError(f"{WHERE}.candidate_runs: model_run is 'best' but no candidate runs are listed")
    try:
        out["hypotheses"] = resolve_hypotheses(out["hypotheses"])
    except ValueError as exc:
        raise ConfigError(f"{WHERE}.hypotheses: {exc}") from None
    if out["extra_penalty"] + out["missing_penalty"] <= -math.log(out["min_prob"]):
        log.warning("%s: extra_penalty + missing_penalty <= -ln(min_prob): the assignment may declare a crop extra "
                    "and its slot missing rather than force a confident mistake into the slot", WHERE)
    return out


def select_model_run(cfg: dict[str, Any], models_dir: str | Path = "models") -> str:
    """The run to use: ``model_run`` itself, or for ``best`` the candidate with the highest validation accuracy
    (validation losses of runs with different losses, e.g. with and without label smoothing, do not compare)."""
    from genediag.models.checkpoint import read_checkpoint

    if cfg["model_run"] != "best":
        return str(cfg["model_run"])
    accuracy = {}
    for run in cfg["candidate_runs"]:
        path = Path(models_dir) / run / "model.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: candidate run '{run}' of {WHERE}.candidate_runs is not trained; "
                                    "run its train stage or remove it from the list")
        accuracy[run] = float(read_checkpoint(path)["fit"]["best_val_accuracy"])
    best = max(accuracy, key=lambda r: (accuracy[r], -list(accuracy).index(r)))
    log.info("model_run best: %s (validation accuracy %s)", best, {r: round(v, 6) for r, v in accuracy.items()})
    return best


def _paths(out: dict[str, str | Path]) -> dict[str, Path]:
    d = Path(out["eval_dir"])
    return {"metrics": Path(out["metrics"]), "confusion": Path(out["confusion"]), "out": d, "cells": d / "cells.csv",
            "crops": d / "crops.csv", "karyograms": d / "karyograms", "example": Path(out["example"])}


def _fresh_outputs(paths: dict[str, Path]) -> None:
    if paths["out"].exists():
        shutil.rmtree(paths["out"])
    for key in ("metrics", "confusion", "example"):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
    paths["karyograms"].mkdir(parents=True)


def _message_png(text: str, path: Path, size: tuple[int, int]) -> None:
    import cv2

    img = np.full((int(size[1]) // 4, int(size[0])), 255, np.uint8)
    cv2.putText(img, text, (10, img.shape[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 0, 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def _load_rows(dataset_dir: Path, split_csv: Path) -> tuple[pd.DataFrame, np.ndarray, pd.Series]:
    """(every row with its split, the image cache, crops per cell_id over the whole dataset)."""
    from genediag.data.datasets import load_split_table

    images, table = load_split_table(dataset_dir, split_csv)
    for col in ("origin", "karyotype", "cell_id"):
        if col in table.columns:
            table[col] = table[col].astype(str)
    cell_sizes = table["cell_id"].value_counts() if "cell_id" in table.columns else pd.Series(dtype=int)
    return table, images, cell_sizes


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


def _call_cells(rows: pd.DataFrame, probs: np.ndarray, hypotheses, cfg: dict[str, Any], threshold: float | None):
    """[(cell_id, cell rows, their probabilities, CellCall)] for every cell of `rows`."""
    out = []
    for cell_id, cell in tqdm(rows.groupby("cell_id", sort=True), desc="cells", mininterval=5.0):
        p = probs[cell.index.to_numpy()]
        out.append((cell_id, cell, p, karyotype_cell(p, hypotheses, cfg["min_prob"], cfg["extra_penalty"],
                                                     cfg["missing_penalty"], nofit_threshold=threshold)))
    return out


def karyotype_cells(cfg: dict[str, Any], dataset_dir: str | Path, split_csv: str | Path,
                    models_dir: str | Path, out: dict[str, str | Path], evidence: dict[str, Any] | None = None,
                    name: str | None = None) -> dict[str, Any]:
    """Cell-level karyotyping as configured in ``params.yaml: karyotyping``; returns the metrics dict.

    `out`: ``metrics`` (JSON), ``confusion`` (CSV), ``eval_dir`` (cells.csv, crops.csv, karyograms/), ``example``
    (PNG for the report)."""
    t0 = time.perf_counter()
    cfg = resolve_config(cfg)
    name = name or str(cfg["model_run"])
    paths = _paths(out)
    table, images, cell_sizes = _load_rows(Path(dataset_dir), Path(split_csv))
    splits = sorted(set(table["split"])) if cfg["splits"] == "all" else list(cfg["splits"])
    unknown = sorted(set(splits) - set(table["split"]))
    if unknown:
        raise ConfigError(f"{WHERE}.splits: {unknown} not in {split_csv} (it has {sorted(set(table['split']))})")

    has_cells = "cell_id" in table.columns and (table["cell_id"].str.len() > 0).any()
    if not has_cells:
        log.warning("karyotyping: the manifest of %s has no cell_id, so crops cannot be grouped into cells; skipping "
                    "(give a cell_id column in the source manifest to karyotype)", dataset_dir)
        _fresh_outputs(paths)
        gio.write_json(paths["metrics"], {"skipped": SKIPPED_NO_CELL_ID, "dataset": str(dataset_dir), "model_run": name})
        for key, cols in (("confusion", ["actual", "predicted"]), ("cells", CELL_COLUMNS), ("crops", CROP_COLUMNS)):
            gio.write_with(paths[key], lambda p, c=cols: pd.DataFrame(columns=c).to_csv(p, index=False))
        _message_png(f"karyotyping skipped: {SKIPPED_NO_CELL_ID}", paths["example"], cfg["karyogram_size"])
        return {"skipped": SKIPPED_NO_CELL_ID}

    no_cell = table["cell_id"].str.len() == 0
    if no_cell.any():
        log.warning("karyotyping: %d of %d crops have no cell_id and are not karyotyped", int(no_cell.sum()), len(table))
    use = table[~no_cell & table["split"].isin(set(splits) | {"val"})].sort_values("index", kind="stable")
    use = use.reset_index(drop=True)

    import cv2

    from genediag.data.datasets import CachedImageDataset
    from genediag.data.karyogram_layout import compose_karyogram
    from genediag.models.checkpoint import load_checkpoint
    from genediag.models.inference import predict_proba, runner_for

    run = select_model_run(cfg, models_dir)
    model, meta = load_checkpoint(Path(models_dir) / run / "model.pt")
    names = [str(c) for c in meta["class_names"]]
    try:
        hypotheses = make_hypotheses(cfg["hypotheses"], names)
    except ValueError as exc:
        raise ConfigError(f"{WHERE}.hypotheses: {exc}") from exc
    spec = meta["input"]
    in_chans = 1 if images.ndim == 3 else images.shape[-1]
    if in_chans != int(spec["in_chans"]):
        raise ConfigError(f"{WHERE}: model '{run}' takes {spec['in_chans']}-channel input, the cache of "
                          f"{dataset_dir} has {in_chans} channels")
    synthetic = bool(meta.get("synthetic"))
    ds = CachedImageDataset(images, use["index"].to_numpy(), np.zeros(len(use), np.int64), spec["size"],
                            invert=bool(spec["invert"]))
    log.info("karyotyping: predicting %d crops of %d cells with %s", len(use), use["cell_id"].nunique(), run)
    runner = runner_for(model, Path(models_dir) / run, (evidence or {}).get("runtime", "onnx"))
    probs = predict_proba(runner, ds, int(cfg["batch_size"]), float(meta.get("temperature", 1.0)))

    threshold = None
    val = use[use["split"] == "val"]
    if cfg["nofit_quantile"] is not None and len(val):
        val_calls = _call_cells(val, probs, hypotheses, cfg, None)
        threshold = round(fit_nofit_threshold([c.per_crop_log_likelihood for *_, c in val_calls],
                                              cfg["nofit_quantile"]), 6)
        log.info("no-fit threshold %.4f nats per crop: the %.0f %% quantile of %d validation cells", threshold,
                 100 * cfg["nofit_quantile"], len(val_calls))
    rows = use[use["split"].isin(splits)]
    partial = sorted(c for c, n in rows["cell_id"].value_counts().items() if n != cell_sizes.get(c, n))
    if partial:
        log.warning("karyotyping: %d cells have crops outside the splits %s (e.g. %s); they are karyotyped on the "
                    "crops present but have no ground truth; split by patient (group_id) to keep cells whole",
                    len(partial), splits, partial[:3])

    _fresh_outputs(paths)
    class_set, index = set(names), {c: i for i, c in enumerate(names)}
    title_tag = ", synthetic" if synthetic else ""
    cell_rows, crop_tables, truth_skips = [], [], []
    argmax_all = probs.argmax(1)
    for cell_id, cell, p, call in _call_cells(rows, probs, hypotheses, cfg, threshold):
        pos = cell.index.to_numpy()
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
            "cell_id": cell_id, "group_id": cell["group_id"].iloc[0], "split": cell["split"].iloc[0],
            "n_crops": len(cell), "true_karyotype": cell["karyotype"].iloc[0] if "karyotype" in cell.columns else "",
            "true_numerical": true_iscn or "", "predicted": call.karyotype, "score": round(best.score, 6),
            "runner_up": call.runner_up.hypothesis.iscn if call.runner_up else "",
            "margin": round(call.margin, 6) if math.isfinite(call.margin) else "",
            "per_crop_log_likelihood": round(call.per_crop_log_likelihood, 6), "referred": bool(call.referred),
            "refer_reason": call.reason,
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
    gio.write_with(paths["cells"], lambda p: cells.to_csv(p, index=False))
    gio.write_with(paths["crops"], lambda p: crops.to_csv(p, index=False))
    _write_karyogram_manifest(cells, paths["karyograms"] / "manifest.csv")

    example = cfg["example_cell"]
    if example == "auto":
        abnormal = cells[cells["predicted"].map(is_numerically_abnormal)]
        example = (abnormal if len(abnormal) else cells)["cell_id"].iloc[0]
    elif example not in set(cells["cell_id"]):
        raise ConfigError(f"{WHERE}.example_cell: {example!r} is not among the karyotyped cells")
    shutil.copyfile(paths["karyograms"] / f"{example}.png", paths["example"])

    if truth_skips:
        log.warning("karyotyping: %d of %d cells have no usable ground truth and are left out of the truth-dependent "
                    "metrics: %s", len(truth_skips), len(cells), "; ".join(truth_skips[:5]) +
                    (" …" if len(truth_skips) > 5 else ""))
    metrics = _metrics(cfg, name, run, synthetic, cells, crops, names, hypotheses, threshold, evidence or {})
    metrics["example_cell"] = str(example)
    gio.write_json(paths["metrics"], metrics)
    truth = cells[cells["true_numerical"] != ""]
    gio.write_with(paths["confusion"], lambda p: pd.DataFrame({"actual": truth["true_numerical"],
                                                               "predicted": truth["predicted"]}).to_csv(p, index=False))
    log.info("karyotyping (%s%s): %d cells; crop accuracy %s → %s; exact karyotypes %s (abnormal cells %s, n=%s); "
             "referred %s; %.1f s", run, ", synthetic" if synthetic else "", len(cells),
             metrics.get("crop_accuracy_before"), metrics.get("crop_accuracy_after"),
             metrics.get("exact_karyotype_accuracy"), metrics.get("exact_karyotype_accuracy_abnormal"),
             metrics.get("abnormal_cells"), metrics.get("referred"), time.perf_counter() - t0)
    return metrics


def _write_karyogram_manifest(cells: pd.DataFrame, path: Path) -> None:
    """The composed karyograms in the karyogram dataset's format (path,label,group_id,cell_id,karyotype);
    label is the truth (normal: 46,XX or 46,XY) when the cells carry a karyotype, else empty."""
    truth = cells["true_karyotype"].astype(str)
    label = [("normal" if t in NORMAL_KARYOTYPES else "abnormal") if t else "" for t in truth]
    pd.DataFrame({"path": [Path(k).name for k in cells["karyogram"]], "label": label, "group_id": cells["group_id"],
                  "cell_id": cells["cell_id"], "karyotype": truth, "predicted": cells["predicted"]}).to_csv(
        path, index=False)


def _metrics(cfg, name, run, synthetic, cells, crops, names, hypotheses, threshold, evidence) -> dict[str, Any]:
    scored = crops[crops["label"].isin(set(names))]
    with_origin = crops[crops["true_class"] != ""]
    out: dict[str, Any] = {
        "model_run": name, "selected_run": run, "synthetic": bool(synthetic), "splits": cfg["splits"],
        "hypotheses": len(hypotheses), "nofit_threshold": threshold, "nofit_quantile": cfg["nofit_quantile"],
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
    truth = cells[cells["true_numerical"] != ""].reset_index(drop=True)
    out["cells_with_truth"] = int(len(truth))
    if not len(truth):
        log.warning("karyotyping: no cell has ground truth (labels/origin/karyotype columns); the truth-dependent "
                    "metrics (counts, exact karyotypes, sensitivity, specificity) are skipped")
        out["truth"] = "unavailable: no cell has a complete set of crops with known chromosome classes"
        return out
    out["cells_counts_exact_before"] = _rate(int(truth["counts_exact_before"].astype(bool).sum()), len(truth))
    out["cells_counts_exact_after"] = _rate(int(truth["counts_exact_after"].astype(bool).sum()), len(truth))
    calls = karyotype_metrics(truth["true_numerical"].tolist(), truth["predicted"].tolist(),
                              truth["referred"].astype(bool).tolist())
    calls.pop("cells", None)   # = cells_with_truth
    out.update(calls)
    if evidence:
        from genediag.evaluation.uncertainty import bootstrap_ci

        keep, facts = cell_outcomes(truth["true_numerical"].tolist(), truth["predicted"].tolist(),
                                    truth["referred"].astype(bool).tolist())
        ci = bootstrap_ci(outcome_rates, truth["group_id"].to_numpy()[keep], facts, int(evidence["bootstrap"]),
                          int(evidence["seed"]))
        out["ci95"] = ci
    return out


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None
