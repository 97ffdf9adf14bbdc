"""Synthetic G-banded cohort: cytobands, band-sequence edits, ISCN, renderer geometry, karyogram, cohort."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genediag.data.cytobands import (
    CHROMOSOMES,
    centromere_index,
    centromere_position,
    chromosome_length,
    load_cytobands,
)
from genediag.synthetic.cohort import (
    CROP_COLUMNS,
    KARYOGRAM_COLUMNS,
    generate_cohort,
    merge_cohort_params,
    patient_kind,
    patient_plan,
)
from genediag.data.karyogram_layout import compose_karyogram
from genediag.synthetic.karyotype import (
    ABNORMAL_TYPES,
    ABNORMALITIES,
    ABNORMALITY_IDS,
    DEFAULT_ABNORMALITIES,
    band_sequence,
    band_span,
    chromosome_segments,
    make_karyotype,
    segments_centromere,
    segments_length,
    sex_for,
)
from genediag.synthetic.render import DEFAULT_RENDER_PARAMS, merge_render_params, render_chromosome

TINY = {
    "seed": 7,
    "normal_patients": 1,
    "abnormalities": ["+21", "-X", "XXY", "t(9;22)(q34;q11.2)", "inv(9)(p12q13)", "i(X)(q10)"],
    "patients_per_abnormality": 1,
    "cells_per_patient": 1,
    "canvas": 64,
    "karyogram_size": [320, 240],
    "contact_sheet_per_class": 2,
}

# geometry-only rendering: no random shape/photometric variation, so pixels can be measured
CLEAN = {
    "rotation_deg": 0.0,
    "bend": 0.0,
    "noise_sigma": [0.0, 0.0],
    "blur_sigma": [0.0, 0.0],
    "texture": 0.0,
    "outline_jitter": 0.0,
    "length_jitter": 0.0,
    "width_jitter": 0.0,
    "band_jitter": 0.0,
    "gvar_scale": [1.0, 1.0],
    "satellite_prob": 0.0,
    "brightness": [0.0, 0.0],
    "contrast": [1.0, 1.0],
}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    base = tmp_path_factory.mktemp("cohort")
    a, b, c = base / "a", base / "b", base / "c"
    summary = generate_cohort(a, TINY, report_dir=base / "report")
    generate_cohort(b, TINY)
    generate_cohort(c, {**TINY, "seed": 8})
    return {"a": a, "b": b, "c": c, "summary": summary, "report": base / "report"}


# ------------------------------------------------------------------------------------------------
# cytobands
# ------------------------------------------------------------------------------------------------


def test_cytoband_table():
    df = load_cytobands()
    assert list(df.columns) == ["chrom", "start", "end", "name", "stain"]
    assert list(dict.fromkeys(df["chrom"])) == CHROMOSOMES
    assert set(df["stain"]) <= {"gneg", "gpos25", "gpos50", "gpos75", "gpos100", "acen", "gvar", "stalk"}
    for chrom, sub in df.groupby("chrom", sort=False):
        assert sub["start"].iloc[0] == 0
        assert (sub["start"].to_numpy()[1:] == sub["end"].to_numpy()[:-1]).all(), chrom  # contiguous
    assert chromosome_length("1") == 248_956_422
    assert chromosome_length("X") == 156_040_895
    assert chromosome_length("Y") == 57_227_415
    assert centromere_position("1") == pytest.approx((121_700_000 + 125_100_000) / 2)


def test_centromere_index_from_table():
    assert 0.45 < centromere_index("1") < 0.55  # metacentric
    assert centromere_index("13") < 0.2  # acrocentric
    assert 0.35 < centromere_index("X") < 0.45  # submetacentric


# ------------------------------------------------------------------------------------------------
# karyotypes and edits
# ------------------------------------------------------------------------------------------------


def _arm(segs, arm):
    return [(s.chrom, s.start, s.end, s.stain) for s in segs if s.name.startswith(arm)]


def test_band_union_and_deletions():
    assert band_span("5", "p14") == (18_400_000, 28_900_000)  # p14.3..p14.1
    assert band_span("22", "q11.2") == (17_400_000, 25_500_000)  # q11.21..q11.23
    normal5, del5 = band_sequence("5"), chromosome_segments("del5p")
    assert segments_length(del5) < segments_length(normal5)
    assert _arm(del5, "q") == _arm(normal5, "q")  # same q arm
    assert del5[0].start == (18_400_000 + 28_900_000) // 2  # broken at the middle of 5p14
    for label in ("del4p", "del18p", "del1p"):
        origin = ABNORMAL_TYPES[label]["origin"]
        segs, normal = chromosome_segments(label), band_sequence(origin)
        assert segments_length(segs) < segments_length(normal)
        assert _arm(segs, "q") == _arm(normal, "q")
        assert any(s.stain == "acen" for s in segs)  # terminal deletion keeps the centromere
    assert chromosome_segments("del18p")[0].name == "p11.21"  # break placed inside 18p11.2


def test_inversion_translocation_isochromosome():
    n9, inv9 = band_sequence("9"), chromosome_segments("inv9")
    assert segments_length(inv9) == segments_length(n9)
    assert sorted((s.start, s.end) for s in inv9) != [(s.start, s.end) for s in inv9]  # reordered
    ci_inv = segments_centromere(inv9) / segments_length(inv9)
    assert ci_inv > segments_centromere(n9) / segments_length(n9) + 0.05  # pericentric: cen moves

    n22, der22, der9 = band_sequence("22"), chromosome_segments("der22"), chromosome_segments("der9")
    assert segments_length(der22) < segments_length(n22)
    assert segments_length(der9) > segments_length(n9)
    assert {s.chrom for s in der22} == {"9", "22"} and der22[-1].chrom == "9"
    assert der9[0].chrom == "9" and der9[-1].chrom == "22"
    assert segments_length(der9) + segments_length(der22) == segments_length(n9) + segments_length(n22)

    ixq = chromosome_segments("iXq")
    assert all(s.name.startswith("q") and s.chrom == "X" for s in ixq)  # no p arm
    half = len(ixq) // 2
    assert ixq[:half] == ixq[half:][::-1]  # two q arms, mirror images
    assert segments_length(ixq) == 2 * segments_length(_q_arm("X"))
    assert segments_centromere(ixq) / segments_length(ixq) == pytest.approx(0.5)


def _q_arm(chrom):
    return [s for s in band_sequence(chrom) if s.name.startswith("q")]


ISCN_EXPECTED = {
    (None, "XX"): "46,XX",
    (None, "XY"): "46,XY",
    ("+21", "XY"): "47,XY,+21",
    ("+18", "XX"): "47,XX,+18",
    ("+13", "XY"): "47,XY,+13",
    ("-X", "XY"): "45,X",
    ("-X", "XX"): "45,X",
    ("XXY", "XX"): "47,XXY",
    ("del(5)(p14)", "XY"): "46,XY,del(5)(p14)",
    ("del(4)(p15.2)", "XX"): "46,XX,del(4)(p15.2)",
    ("del(18)(p11)", "XY"): "46,XY,del(18)(p11)",
    ("del(1)(p36.1)", "XX"): "46,XX,del(1)(p36.1)",
    ("t(9;22)(q34;q11.2)", "XX"): "46,XX,t(9;22)(q34;q11.2)",
    ("inv(9)(p12q13)", "XY"): "46,XY,inv(9)(p12q13)",
    ("i(X)(q10)", "XY"): "46,X,i(X)(q10)",
    ("XXX", "XY"): "47,XXX",
    ("XXX", "XX"): "47,XXX",
    ("XYY", "XX"): "47,XYY",
    ("XYY", "XY"): "47,XYY",
    ("-21", "XX"): "45,XX,-21",
    ("-21", "XY"): "45,XY,-21",
    ("-22", "XY"): "45,XY,-22",
}


@pytest.mark.parametrize(("abn", "sex"), list(ISCN_EXPECTED))
def test_iscn_strings(abn, sex):
    k = make_karyotype(abn, sex)
    assert k.iscn == ISCN_EXPECTED[(abn, sex)]
    assert len(k.chromosomes) == int(k.iscn.split(",")[0])


def test_karyotype_contents():
    assert set(ABNORMALITIES) == {a for a, _ in ISCN_EXPECTED if a}
    labels = make_karyotype("t(9;22)(q34;q11.2)", "XY").labels
    assert labels.count("9") == 1 and labels.count("22") == 1 and "der9" in labels and "der22" in labels
    assert make_karyotype("+21", "XX").labels.count("21") == 3
    assert make_karyotype("-X", "XY").labels[-1:] == ["X"] and "Y" not in make_karyotype("-X", "XY").labels
    assert make_karyotype("XXY", "XY").labels[-3:] == ["X", "X", "Y"]
    ixq = make_karyotype("i(X)(q10)", "XY").labels
    assert ixq.count("X") == 1 and ixq.count("iXq") == 1 and "Y" not in ixq
    with pytest.raises(ValueError, match="abnormality"):
        make_karyotype("+7", "XX")


def test_new_numerical_karyotypes():
    """47,XXX, 47,XYY and the autosomal monosomies: added after the 12 cohort abnormalities, all numerical."""
    assert ABNORMALITIES[:12] == DEFAULT_ABNORMALITIES and ABNORMALITIES[12:] == ["XXX", "XYY", "-21", "-22"]
    assert set(ABNORMALITY_IDS) == set(ABNORMALITIES)
    assert merge_cohort_params({})["abnormalities"] == DEFAULT_ABNORMALITIES  # the default cohort is unchanged
    for abn, sex, counts in (("XXX", "XY", {"X": 3, "Y": 0}), ("XYY", "XX", {"X": 1, "Y": 2}),
                             ("-21", "XX", {"21": 1, "X": 2, "22": 2}), ("-22", "XY", {"22": 1, "21": 2, "Y": 1})):
        k = make_karyotype(abn, sex)
        assert {lab: k.labels.count(lab) for lab in counts} == counts, abn
        assert all(k.labels.count(c) == 2 for c in CHROMOSOMES[:22] if c not in counts), abn
        assert not any(c.is_abnormal for c in k.chromosomes) and k.is_abnormal
        assert patient_kind(abn) == "numerical"
        assert k.sex == sex_for(abn, sex) and k.sex in k.iscn
    assert sex_for("XXX", "XY") == "XXX" and sex_for("XYY", "XX") == "XYY" and sex_for("-21", "XY") == "XY"


# ------------------------------------------------------------------------------------------------
# renderer
# ------------------------------------------------------------------------------------------------


def _cell(seed: int, condensation: float, extra=None):
    params = {"condensation": condensation, **(extra or {})}
    kt = make_karyotype(None, "XY")
    out = []
    for k, c in enumerate(kt.chromosomes):
        r = render_chromosome(c.segments, np.random.default_rng([seed, k]), params)
        out.append((c.label, c.length_bp, r))
    return out


@pytest.mark.parametrize(("seed", "condensation"), [(1, 0.7), (2, 0.85), (3, 1.0)])
def test_lengths_follow_bp_within_a_cell(seed, condensation):
    cell = _cell(seed, condensation)
    bp = np.array([b for _, b, _ in cell], float)
    px = np.array([r.length_px for _, _, r in cell])
    assert np.corrcoef(bp, px)[0, 1] > 0.95
    by = {}
    for lab, _, r in cell:
        by.setdefault(lab, []).append(r.length_px)
    assert min(by["1"]) > max(by["21"])
    assert min(by["1"]) > max(by["19"])
    for _, _, r in cell:
        assert r.crop.shape == (128, 128) and r.crop.dtype == np.uint8
        # the drawn chromosome stays inside the canvas with a margin (white border)
        assert r.crop[:2].min() > 200 and r.crop[-2:].min() > 200
        assert r.crop[:, :2].min() > 200 and r.crop[:, -2:].min() > 200
        assert r.crop.min() < 150  # and has dark bands


def _row_widths(img: np.ndarray, thr: int = 245) -> np.ndarray:
    return (img < thr).sum(axis=1).astype(float)


def test_centromere_index_rendered():
    res = {}
    for lab in ("1", "13", "X"):
        r = render_chromosome(chromosome_segments(lab), np.random.default_rng(0), {**CLEAN, "canvas": 256})
        res[lab] = r
        if lab != "13":  # 13 drawn without satellites/stalk here: its visible p arm is shorter
            assert r.centromere_px / r.length_px == pytest.approx(centromere_index(lab), abs=0.02)
        # the upright image is straight and vertical: content height == length_px
        rows = np.nonzero(_row_widths(r.upright) > 0)[0]
        assert rows.max() - rows.min() + 1 == pytest.approx(r.length_px, abs=3)
    ci = {lab: res[lab].centromere_px / res[lab].length_px for lab in res}
    assert 0.45 < ci["1"] < 0.55 and ci["13"] < 0.2 and 0.35 < ci["X"] < 0.45
    # measured on the pixels: the waist (primary constriction) sits at the centromere
    for lab in ("1", "X"):
        r = res[lab]
        w = _row_widths(r.upright)
        top, n = int(round(r.top_px)), int(round(r.length_px))
        cap = int(np.ceil(0.1 * n))
        rows = np.arange(top + cap, top + n - cap)
        waist_row = rows[w[rows] <= w[rows].min() + 0.5].mean()  # centre of the narrowest plateau
        measured = (waist_row + 0.5 - r.top_px) / r.length_px
        assert measured == pytest.approx(centromere_index(lab), abs=0.03), lab
        assert w[rows].min() < 0.8 * np.median(w[rows])  # a visible constriction
    r13 = res["13"]
    w = _row_widths(r13.upright)
    top, n = int(round(r13.top_px)), int(round(r13.length_px))
    rows = np.arange(top + 1, top + n - int(0.1 * n))
    assert (rows[np.argmin(w[rows])] + 0.5 - r13.top_px) / r13.length_px < 0.2


def test_sister_chromatids_visible():
    r = render_chromosome(chromosome_segments("2"), np.random.default_rng(0), {**CLEAN, "canvas": 256})
    top, n = int(round(r.top_px)), int(round(r.length_px))
    # a row in a p-arm band: two dark lobes with a lighter groove between them
    prof = r.upright[top + int(0.25 * n)].astype(float)
    dark = np.nonzero(prof < 245)[0]
    seg = prof[dark.min() : dark.max() + 1]
    mid = len(seg) // 2
    assert seg[mid - 1 : mid + 2].mean() > seg[: mid - 1].min() + 8
    assert seg[mid - 1 : mid + 2].mean() > seg[mid + 2 :].min() + 8


def test_edits_rendered():
    clean = {**CLEAN, "canvas": 256}
    L = {
        lab: render_chromosome(chromosome_segments(lab), np.random.default_rng(5), clean).length_px
        for lab in ("5", "del5p", "9", "inv9", "22", "der22", "X", "iXq")
    }
    assert L["del5p"] < L["5"]
    assert L["inv9"] == pytest.approx(L["9"], rel=1e-6)
    assert L["der22"] < L["22"]
    assert L["iXq"] > L["X"]


def test_satellites_and_gvar_variation():
    segs = chromosome_segments("15")
    on = render_chromosome(segs, np.random.default_rng(1), {**CLEAN, "satellite_prob": 1.0})
    off = render_chromosome(segs, np.random.default_rng(1), {**CLEAN, "satellite_prob": 0.0})
    assert on.satellites and not off.satellites and on.length_px > off.length_px
    lens = [
        render_chromosome(chromosome_segments("Y"), np.random.default_rng(i), {**CLEAN, "gvar_scale": [0.6, 1.6]})
        for i in range(6)
    ]
    lens = [r.length_px for r in lens]
    assert max(lens) > 1.3 * min(lens)  # Yq12 heterochromatin polymorphism


def test_render_params():
    assert merge_render_params({"canvas": 300})["canvas"] == 300
    assert (
        merge_render_params({"band_levels": {"gneg": 0.1}})["band_levels"]["gpos100"]
        == (DEFAULT_RENDER_PARAMS["band_levels"]["gpos100"])
    )
    with pytest.raises(ValueError, match="bogus"):
        render_chromosome(chromosome_segments("1"), np.random.default_rng(0), {"bogus": 1})
    with pytest.raises(ValueError, match="gpos999"):
        merge_render_params({"band_levels": {"gpos999": 1.0}})
    r = render_chromosome(chromosome_segments("1"), np.random.default_rng(0), {"canvas": 300, "condensation": 1.0})
    assert r.crop.shape == (300, 300)


def test_render_deterministic():
    a = render_chromosome(chromosome_segments("7"), np.random.default_rng(3), {})
    b = render_chromosome(chromosome_segments("7"), np.random.default_rng(3), {})
    c = render_chromosome(chromosome_segments("7"), np.random.default_rng(4), {})
    assert np.array_equal(a.crop, b.crop) and np.array_equal(a.upright, b.upright)
    assert not np.array_equal(a.crop, c.crop)


# ------------------------------------------------------------------------------------------------
# karyogram
# ------------------------------------------------------------------------------------------------


def test_karyogram_compose():
    kt = make_karyotype("t(9;22)(q34;q11.2)", "XX")
    ups = [render_chromosome(c.segments, np.random.default_rng(i), {}).upright for i, c in enumerate(kt.chromosomes)]
    img = compose_karyogram(ups, kt.labels, size=(640, 480), title=kt.iscn)
    assert img.shape == (480, 640) and img.dtype == np.uint8
    assert (img < 128).mean() > 0.01  # chromosomes and text were drawn
    # posed crops with predicted labels also work (orient=True straightens them)
    crops = [render_chromosome(c.segments, np.random.default_rng(i), {}).crop for i, c in enumerate(kt.chromosomes)]
    img2 = compose_karyogram(crops, kt.labels, size=(400, 300), title=None, orient=True)
    assert img2.shape == (300, 400)
    with pytest.raises(ValueError, match="label"):
        compose_karyogram(ups[:1], ["chr99"], size=(640, 480))
    with pytest.raises(ValueError):
        compose_karyogram(ups[:2], ["1"], size=(640, 480))


# ------------------------------------------------------------------------------------------------
# cohort
# ------------------------------------------------------------------------------------------------


def test_cohort_manifests_and_counts(cohorts):
    a = cohorts["a"]
    crops = _read_csv(a / "chromosomes" / "manifest.csv")
    kgs = _read_csv(a / "karyograms" / "manifest.csv")
    assert list(crops[0]) == CROP_COLUMNS
    assert list(kgs[0]) == KARYOGRAM_COLUMNS
    n_patients = TINY["normal_patients"] + len(TINY["abnormalities"]) * TINY["patients_per_abnormality"]
    assert len(kgs) == n_patients * TINY["cells_per_patient"]
    per_cell: dict[str, list[dict[str, str]]] = {}
    for row in crops:
        per_cell.setdefault(row["cell_id"], []).append(row)
        assert row["cell_id"].startswith(row["group_id"] + "-C")
        assert row["group_id"].startswith("P") and len(row["group_id"]) == 5
        lab = row["label"]
        assert row["origin"] == (ABNORMAL_TYPES[lab]["origin"] if lab in ABNORMAL_TYPES else lab)
        path = a / "chromosomes" / row["path"]
        assert path.is_file()
    expected_n = {"46": 46, "47": 47, "45": 45}
    for cid, rows in per_cell.items():
        iscn = rows[0]["karyotype"]
        assert all(r["karyotype"] == iscn for r in rows)
        assert len(rows) == expected_n[iscn.split(",")[0]], (cid, iscn)
    kinds = {r["karyotype"]: r["label"] for r in kgs}
    assert "45,X" in kinds and kinds["45,X"] == "abnormal"
    assert any(k.startswith("47,") and k.endswith(",+21") for k in kinds)
    assert [v for k, v in kinds.items() if "inv(9)" in k] == ["abnormal"]
    assert [v for k, v in kinds.items() if k in ("46,XX", "46,XY")] == ["normal"]
    assert "46,X,i(X)(q10)" in kinds and "47,XXY" in kinds
    for row in kgs:
        im = Image.open(a / "karyograms" / row["path"])
        assert im.mode == "L" and im.size == tuple(TINY["karyogram_size"])
    im = Image.open(a / "chromosomes" / crops[0]["path"])
    assert im.mode == "L" and im.size == (TINY["canvas"], TINY["canvas"])

    s = cohorts["summary"]
    assert s["patients"] == n_patients and s["cells"] == len(kgs) and s["crops"] == len(crops)
    assert sum(s["crops_per_label"].values()) == len(crops)
    assert s["karyograms"] == {"normal": 1, "abnormal": len(TINY["abnormalities"])}
    assert s["crops_per_label"]["der22"] == 1 and s["crops_per_label"]["iXq"] == 1


def test_generated_cohort_is_marked_synthetic_and_a_copy_is_not(cohorts, tmp_path):
    """The generator writes GENEDIAG_SYNTHETIC_COHORT at the cohort root; ingest (synthetic: auto) then says
    "synthetic" for its datasets. The same manifest and images copied elsewhere without the marker (a user's
    export of the cohort) count as real data; an explicit synthetic: true/false overrides either way."""
    import shutil

    from genediag.data.ingest import SYNTHETIC_MARKER, is_synthetic, load_ingested
    from genediag.pipeline import ingest_dataset

    a = cohorts["a"]
    marker = a / SYNTHETIC_MARKER
    assert marker.is_file() and "synthetic" in marker.read_text() and "genediag.synthetic.cohort" in marker.read_text()
    crops = {"kind": "chromosome_crops", "source": str(a / "chromosomes" / "manifest.csv"), "labels": "chromosomes32",
             "ingest": {"size": 32}}
    karyograms = {"kind": "karyograms", "source": str(a / "karyograms" / "manifest.csv"), "labels": ["normal", "abnormal"],
                  "ingest": {"size": 64}}
    review = tmp_path / "review"
    s_crops = ingest_dataset("crops", crops, tmp_path / "ing" / "crops", review, progress=False)
    s_kg = ingest_dataset("kg", karyograms, tmp_path / "ing" / "kg", review, progress=False)
    assert s_crops["synthetic"] is True and s_kg["synthetic"] is True
    assert s_crops["accepted"] == sum(cohorts["summary"]["crops_per_label"].values()) and s_crops["quarantined"] == 0

    export = tmp_path / "export"
    for sub in ("chromosomes", "karyograms"):   # manifest + images, not the marker
        shutil.copytree(a / sub, export / sub)
    assert not any(p.name == SYNTHETIC_MARKER for p in export.rglob("*"))
    c_crops = ingest_dataset("crops", {**crops, "source": str(export / "chromosomes" / "manifest.csv")},
                             tmp_path / "copy" / "crops", review, progress=False)
    c_kg = ingest_dataset("kg", {**karyograms, "source": str(export / "karyograms" / "manifest.csv")},
                          tmp_path / "copy" / "kg", review, progress=False)
    assert c_crops["synthetic"] is False and c_kg["synthetic"] is False
    assert (c_crops["accepted"], c_kg["accepted"]) == (s_crops["accepted"], s_kg["accepted"])
    # the same data all the same: only the label "synthetic" differs
    m1, i1 = load_ingested(tmp_path / "ing" / "crops")
    m2, i2 = load_ingested(tmp_path / "copy" / "crops")
    assert np.array_equal(i1, i2) and m1["pixel_sha256"].tolist() == m2["pixel_sha256"].tolist()
    forced = ingest_dataset("crops", {**crops, "source": str(export / "chromosomes" / "manifest.csv"),
                                      "synthetic": True}, tmp_path / "forced", review, progress=False)
    assert forced["synthetic"] is True
    assert is_synthetic(a / "chromosomes" / "manifest.csv", False) is False
    # the marker counts for sources at most two folders below it, not for anything deeper
    deep = export / "x" / "y" / "z"
    deep.mkdir(parents=True)
    shutil.copy(marker, export / SYNTHETIC_MARKER)
    assert is_synthetic(export / "chromosomes" / "manifest.csv") and is_synthetic(export / "x" / "y")
    assert not is_synthetic(deep / "manifest.csv")


def test_cohort_deterministic(cohorts):
    a, b, c = cohorts["a"], cohorts["b"], cohorts["c"]
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    crops_a = (a / "chromosomes" / "manifest.csv").read_text()
    crops_c = (c / "chromosomes" / "manifest.csv").read_text()
    first = next(p for p in files_a if p.suffix == ".png" and p.parts[0] == "chromosomes")
    if crops_a == crops_c:  # same sexes drawn: the images must still differ
        assert (a / first).read_bytes() != (c / first).read_bytes()
    assert any(
        (a / rel).read_bytes() != (c / rel).read_bytes()
        for rel in files_a
        if rel.suffix == ".png" and (c / rel).exists()
    )


def test_cohort_order_independent(tmp_path):
    """A patient's images depend only on (seed, patient, cell, chromosome), not on the other patients."""
    small = {**TINY, "normal_patients": 1, "abnormalities": ["+21"]}
    big = {**TINY, "normal_patients": 2, "abnormalities": ["+21"]}
    generate_cohort(tmp_path / "s", small)
    generate_cohort(tmp_path / "b", big)
    for p in (tmp_path / "s" / "chromosomes").rglob("*.png"):
        rel = p.relative_to(tmp_path / "s")
        assert p.read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_cohort_report(cohorts):
    rep = cohorts["report"]
    sheet = Image.open(rep / "synthetic_chromosomes.png")
    kg = Image.open(rep / "synthetic_karyogram.png")
    assert sheet.mode == "L" and sheet.size[0] > 400 and sheet.size[1] > 400
    assert kg.size == tuple(TINY["karyogram_size"])


def test_cohort_params_validation(tmp_path):
    with pytest.raises(ValueError, match="bogus"):
        generate_cohort(tmp_path, {"bogus": 1})
    with pytest.raises(ValueError, match="nope"):
        generate_cohort(tmp_path, {"render": {"nope": 1}})
    with pytest.raises(ValueError, match="abnormality"):
        merge_cohort_params({"abnormalities": ["+7"]})
    with pytest.raises(ValueError, match="canvas"):
        merge_cohort_params({"render": {"canvas": 64}})
    p = merge_cohort_params({})
    assert p["normal_patients"] == 48 and p["patients_per_abnormality"] == {"numerical": 3, "structural": 3}
    with pytest.raises(ValueError, match="patients_per_abnormality.*exactly the keys"):
        merge_cohort_params({"patients_per_abnormality": {"numerical": 2}})
    with pytest.raises(ValueError, match=r"patients_per_abnormality' \(structural\) must be a non-negative integer"):
        merge_cohort_params({"patients_per_abnormality": {"numerical": 2, "structural": -1}})
    assert p["cells_per_patient"] == {"normal": 2, "numerical": 2, "structural": 2}
    assert p["karyograms_per_patient"] == 2
    with pytest.raises(ValueError, match="cells_per_patient.*exactly the keys"):
        merge_cohort_params({"cells_per_patient": {"normal": 2, "structural": 8}})
    with pytest.raises(ValueError, match=r"cells_per_patient' \(structural\) must be an integer >= 1"):
        merge_cohort_params({"cells_per_patient": {"normal": 2, "numerical": 2, "structural": 0}})
    with pytest.raises(ValueError, match="karyograms_per_patient"):
        merge_cohort_params({"karyograms_per_patient": -1})
    assert p["canvas"] == 128 and p["karyogram_size"] == [640, 480] and len(p["abnormalities"]) == 12


def test_cells_per_kind_and_karyograms_per_patient(tmp_path):
    """More cells for structural patients: the first cells render identically and the karyograms do not change."""
    base = {**TINY, "abnormalities": ["+21", "inv(9)(p12q13)"], "cells_per_patient": 1}
    more = {**base, "cells_per_patient": {"normal": 1, "numerical": 2, "structural": 3}, "karyograms_per_patient": 1}
    s_base = generate_cohort(tmp_path / "base", base)
    s_more = generate_cohort(tmp_path / "more", more)
    kinds = {"P0001": "numerical", "P0002": "structural", "P0003": "normal"}
    crops = _read_csv(tmp_path / "more" / "chromosomes" / "manifest.csv")
    cells = {pid: {r["cell_id"] for r in crops if r["group_id"] == pid} for pid in kinds}
    assert {pid: len(c) for pid, c in cells.items()} == {"P0001": 2, "P0002": 3, "P0003": 1}
    assert s_more["cells"] == 6 and s_base["cells"] == 3
    assert s_more["crops_per_label"]["inv9"] == 3 and s_base["crops_per_label"]["inv9"] == 1
    # every file of the base cohort (cell 1 of each patient, karyograms, manifests of karyograms) is byte-identical
    for p in (tmp_path / "base").rglob("*.png"):
        assert p.read_bytes() == (tmp_path / "more" / p.relative_to(tmp_path / "base")).read_bytes(), p
    kg = "karyograms/manifest.csv"
    assert (tmp_path / "base" / kg).read_bytes() == (tmp_path / "more" / kg).read_bytes()
    assert len(list((tmp_path / "more" / "karyograms").glob("*.png"))) == 3  # one per patient
    assert s_more["karyograms"] == s_base["karyograms"] == {"normal": 1, "abnormal": 2}


def test_patients_per_abnormality_by_kind():
    """Numerical and structural abnormalities can have different patient counts; the plan stays round-robin and
    its first rounds (and so the first patients) are those of the uniform plan."""
    abn = ["+21", "del(5)(p14)", "-X"]
    uniform = patient_plan(merge_cohort_params({"abnormalities": abn, "patients_per_abnormality": 1,
                                                "normal_patients": 1}))
    by_kind = patient_plan(merge_cohort_params({"abnormalities": abn, "normal_patients": 1,
                                                "patients_per_abnormality": {"numerical": 3, "structural": 1}}))
    assert [k for _, k in uniform] == ["+21", "del(5)(p14)", "-X", None]
    assert [k for _, k in by_kind] == ["+21", "del(5)(p14)", "-X", "+21", "-X", "+21", "-X", None]
    assert by_kind[:3] == uniform[:3]
    none = patient_plan(merge_cohort_params({"abnormalities": abn, "normal_patients": 2,
                                             "patients_per_abnormality": {"numerical": 0, "structural": 2}}))
    assert [k for _, k in none] == ["del(5)(p14)", "del(5)(p14)", None, None]


# ------------------------------------------------------------------------------------------------
# test-only patients
# ------------------------------------------------------------------------------------------------

SMALL = {**TINY, "abnormalities": ["+21"], "normal_patients": 1}  # P0001 (+21), P0002 (normal), one cell each
TEST_PATIENTS = {"normal": 1, "abnormalities": ["XXX", "XYY", "-21"], "per_abnormality": 1, "cells_per_patient": 1}


@pytest.fixture(scope="module")
def with_test_patients(tmp_path_factory):
    base = tmp_path_factory.mktemp("test_patients")
    out = {"main": base / "main", "test": base / "test", "zero": base / "zero"}
    generate_cohort(out["main"], SMALL)
    out["summary"] = generate_cohort(out["test"], {**SMALL, "test_patients": TEST_PATIENTS})
    generate_cohort(out["zero"], {**SMALL, "test_patients": {"normal": 0, "abnormalities": ["XXX"],
                                                             "per_abnormality": 0}})
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_test_patients_leave_the_main_cohort_unchanged(with_test_patients):
    main, test = _files(with_test_patients["main"]), _files(with_test_patients["test"])
    assert _files(with_test_patients["zero"]) == main  # a plan of zero test patients: no change at all
    manifests = {"chromosomes/manifest.csv", "karyograms/manifest.csv"}
    for rel, data in main.items():  # every P… crop and karyogram byte for byte
        if rel not in manifests:
            assert test[rel] == data, rel
    added = set(test) - set(main)
    assert added and all(rel.startswith(("chromosomes/T", "karyograms/T")) for rel in added)
    for rel in manifests:  # the same rows, in the same order, then the test patients' rows; split "" for the main
        old = _read_csv(with_test_patients["main"] / rel)
        new = _read_csv(with_test_patients["test"] / rel)
        assert list(new[0]) == list(old[0]) + ["split"]
        assert [{k: v for k, v in r.items() if k != "split"} for r in new[: len(old)]] == old
        assert {r["split"] for r in new[: len(old)]} == {""}
        assert {r["split"] for r in new[len(old):]} == {"test"} and new[len(old)]["group_id"] == "T0001"


def test_test_patients_karyotypes_and_split(with_test_patients):
    root = with_test_patients["test"]
    crops = [r for r in _read_csv(root / "chromosomes" / "manifest.csv") if r["split"] == "test"]
    kgs = [r for r in _read_csv(root / "karyograms" / "manifest.csv") if r["split"] == "test"]
    assert [r["group_id"] for r in kgs] == ["T0001", "T0002", "T0003", "T0004"]  # round-robin, normal last
    iscn = {r["group_id"]: r["karyotype"] for r in kgs}
    assert iscn["T0001"] == "47,XXX" and iscn["T0002"] == "47,XYY"
    assert iscn["T0003"] in ("45,XX,-21", "45,XY,-21") and iscn["T0004"] in ("46,XX", "46,XY")
    assert [r["label"] for r in kgs] == ["abnormal", "abnormal", "abnormal", "normal"]
    assert all((root / "karyograms" / r["path"]).is_file() for r in kgs)
    # rendered crops: whole cells, only the cells with a karyogram, the right chromosome counts
    assert {r["cell_id"] for r in crops} == {r["cell_id"] for r in kgs}
    labels = {pid: [r["label"] for r in crops if r["group_id"] == pid] for pid in iscn}
    assert len(labels["T0001"]) == 47 and labels["T0001"].count("X") == 3 and "Y" not in labels["T0001"]
    assert len(labels["T0002"]) == 47 and labels["T0002"].count("Y") == 2 and labels["T0002"].count("X") == 1
    assert len(labels["T0003"]) == 45 and labels["T0003"].count("21") == 1 and labels["T0003"].count("22") == 2
    assert len(labels["T0004"]) == 46
    assert all((root / "chromosomes" / r["path"]).is_file() and r["karyotype"] == iscn[r["group_id"]] for r in crops)
    s = with_test_patients["summary"]
    assert s["patients"] == 2 and s["karyograms"] == {"normal": 1, "abnormal": 1}  # main-cohort numbers
    t = s["test_only"]
    assert t["patients"] == 4 and t["cells"] == 4 and t["crops"] == len(crops) == 47 + 47 + 45 + 46
    assert t["karyograms"] == {"normal": 1, "abnormal": 3}
    assert t["patients_per_abnormality"] == {"XXX": 1, "XYY": 1, "-21": 1, "normal": 1}
    assert t["karyograms_per_karyotype"]["47,XXX"] == 1 and sum(t["karyograms_per_karyotype"].values()) == 4


def test_test_patient_seed_stream_and_plan():
    from genediag.synthetic.cohort import _rng, plan_test_patients

    # five words ([seed, 1, t, c, 0]) never equal the main cohort's four ([seed, 1, t, c]): patient 1, cell t, item c
    assert _rng(7, 3, 2, 0, stream=1).integers(2**63) != _rng(7, 1, 3, 2).integers(2**63)
    assert _rng(7, 1, stream=1).integers(2**63) != _rng(7, 1).integers(2**63)
    prm = merge_cohort_params({"test_patients": {"normal": 2, "abnormalities": ["+21", "del(5)(p14)", "-22"],
                                                 "per_abnormality": {"numerical": 2, "structural": 1}}})
    assert plan_test_patients(prm) == [("T0001", "+21"), ("T0002", "del(5)(p14)"), ("T0003", "-22"),
                                       ("T0004", "+21"), ("T0005", "-22"), ("T0006", None), ("T0007", None)]
    assert prm["test_patients"]["cells_per_patient"] == {"normal": 2, "numerical": 2, "structural": 2}
    assert plan_test_patients(merge_cohort_params({})) == []
    assert merge_cohort_params({"test_patients": {"normal": 0}})["test_patients"] is None


@pytest.mark.parametrize(("tp", "match"), [
    ({"bogus": 1}, r"bogus.*test_patients"),
    ({"normal": -1}, r"test_patients\.normal"),
    ({"normal": 1, "abnormalities": ["+7"]}, r"test_patients\.abnormalities"),
    ({"abnormalities": ["XXX", "XXX"]}, r"duplicate.*test_patients\.abnormalities"),
    ({"abnormalities": ["XXX"], "per_abnormality": -2}, r"test_patients\.per_abnormality"),
    ({"normal": 1, "cells_per_patient": 3}, r"test_patients\.cells_per_patient.*karyograms_per_patient"),
    ({"normal": 1, "cells_per_patient": 0}, r"test_patients\.cells_per_patient"),
    ([1, 2], r"'test_patients' must be a mapping"),
])
def test_test_patients_validation(tp, match):
    with pytest.raises(ValueError, match=match):
        merge_cohort_params({"test_patients": tp})
