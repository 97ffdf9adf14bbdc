"""Karyogram abnormality detection (normal vs abnormal karyograms): layout-preserving augmentation, the offline
balancing stage, Monte-Carlo-dropout confidence with referral, and the hyper-parameter search.

The transfer models themselves live in :mod:`genediag.models.thesis_transfer` (registered as
``thesis_transfer``) so that the ``train@``/``evaluate@`` stages build them like any other model.
"""

from __future__ import annotations

from typing import Any


def resolve_target_run(cfg: dict[str, Any], run_cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """The resolved ``train.<cfg['run']>`` config of a stage that works on another run's model or data (hpsearch,
    mc_dropout); the stage's own ``dataset`` (used for its dvc.yaml dependencies) must name the run's dataset."""
    from genediag.config import ConfigError
    from genediag.training.run import resolve_run_config

    run = cfg["run"]
    rcfg = resolve_run_config(run, run_cfg)
    if cfg.get("dataset") not in (None, rcfg["dataset"]):
        raise ConfigError(f"{where}.dataset is '{cfg['dataset']}' but train.{run}.dataset is '{rcfg['dataset']}'; "
                          "make them equal (dvc.yaml uses it for the dependencies)")
    return rcfg
