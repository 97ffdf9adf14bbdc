"""The whole-file check of ``params.yaml`` (``python -m genediag params check``, and every preset before it is
written): every section against its spec in :mod:`genediag.schema`, every run over its family, the datasets the
branches name, and the generators' own parameter checks. Stages validate only their own section (so this module,
which imports the generators, is not part of any stage's code).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from genediag.config import ConfigError
from genediag.schema import (BALANCE, BASE, BENCHMARK, CROSS_EVALUATION, EVIDENCE, FACE_RUN, FACENET, HPSEARCH,
                             KARYOTYPING, MATCHING, MC_DROPOUT, REALIGN, REPORTS, RUN, Map, resolve_dataset,
                             resolve_run, validate)

SECTIONS = ("generate", "faces_generate", "datasets", "chromosomes", "karyotyping", "karyograms", "faces",
            "cross_evaluation", "evidence",
            "reports")


def _branch_runs(params: Mapping[str, Any], branch: str, runs_keys: Sequence[str], spec: Map, where: str) -> int:
    section = params.get(branch) or {}
    n = 0
    for key in runs_keys:
        for run in section.get(key) or {}:
            resolve_run(branch, run, section, where, key, spec)
            n += 1
    return n


def check_params(params: Mapping[str, Any], where: str = "params.yaml") -> dict[str, int]:
    """Validate every section of a params file (what each stage would check before it starts); returns counts."""
    unknown = sorted(set(params) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {unknown}; sections: {list(SECTIONS)}")
    datasets = params.get("datasets") or {}
    for name, cfg in datasets.items():
        resolve_dataset(name, cfg, f"{where}: datasets")
    counts = {"datasets": len(datasets)}
    counts["chromosome runs"] = _branch_runs(params, "chromosomes", ["runs"], RUN, where)
    counts["karyogram runs"] = _branch_runs(params, "karyograms", ["runs"], RUN, where)
    counts["face runs"] = _branch_runs(params, "faces", ["pretrain", "finetune", "heads"], FACE_RUN, where)
    faces = params.get("faces") or {}
    realigned = {}
    for name, cfg in (faces.get("realign") or {}).items():
        realigned[name] = validate(cfg, REALIGN, f"{where}: faces.realign.{name}")
        if name in datasets:
            raise ConfigError(f"{where}: faces.realign.{name}: also a datasets entry; give the derived dataset its "
                              "own name")
        if realigned[name]["source"] not in datasets:
            raise ConfigError(f"{where}: faces.realign.{name}.source: '{realigned[name]['source']}' is not a "
                              "datasets entry")
    face_datasets = set(datasets) | set(realigned)
    if faces.get("facenet") is not None:
        fn = validate(faces["facenet"], FACENET, f"{where}: faces.facenet")
        for key in ("identities", "syndromes"):
            if fn[key] not in face_datasets:
                raise ConfigError(f"{where}: faces.facenet.{key}: '{fn[key]}' is neither a datasets nor a "
                                  "faces.realign entry")
    if faces.get("matching") is not None:
        validate(faces["matching"], MATCHING, f"{where}: faces.matching")
    kg = params.get("karyograms") or {}
    for key, spec in (("balance", BALANCE), ("bases", BASE), ("hpsearch", HPSEARCH), ("mc_dropout", MC_DROPOUT)):
        for name, cfg in (kg.get(key) or {}).items():
            validate(cfg, spec, f"{where}: karyograms.{key}.{name}")
    for name, cfg in ((params.get("chromosomes") or {}).get("benchmark") or {}).items():
        validate(cfg, BENCHMARK, f"{where}: chromosomes.benchmark.{name}")
    for branch in ("chromosomes", "karyograms", "faces"):
        for key in ("dataset", "identities", "syndromes"):
            name = (params.get(branch) or {}).get(key)
            if name is not None and name not in datasets and not (branch == "karyograms"
                                                                  and name in (kg.get("balance") or {})):
                raise ConfigError(f"{where}: {branch}.{key}: '{name}' is not a datasets entry")
    if "karyotyping" in params:
        validate({k: v for k, v in params["karyotyping"].items()}, KARYOTYPING, f"{where}: karyotyping")
    for name, cfg in (params.get("cross_evaluation") or {}).items():
        c = validate(cfg, CROSS_EVALUATION, f"{where}: cross_evaluation.{name}")
        if c["dataset"] not in datasets:
            raise ConfigError(f"{where}: cross_evaluation.{name}.dataset: '{c['dataset']}' is not a datasets entry")
    validate(params.get("evidence") or {}, EVIDENCE, f"{where}: evidence")
    validate(params.get("reports") or {}, REPORTS, f"{where}: reports")
    if "generate" in params:
        from genediag.synthetic.cohort import merge_cohort_params

        try:
            merge_cohort_params(params["generate"])
        except ValueError as exc:
            raise ConfigError(f"{where}: generate: {exc}") from None
    if "faces_generate" in params:
        from genediag.faces.synthetic import resolve_config

        try:
            resolve_config(params["faces_generate"])
        except ValueError as exc:
            raise ConfigError(f"{where}: faces_generate: {exc}") from None
    return counts
