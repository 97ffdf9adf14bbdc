"""Generate a synthetic cohort: patients → cells → G-banded chromosome crops, plus karyograms of the cells.

Every random draw comes from ``numpy.random.default_rng(SeedSequence([seed, patient, cell, item]))``
(patient-level draws use cell = item = 0, cell-level draws item = 0, chromosome k uses item = k ≥ 1;
patients and cells are numbered from 1), so the output is bit-identical for the same params whatever
order or process generates it.

Test-only patients (``test_patients``, below) draw from a stream of their own,
``SeedSequence([seed, 1, patient, cell, item])``: five entropy words where the main cohort's have four
(SeedSequence hashes a fifth word in a separate round, so [seed, 1, t, c, 0] is not [seed, 1, t, c]), the
leading 1 naming the stream. Test patient t never shares a seed with a main patient, and adding, removing or
resizing test patients leaves every main patient's bytes unchanged.

Layout written under ``out_dir``::

    chromosomes/<patient_id>/<cell_id>_<nn>_<label>.png   posed crops (uint8, mode L, canvas×canvas)
    chromosomes/manifest.csv   path,label,group_id,cell_id,karyotype,origin
    karyograms/<cell_id>.png                              composed karyogram of the cell
    karyograms/manifest.csv    path,label,group_id,cell_id,karyotype   (label: normal/abnormal)

(patient ids P0001… and, with ``test_patients``, T0001…; the manifests then end with a ``split`` column.)

``cells_per_patient`` is one number or a mapping ``{normal: n, numerical: n, structural: n}`` by patient kind
(numerical: +21, +18, +13, -X, XXY, XXX, XYY, -21, -22; structural: the karyotypes with an abnormal chromosome,
whose 8 crop types are rare otherwise; a lab reads ~20 metaphases per patient). Only the first
``karyograms_per_patient`` cells of each patient get a karyogram, so more cells for the crop tasks leave the
karyogram dataset unchanged; cell c of patient p keeps its seed whatever the counts, so existing cells render
identically.

``test_patients`` (optional; absent, None or a plan of zero patients = no change at all, not even a column)
adds patients for the test split only, rendered after the main cohort::

    test_patients: {normal: 60, abnormalities: ["+21", "XXX", "-21"], per_abnormality: 6, cells_per_patient: 2}

Their ids are ``T0001``…, their abnormalities round-robin as in the main plan with the normal patients last, sex
drawn as for the main cohort. ``per_abnormality`` and ``cells_per_patient`` take one number or a mapping by kind
like the main keys (defaults: 1 and ``karyograms_per_patient``); every cell of a test patient gets a karyogram
(so ``cells_per_patient`` may not exceed ``karyograms_per_patient``) and only those cells are written: the crop
manifest holds whole cells for karyotyping and the crop test set stays small. With test patients, both manifests
get a last column ``split``: "" for the main cohort (the split stage decides) and "test" for the test patients
(fixed to test). Contact sheet and example karyogram come from the main cohort only.
"""

from __future__ import annotations

import copy
import csv
import logging
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from genediag.data.karyogram_layout import compose_karyogram
from genediag.synthetic.karyotype import ABNORMALITIES, ALL_LABELS, DEFAULT_ABNORMALITIES, make_karyotype
from genediag.synthetic.render import merge_render_params, render_chromosome

log = logging.getLogger(__name__)

DEFAULT_COHORT_PARAMS: dict[str, Any] = {
    "seed": 0,
    "normal_patients": 48,
    "abnormalities": list(DEFAULT_ABNORMALITIES),  # karyotype abnormalities, each given to N patients
    "patients_per_abnormality": 3,
    "cells_per_patient": 2,  # an int, or {normal: n, numerical: n, structural: n} by patient kind
    "karyograms_per_patient": 2,  # karyograms are composed for the first N cells of each patient only
    "female_fraction": 0.5,  # P(46,XX) for a patient whose abnormality does not fix the sex
    "canvas": 128,  # crop size (px); overrides render.canvas
    "karyogram_size": [640, 480],  # [W, H]
    "condensation": [0.7, 1.0],  # per-cell length factor range (1.0 = chr1 at render.chr1_frac)
    "cell_width": [0.85, 1.15],  # per-cell chromosome width factor range
    "contact_sheet_per_class": 6,  # instances per class on the report contact sheet
    "workers": 1,  # processes used to render patients (output is identical for any value)
    "render": {},  # renderer knobs, see genediag.synthetic.render.DEFAULT_RENDER_PARAMS
    "test_patients": None,  # extra patients for the test split only (module doc); None = none
}

CROP_COLUMNS = ["path", "label", "group_id", "cell_id", "karyotype", "origin"]
KARYOGRAM_COLUMNS = ["path", "label", "group_id", "cell_id", "karyotype"]
SPLIT_COLUMN = "split"  # appended to both manifests when there are test patients: "" (main) or "test"
TEST_PATIENT_KEYS = ("normal", "abnormalities", "per_abnormality", "cells_per_patient")
TEST_STREAM = 1  # seed-stream id of the test patients: SeedSequence([seed, TEST_STREAM, patient, cell, item])
_PER_CELL_RENDER_KEYS = ("canvas", "condensation", "cell_width")
PATIENT_KINDS = ("normal", "numerical", "structural")
_TILE = 96  # contact-sheet tile size (px)


def merge_cohort_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """DEFAULT_COHORT_PARAMS updated with ``params``; unknown keys raise ValueError naming them."""
    out = copy.deepcopy(DEFAULT_COHORT_PARAMS)
    for key, value in (params or {}).items():
        if key not in DEFAULT_COHORT_PARAMS:
            raise ValueError(f"unknown cohort param {key!r}; allowed: {sorted(DEFAULT_COHORT_PARAMS)}")
        out[key] = copy.deepcopy(value)
    render = out["render"] or {}
    if not isinstance(render, dict):
        raise ValueError("cohort param 'render' must be a mapping of renderer knobs")
    for key in _PER_CELL_RENDER_KEYS:
        if key in render:
            raise ValueError(f"render param {key!r} is set by the cohort; use the cohort key {key!r} instead")
    merge_render_params(render)  # validates the renderer keys now, not deep inside a worker
    out["render"] = render
    out["abnormalities"] = _abnormality_list("abnormalities", out["abnormalities"])
    out["patients_per_abnormality"] = _per_abnormal_kind(out["patients_per_abnormality"])
    for key in ("seed", "normal_patients", "karyograms_per_patient", "canvas", "workers"):
        if int(out[key]) != out[key] or int(out[key]) < 0:
            raise ValueError(f"cohort param {key!r} must be a non-negative integer, got {out[key]!r}")
        out[key] = int(out[key])
    out["cells_per_patient"] = _cells_per_kind(out["cells_per_patient"])
    if out["canvas"] < 16:
        raise ValueError("cohort params need canvas >= 16")
    for key in ("condensation", "cell_width", "karyogram_size"):
        v = out[key]
        if not (isinstance(v, (list, tuple)) and len(v) == 2):
            raise ValueError(f"cohort param {key!r} must be a pair, got {v!r}")
        out[key] = [float(v[0]), float(v[1])] if key != "karyogram_size" else [int(v[0]), int(v[1])]
    if not 0.0 <= float(out["female_fraction"]) <= 1.0:
        raise ValueError("cohort param 'female_fraction' must be in [0, 1]")
    out["test_patients"] = _test_patients(out["test_patients"], out["karyograms_per_patient"])
    return out


def _abnormality_list(param: str, value: Any) -> list[str]:
    abn = list(value or [])
    bad = [a for a in abn if a not in ABNORMALITIES]
    if bad:
        raise ValueError(f"unknown abnormality {bad} in '{param}'; allowed: {ABNORMALITIES}")
    if len(set(abn)) != len(abn):
        raise ValueError(f"duplicate entries in '{param}': {abn}")
    return abn


def _test_patients(value: Any, karyograms_per_patient: int) -> dict[str, Any] | None:
    """``test_patients`` validated: {normal, abnormalities, per_abnormality, cells_per_patient}, or None when
    absent or when it plans no patient at all (so the output is exactly that of the main cohort)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"cohort param 'test_patients' must be a mapping with keys {list(TEST_PATIENT_KEYS)}, "
                         f"got {value!r}")
    unknown = sorted(set(value) - set(TEST_PATIENT_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in cohort param 'test_patients'; "
                         f"allowed: {list(TEST_PATIENT_KEYS)}")
    normal = value.get("normal", 0)
    if isinstance(normal, bool) or not isinstance(normal, (int, float)) or int(normal) != normal or normal < 0:
        raise ValueError(f"cohort param 'test_patients.normal' must be a non-negative integer, got {normal!r}")
    out = {
        "normal": int(normal),
        "abnormalities": _abnormality_list("test_patients.abnormalities", value.get("abnormalities")),
        "per_abnormality": _per_kind("test_patients.per_abnormality", value.get("per_abnormality", 1),
                                     ("numerical", "structural"), 0),
        "cells_per_patient": _per_kind("test_patients.cells_per_patient",
                                       value.get("cells_per_patient", max(1, karyograms_per_patient)),
                                       PATIENT_KINDS, 1),
    }
    if not _plan(out["abnormalities"], out["per_abnormality"], out["normal"], "T"):
        return None
    for kind, n in out["cells_per_patient"].items():
        if n > karyograms_per_patient:
            raise ValueError(f"cohort param 'test_patients.cells_per_patient' ({kind}) is {n}, more than "
                             f"karyograms_per_patient = {karyograms_per_patient}: test patients keep only the cells "
                             "that get a karyogram")
    return out


def _per_kind(param: str, value: Any, kinds: tuple[str, ...], minimum: int) -> dict[str, int]:
    """A count param given as one number or as a mapping by patient kind → {kind: integer >= minimum}."""
    if isinstance(value, dict):
        if set(value) != set(kinds):
            raise ValueError(f"cohort param '{param}' as a mapping needs exactly the keys {list(kinds)}, "
                             f"got {sorted(value)}")
        counts = dict(value)
    else:
        counts = {kind: value for kind in kinds}
    for kind, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, float)) or int(n) != n or int(n) < minimum:
            need = "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
            raise ValueError(f"cohort param '{param}' ({kind}) must be {need}, got {n!r}")
    return {kind: int(counts[kind]) for kind in kinds}


def _cells_per_kind(value: Any) -> dict[str, int]:
    """``cells_per_patient`` as {normal, numerical, structural: count >= 1}."""
    return _per_kind("cells_per_patient", value, PATIENT_KINDS, 1)


def _per_abnormal_kind(value: Any) -> dict[str, int]:
    """``patients_per_abnormality`` as {numerical, structural: count >= 0}."""
    return _per_kind("patients_per_abnormality", value, ("numerical", "structural"), 0)


def patient_kind(abnormality: str | None) -> str:
    """'normal', 'numerical' (whole chromosomes gained/lost) or 'structural' (an abnormal chromosome)."""
    if abnormality is None:
        return "normal"
    kt = make_karyotype(abnormality, "XY")
    return "structural" if any(c.is_abnormal for c in kt.chromosomes) else "numerical"


def _plan(abnormalities: list[str], per: dict[str, int], normal: int, prefix: str) -> list[tuple[str, str | None]]:
    quota = {a: per[patient_kind(a)] for a in abnormalities}
    kinds: list[str | None] = []
    for r in range(max(quota.values(), default=0)):
        kinds.extend(a for a in abnormalities if quota[a] > r)
    kinds.extend([None] * normal)
    return [(f"{prefix}{i + 1:04d}", k) for i, k in enumerate(kinds)]


def patient_plan(params: dict[str, Any]) -> list[tuple[str, str | None]]:
    """[(patient_id, abnormality or None)]: abnormalities round-robin (each while it has patients left by its
    kind's ``patients_per_abnormality``), then the normal patients."""
    per = _per_abnormal_kind(params["patients_per_abnormality"])
    return _plan(params["abnormalities"], per, params["normal_patients"], "P")


def plan_test_patients(params: dict[str, Any]) -> list[tuple[str, str | None]]:
    """[(test_patient_id "T0001"…, abnormality or None)] of the (merged) params' ``test_patients``; [] if none."""
    tp = params.get("test_patients")
    if not tp:
        return []
    return _plan(tp["abnormalities"], tp["per_abnormality"], tp["normal"], "T")


def _rng(seed: int, patient: int, cell: int = 0, item: int = 0, stream: int = 0) -> np.random.Generator:
    """The draw stream of (patient, cell, item): the main cohort's (stream 0) or the test patients' (module doc)."""
    key = [int(seed), patient, cell, item] if stream == 0 else [int(seed), int(stream), patient, cell, item]
    return np.random.default_rng(np.random.SeedSequence(key))


def _uniform(rng: np.random.Generator, lohi) -> float:
    lo, hi = lohi
    return float(lo) if hi <= lo else float(rng.uniform(lo, hi))


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _generate_patient(job: tuple[int, str, str | None, dict[str, Any], str, int, bool, bool]) -> dict[str, Any]:
    """Render and write all cells of one patient; returns manifest rows and contact-sheet samples."""
    p_index, pid, kind, params, out_dir, n_samples, keep_karyograms, test = job
    out = Path(out_dir)
    seed = params["seed"]
    stream = TEST_STREAM if test else 0
    # with test patients every manifest row ends with the split column: "test" for them, "" for the main cohort
    split = (["test"] if test else [""]) if params["test_patients"] else []
    prng = _rng(seed, p_index, stream=stream)
    sex = "XX" if prng.uniform() < params["female_fraction"] else "XY"
    crop_rows, kg_rows = [], []
    samples: dict[str, list[np.ndarray]] = {}
    karyograms: dict[str, bytes] = {}
    pdir = out / "chromosomes" / pid
    pdir.mkdir(parents=True, exist_ok=True)
    kdir = out / "karyograms"
    cells_per_kind = params["test_patients"]["cells_per_patient"] if test else params["cells_per_patient"]
    n_cells = cells_per_kind[patient_kind(kind)]
    for c_index in range(1, n_cells + 1):
        cid = f"{pid}-C{c_index}"
        crng = _rng(seed, p_index, c_index, stream=stream)
        kt = make_karyotype(kind, sex)
        render = dict(params["render"])
        render["canvas"] = params["canvas"]
        render["condensation"] = _uniform(crng, params["condensation"])
        render["cell_width"] = _uniform(crng, params["cell_width"])
        rp = merge_render_params(render)
        uprights, labels = [], []
        sampled: set[str] = set()  # at most one contact-sheet sample per label and cell
        for k, chrom in enumerate(kt.chromosomes, start=1):
            r = render_chromosome(chrom.segments, _rng(seed, p_index, c_index, k, stream=stream), rp)
            name = f"{cid}_{k:02d}_{chrom.label}.png"
            ok, buf = cv2.imencode(".png", r.crop)
            if not ok:  # pragma: no cover
                raise RuntimeError(f"PNG encoding failed for {name}")
            (pdir / name).write_bytes(buf.tobytes())
            crop_rows.append([f"{pid}/{name}", chrom.label, pid, cid, kt.iscn, chrom.origin, *split])
            uprights.append(r.upright)
            labels.append(chrom.label)
            if n_samples and chrom.label not in sampled and len(samples.setdefault(chrom.label, [])) < n_samples:
                sampled.add(chrom.label)
                samples[chrom.label].append(cv2.resize(r.crop, (_TILE, _TILE), interpolation=cv2.INTER_AREA))
        if c_index > params["karyograms_per_patient"]:
            continue
        kg = compose_karyogram(uprights, labels, tuple(params["karyogram_size"]), title=kt.iscn)
        ok, buf = cv2.imencode(".png", kg)
        (kdir / f"{cid}.png").write_bytes(buf.tobytes())
        if keep_karyograms:  # a report is being made: keep the PNG for the report's example karyogram
            karyograms[cid] = buf.tobytes()
        kg_rows.append([f"{cid}.png", "abnormal" if kt.is_abnormal else "normal", pid, cid, kt.iscn, *split])
    return {
        "pid": pid,
        "kind": kind,
        "test": test,
        "cells": n_cells,
        "crop_rows": crop_rows,
        "kg_rows": kg_rows,
        "samples": samples,
        "karyograms": karyograms,
    }


def _write_csv(path: Path, columns: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)


def generate_cohort(out_dir, params: dict[str, Any] | None = None, report_dir=None) -> dict[str, Any]:
    """Write the synthetic cohort under ``out_dir`` (see module doc) and return a summary dict.

    ``report_dir``: if given, also writes ``synthetic_chromosomes.png`` (contact sheet, one row per
    class) and ``synthetic_karyogram.png`` (the first +21 cell, else the first abnormal cell).
    """
    prm = merge_cohort_params(params)
    out = Path(out_dir)
    t_start = time.perf_counter()
    for sub in ("chromosomes", "karyograms"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
        (out / sub).mkdir(parents=True, exist_ok=True)

    from genediag.data.marker import write_synthetic_marker

    write_synthetic_marker(out, "genediag.synthetic.cohort")
    plan = patient_plan(prm)
    test_plan = plan_test_patients(prm)
    n_samples = int(prm["contact_sheet_per_class"]) if report_dir is not None else 0
    report = report_dir is not None
    jobs = [(i + 1, pid, kind, prm, str(out), n_samples, report, False) for i, (pid, kind) in enumerate(plan)]
    jobs += [(i + 1, pid, kind, prm, str(out), 0, False, True) for i, (pid, kind) in enumerate(test_plan)]
    log.info(
        "generating %d patients (%d normal, %d abnormalities, patients per abnormality by kind %s), cells per "
        "patient %s (karyograms for the first %d) into %s",
        len(plan),
        prm["normal_patients"],
        len(prm["abnormalities"]),
        prm["patients_per_abnormality"],
        prm["cells_per_patient"],
        prm["karyograms_per_patient"],
        out,
    )
    if test_plan:
        tp = prm["test_patients"]
        log.info("plus %d test-only patients T0001… (%d normal, %d abnormalities × %s by kind), cells per "
                 "patient %s",
                 len(test_plan), tp["normal"], len(tp["abnormalities"]), tp["per_abnormality"],
                 tp["cells_per_patient"])
    results: list[dict[str, Any]] = []
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # tiny images: OpenCV's thread pool costs more than it saves
    bar = tqdm(total=len(jobs), desc="synthetic cohort", unit="patient", mininterval=1.0)
    try:
        if prm["workers"] > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=prm["workers"], initializer=_worker_init) as ex:
                for res in ex.map(_generate_patient, jobs, chunksize=1):
                    results.append(res)
                    bar.update(1)
        else:
            for job in jobs:
                results.append(_generate_patient(job))
                bar.update(1)
    finally:
        bar.close()
        cv2.setNumThreads(cv_threads)

    extra = [SPLIT_COLUMN] if test_plan else []
    _write_csv(out / "chromosomes" / "manifest.csv", CROP_COLUMNS + extra,
               [r for res in results for r in res["crop_rows"]])
    _write_csv(out / "karyograms" / "manifest.csv", KARYOGRAM_COLUMNS + extra,
               [r for res in results for r in res["kg_rows"]])
    test_results = [res for res in results if res["test"]]
    results = [res for res in results if not res["test"]]  # the summary's main numbers and the figures: main cohort
    crop_rows = [r for res in results for r in res["crop_rows"]]
    kg_rows = [r for res in results for r in res["kg_rows"]]

    per_label = Counter(r[1] for r in crop_rows)
    per_kind = Counter("normal" if res["kind"] is None else res["kind"] for res in results)
    kg_counts = Counter(r[1] for r in kg_rows)
    summary = {
        "patients": len(results),
        "cells": sum(res["cells"] for res in results),
        "crops": len(crop_rows),
        "crops_per_label": {lab: int(per_label.get(lab, 0)) for lab in ALL_LABELS},
        "karyograms": {"normal": int(kg_counts.get("normal", 0)), "abnormal": int(kg_counts.get("abnormal", 0))},
        "patients_per_kind": {k: int(v) for k, v in per_kind.items()},
    }
    if test_plan:
        summary["test_only"] = _test_summary(test_results)

    if report_dir is not None:
        rdir = Path(report_dir)
        rdir.mkdir(parents=True, exist_ok=True)
        samples: dict[str, list[np.ndarray]] = {}
        for res in results:
            for lab, ims in res["samples"].items():
                have = samples.setdefault(lab, [])
                have.extend(ims[: max(0, n_samples - len(have))])
        title = f"synthetic G-banded chromosomes (seed {prm['seed']})"
        sheet = contact_sheet(samples, per_class=n_samples, title=title)
        cv2.imwrite(str(rdir / "synthetic_chromosomes.png"), sheet)
        pick = _report_cell(results)
        if pick is not None:
            (rdir / "synthetic_karyogram.png").write_bytes(pick)

    seconds = time.perf_counter() - t_start
    log.info(
        "synthetic cohort: %d patients, %d cells, %d crops, karyograms %s in %.1f s",
        summary["patients"],
        summary["cells"],
        summary["crops"],
        summary["karyograms"],
        seconds,
    )
    if test_plan:
        t = summary["test_only"]
        log.info("plus test-only patients (split 'test'): %d patients, %d cells, %d crops, %d karyograms by "
                 "karyotype %s",
                 t["patients"], t["cells"], t["crops"], sum(t["karyograms"].values()), t["karyograms_per_karyotype"])
    return summary


def _test_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of the test-only patients: patients by abnormality, cells, crops, karyograms by kind and karyotype."""
    kg_rows = [r for res in results for r in res["kg_rows"]]
    kg = Counter(r[1] for r in kg_rows)
    return {
        "patients": len(results),
        "patients_per_abnormality": dict(Counter("normal" if res["kind"] is None else res["kind"] for res in results)),
        "cells": sum(res["cells"] for res in results),
        "crops": sum(len(res["crop_rows"]) for res in results),
        "karyograms": {"normal": int(kg.get("normal", 0)), "abnormal": int(kg.get("abnormal", 0))},
        "karyograms_per_karyotype": dict(sorted(Counter(r[4] for r in kg_rows).items())),
    }


def _report_cell(results: list[dict[str, Any]]) -> bytes | None:
    for want in ("+21", "abnormal", "any"):
        for res in results:
            if (want == "+21" and res["kind"] == "+21") or (want == "abnormal" and res["kind"]) or want == "any":
                for cid in sorted(res["karyograms"]):
                    return res["karyograms"][cid]
    return None


def contact_sheet(
    samples: dict[str, list[np.ndarray]], per_class: int = 6, tile: int = _TILE, title: str | None = None
) -> np.ndarray:
    """Grid of crops, one labelled row per class (ALL_LABELS order), split into two column blocks."""
    classes = [lab for lab in ALL_LABELS if samples.get(lab)] + sorted(set(samples) - set(ALL_LABELS))
    per_class = max(1, per_class)
    label_w = 64
    n_blocks = 2 if len(classes) > 12 else 1
    rows_per_block = int(np.ceil(len(classes) / n_blocks)) if classes else 1
    block_w = label_w + per_class * tile
    sep = 16
    title_h = 30 if title else 4
    W = n_blocks * block_w + (n_blocks - 1) * sep + 8
    H = title_h + rows_per_block * tile + 4
    out = np.full((H, W), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    if title:
        cv2.putText(out, title, (6, 21), font, 0.6, 0, 1, cv2.LINE_AA)
    for i, lab in enumerate(classes):
        b, r = divmod(i, rows_per_block)
        x0 = 4 + b * (block_w + sep)
        y0 = title_h + r * tile
        (tw, th), _ = cv2.getTextSize(lab, font, 0.5, 1)
        cv2.putText(out, lab, (x0 + label_w - tw - 8, y0 + tile // 2 + th // 2), font, 0.5, 0, 1, cv2.LINE_AA)
        for j, im in enumerate(samples[lab][:per_class]):
            im = cv2.resize(im, (tile, tile), interpolation=cv2.INTER_AREA) if im.shape != (tile, tile) else im
            x = x0 + label_w + j * tile
            out[y0 : y0 + tile, x : x + tile] = np.minimum(out[y0 : y0 + tile, x : x + tile], im)
        cv2.line(out, (x0, y0 + tile - 1), (x0 + block_w - 1, y0 + tile - 1), 225, 1)
    return out
