"""Which labels a classifier learns: a task picks classes out of an ingested dataset.

A class spec is one of
- ``normal24``: chromosomes 1–22, X, Y (crops with other labels are excluded, and the exclusion is logged);
- ``all``: every label present in the manifest, sorted;
- a list of labels: exactly those classes;
- a mapping ``{class_name: [label, ...]}``: merge labels into classes (e.g. a binary task
  ``{"22": ["22"], "der22": ["der22"]}``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd

from genediag.config import ConfigError

log = logging.getLogger(__name__)

NORMAL_CHROMOSOMES = [str(i) for i in range(1, 23)] + ["X", "Y"]
#: the 8 abnormal chromosome types of Karyotyping Pinnacle's 32-class task (and the synthetic cohort's), each with
#: the normal chromosome it derives from (its slot in a karyogram)
ABNORMAL_ORIGIN = {"del5p": "5", "del4p": "4", "del18p": "18", "del1p": "1", "der9": "9", "der22": "22", "inv9": "9",
                   "iXq": "X"}
ABNORMAL_CHROMOSOMES = list(ABNORMAL_ORIGIN)
#: label allow-lists a dataset can name (``datasets.<name>.labels``)
NAMED_LABEL_SETS = {"chromosomes24": NORMAL_CHROMOSOMES, "chromosomes32": NORMAL_CHROMOSOMES + ABNORMAL_CHROMOSOMES}


def origin_of(label: str) -> str:
    """The normal chromosome a crop label is or derives from ("der22" → "22"; "7" → "7")."""
    if label in NORMAL_CHROMOSOMES:
        return label
    if label in ABNORMAL_ORIGIN:
        return ABNORMAL_ORIGIN[label]
    raise ValueError(f"unknown chromosome label {label!r}; expected one of {NORMAL_CHROMOSOMES + ABNORMAL_CHROMOSOMES}")


def natural_key(label: str):
    """Sort '2' before '10' and numbers before letters: 1, 2, …, 22, X, Y, del4p, …"""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", str(label))]


def resolve_classes(spec: Any, labels: pd.Series) -> tuple[list[str], dict[str, str]]:
    """Return (class_names, label → class_name) for a class spec."""
    present = sorted(set(labels.astype(str)), key=natural_key)
    if spec == "normal24":
        mapping = {c: c for c in NORMAL_CHROMOSOMES}
        names = list(NORMAL_CHROMOSOMES)
    elif spec == "all":
        mapping = {c: c for c in present}
        names = present
    elif isinstance(spec, list):
        names = [str(c) for c in spec]
        mapping = {c: c for c in names}
    elif isinstance(spec, dict):
        names = [str(k) for k in spec]
        mapping = {}
        for cls, members in spec.items():
            for m in (members if isinstance(members, list) else [members]):
                if str(m) in mapping:
                    raise ConfigError(f"classes: label '{m}' is mapped to two classes ('{mapping[str(m)]}', '{cls}')")
                mapping[str(m)] = str(cls)
    else:
        raise ConfigError(f"classes: expected normal24, all, a list of labels or a mapping; got {spec!r}")
    absent = sorted({m for m in mapping if m not in set(present)}, key=natural_key)
    if absent:
        raise ConfigError(f"classes: label(s) {absent} requested but not in the data (present: {present})")
    return names, mapping


def task_targets(manifest: pd.DataFrame, spec: Any) -> tuple[list[str], np.ndarray]:
    """Per-row class index (−1 = not part of this task), logging what the task leaves out and why."""
    names, mapping = resolve_classes(spec, manifest["label"])
    index = {n: i for i, n in enumerate(names)}
    cls = manifest["label"].astype(str).map(mapping)
    targets = cls.map(index).fillna(-1).astype(int).to_numpy()
    left_out = manifest.loc[targets < 0, "label"].value_counts()
    if len(left_out):
        log.info("task (classes=%s) leaves out %d items whose labels are not in it: %s",
                 spec if isinstance(spec, str) else "custom", int(left_out.sum()), left_out.sort_index().to_dict())
    return names, targets
