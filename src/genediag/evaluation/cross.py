"""Cross-dataset evaluation: any trained run scored on another dataset's test split.

``cross_evaluation.<name>: {run, branch, dataset, protocol}`` in params; stage ``cross_evaluate@<name>`` writes
``metrics/cross/<name>.json``. Protocols:

- ``classify``: the run's own evaluation (:func:`genediag.evaluation.evaluate.evaluate_run`: headline metrics
  with patient-bootstrap intervals, calibration, referral, OOD) on the other dataset's test items whose labels
  are among the run's classes (the others are counted and left out);
- ``verify``: LFW-style verification (:func:`genediag.faces.evaluate.verify_run`) of a face model's embeddings on
  the other dataset's held-out people, e.g. an identity model verified on the people of the syndrome set.

The two datasets must be cached the same way (input kind, image size and mode); otherwise the stage stops with
an error naming both, instead of scoring resized or re-aligned images the model never saw.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from genediag import io as gio
from genediag.config import ConfigError
from genediag.models.checkpoint import read_checkpoint

log = logging.getLogger(__name__)


def check_compatible(run_dir: Path, dataset_dir: Path, name: str) -> dict[str, Any]:
    """The dataset's ingest summary, after checking it is cached as the run's training data was."""
    meta = read_checkpoint(run_dir / "model.pt")
    summary = json.loads((dataset_dir / "summary.json").read_text())
    spec = meta["input"]
    where = f"cross_evaluation.{name}"
    trained, given = spec.get("dataset_kind"), summary.get("kind")
    same_family = {trained, given} <= {"face_syndromes", "face_identities"} or trained == given
    if not same_family:
        raise ConfigError(f"{where}: run {meta.get('run')} was trained on {trained} images, dataset "
                          f"{summary.get('dataset')} holds {given}; pick a dataset of the same kind")
    if list(summary.get("image_shape") or []) != list(spec.get("crop_shape") or []):
        raise ConfigError(f"{where}: dataset {summary.get('dataset')} is cached as {summary.get('image_shape')}, run "
                          f"{meta.get('run')} was trained on {spec.get('crop_shape')}; ingest it with the same "
                          "size/alignment (datasets.<name>.ingest / faces.align)")
    return summary


def cross_evaluate(name: str, cfg: dict[str, Any], run_dir: str | Path, dataset_dir: str | Path,
                   split_csv: str | Path, metrics_path: str | Path, plots_dir: str | Path, eval_dir: str | Path,
                   evidence: dict[str, Any]) -> dict[str, Any]:
    run_dir, dataset_dir = Path(run_dir), Path(dataset_dir)
    summary = check_compatible(run_dir, dataset_dir, name)
    if cfg["protocol"] == "verify":
        from genediag.faces.evaluate import verify_run

        result = verify_run(run_dir, dataset_dir, split_csv, metrics_path, evidence)
    else:
        from genediag.evaluation.evaluate import evaluate_run

        result = evaluate_run(run_dir, dataset_dir, split_csv, metrics_path, plots_dir, eval_dir, evidence)
    result.update({"cross": name, "protocol": cfg["protocol"], "trained_on": read_checkpoint(
        run_dir / "model.pt").get("dataset"), "evaluated_on": summary.get("dataset"),
        "synthetic": bool(summary.get("synthetic")) and bool(result.get("synthetic", True))})
    gio.write_json(metrics_path, result)
    # the evaluation folder: predictions for a classifier (evaluate_run writes them); for both protocols what was
    # scored on what, so the folder exists and says where its figures came from
    Path(eval_dir).mkdir(parents=True, exist_ok=True)
    gio.write_json(Path(eval_dir) / "provenance.json", {
        "cross": name, "protocol": cfg["protocol"], "run": run_dir.name, "trained_on": result["trained_on"],
        "evaluated_on": result["evaluated_on"], "split": str(split_csv), "metrics": str(metrics_path),
        "synthetic": result["synthetic"]})
    log.info("cross_evaluation.%s: run %s (trained on %s) on %s: %s", name, run_dir.name, result["trained_on"],
             result["evaluated_on"], {k: result.get(k) for k in ("accuracy", "verification_accuracy")
                                      if result.get(k) is not None})
    return result
