"""Your own data, end to end: part of the synthetic cohort exported the way a lab would hold it — TIFF crops in a
folder per patient and metaphase, a CSV with its own column names, patient and cell ids, relative paths, a stray
label the task does not know — then the real-data preset applied and the real ``dvc repro`` run to test metrics
and karyotypes. Nothing synthetic may leak in: the generator never runs, the caps are off, results are not called
synthetic, and the stray row is quarantined with its reason (docs/own-data.md walks through the same steps)."""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from PIL import Image

from tiny_repo import ROOT, build_tiny_repo, dvc, tiny_params

pytestmark = pytest.mark.smoke


def export_like_a_lab(cohort: "Path", dest: "Path") -> int:  # noqa: F821
    """TIFFs under dest/<patient>/<metaphase>/, listed in dest/crops.csv (file, chromosome, patient, metaphase,
    karyotype); returns the number of rows, including one crop labelled 'mar' (a marker chromosome)."""
    src = pd.read_csv(cohort / "chromosomes" / "manifest.csv", dtype=str, keep_default_na=False)
    rows = []
    for r in src.itertuples():
        rel = f"{r.group_id}/{r.cell_id}/{r.label}_{len(rows):05d}.tif"
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(cohort / "chromosomes" / r.path).save(dest / rel, format="TIFF")
        rows.append({"file": rel, "chromosome": r.label, "patient": r.group_id, "metaphase": r.cell_id,
                     "karyotype": r.karyotype})
    stray = dict(rows[0], file=rows[0]["file"].replace(".tif", "_mar.tif"), chromosome="mar")
    shutil.copyfile(dest / rows[0]["file"], dest / stray["file"])
    rows.append(stray)
    pd.DataFrame(rows).to_csv(dest / "crops.csv", index=False)
    return len(rows)


@pytest.fixture(scope="module")
def own_repo(tmp_path_factory):
    from genediag.synthetic.cohort import generate_cohort

    params = tiny_params()
    cohort = tmp_path_factory.mktemp("cohort")
    gen = dict(params["generate"], test_patients={"normal": 0, "abnormalities": [], "per_abnormality": 0,
                                                  "cells_per_patient": 1})
    generate_cohort(cohort, gen)
    repo, env = build_tiny_repo(tmp_path_factory.mktemp("own") / "repo", params, repro=False)
    n_rows = export_like_a_lab(cohort, repo / "lab" / "chromosomes")

    # the real-data preset, then this lab's source and column names; epochs shortened for the test's time only
    applied = subprocess.run([sys.executable, "-m", "genediag.presets", "apply", "presets/real_chromosomes.yaml"],
                             cwd=repo, env=env, capture_output=True, text=True)
    assert applied.returncode == 0, applied.stderr
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["datasets"]["chromosomes"].update(source="lab/chromosomes/crops.csv", columns={
        "path": "file", "label": "chromosome", "group": "patient", "cell": "metaphase"})
    p["datasets"]["chromosomes"]["ingest"]["size"] = 32
    p["datasets"]["chromosomes"]["split"]["ratios"] = {"train": 0.5, "val": 0.25, "test": 0.25}
    chrom = p["chromosomes"]
    keep = ("chromosomes24-dcnn", "chromosomes24-tf_efficientnet_lite0")   # the karyotype stage's candidates
    chrom["runs"] = {k: v for k, v in chrom["runs"].items() if k in keep}
    chrom["benchmark"] = {"chromosomes24-dcnn": {"samples": 20, "warmup": 1, "threads": 1}}
    for fam in chrom["families"].values():
        fam["input_size"] = 32
        fam["fit"].update(epochs=3, batch_size=32)
    p["karyotyping"]["candidate_runs"] = list(keep)
    p["reports"]["chromosomes"]["tasks"] = ["chromosomes24"]
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    check = subprocess.run([sys.executable, "-m", "genediag", "params", "check"], cwd=repo, env=env,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    res = dvc("repro", "karyotype", "report_chromosomes", cwd=repo, env=env, timeout=1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return repo, env, n_rows, res.stdout + res.stderr


def test_no_synthetic_stage_or_shortcut_ran(own_repo):
    repo, _, _, log = own_repo
    assert not (repo / "data" / "synthetic").exists()          # the generator never ran
    assert "Running stage 'generate'" not in log and "karyogram_base" not in log
    assert "synthetic-default caps" not in log                  # the preset turned the caps off


def test_ingest_keeps_the_lab_rows_and_quarantines_the_stray_label(own_repo):
    repo, _, n_rows, _ = own_repo
    d = repo / "data" / "ingested" / "chromosomes"
    summary = json.loads((d / "summary.json").read_text())
    q = pd.read_csv(d / "quarantine.csv", dtype=str, keep_default_na=False)
    assert summary["synthetic"] is False and summary["input"] == n_rows
    assert summary["accepted"] == n_rows - 1 and len(q) == 1
    assert q.iloc[0]["label"] == "mar" and "label not in task" in q.iloc[0]["reason"]
    manifest = pd.read_csv(d / "manifest.csv", dtype=str, keep_default_na=False)
    assert manifest["path"].str.endswith(".tif").all() and not manifest["path"].str.startswith("/").any()
    assert set(manifest["group_id"]) == set(manifest["path"].str.split("/").str[0])   # patient column → groups


def test_metrics_and_karyotypes_on_the_lab_data(own_repo):
    repo, *_ = own_repo
    m = json.loads((repo / "metrics" / "chromosomes" / "chromosomes24-dcnn.json").read_text())
    assert m["synthetic"] is False and m["warnings"] == [] and m["n"] > 0
    assert set(m["ci95"]) >= {"accuracy", "macro_f1"} and 0 <= m["ece"] <= 1
    fit = json.loads((repo / "models" / "chromosomes24-dcnn" / "fit.json").read_text())
    assert fit["train_images_per_second"] > 0
    k = json.loads((repo / "metrics" / "karyotyping" / "best.json").read_text())
    assert k["synthetic"] is False and k["cells"] > 0 and k["cells_with_truth"] > 0
    assert "exact_karyotype_accuracy" in k
    report = (repo / "reports" / "chromosomes.md").read_text()
    assert "synthetic" not in report.splitlines()[0].lower()
