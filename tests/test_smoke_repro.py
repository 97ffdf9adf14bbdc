"""Smoke test: the real `dvc repro` on a tiny params override, in a temporary copy of the repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.smoke


def tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["generate"].update(normal_patients=4, abnormalities=["+21"], patients_per_abnormality=3,
                              cells_per_patient=1, canvas=64, karyogram_size=[320, 240])
    params["ingest"]["chromosomes"]["size"] = 32
    params["ingest"]["karyograms"]["size"] = 64
    for run in params["train"].values():
        run["input_size"] = 32
        run["fit"].update(epochs=2, batch_size=32)
    return params


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def run(cmd, cwd, env):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    dest = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        rel = f.decode()
        if rel.startswith(("metrics/", "plots/", "reports/")) or rel == "dvc.lock":
            continue  # outputs: the copy must compute its own
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny", cwd=dest)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(dest / "src"),
           "DVC_NO_ANALYTICS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    first = run([str(BIN / "dvc"), "repro"], dest, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return dest, env


def test_repro_produces_metrics_report_and_is_idempotent(tiny_repo):
    dest, env = tiny_repo
    metrics = json.loads((dest / "metrics" / "chromosomes24" / "dcnn.json").read_text())
    assert metrics["n"] > 0 and 0.0 <= metrics["accuracy"] <= 1.0
    assert set(metrics["per_class_accuracy"]) == {str(i) for i in range(1, 23)} | {"X", "Y"}
    report = (dest / "reports" / "chromosomes.md").read_text()
    assert "synthetic" in report.lower() and "Accuracy" in report
    assert (dest / "dvc.lock").exists()
    second = run([str(BIN / "dvc"), "repro"], dest, env)
    assert second.returncode == 0
    assert "Data and pipelines are up to date" in second.stdout + second.stderr
    shown = run([str(BIN / "dvc"), "metrics", "show", "--json"], dest, env)
    assert shown.returncode == 0 and "chromosomes24/dcnn.json" in shown.stdout


def test_same_commit_same_metrics(tiny_repo):
    """Forcing the training and evaluation to run again reproduces the metrics file byte for byte."""
    dest, env = tiny_repo
    path = dest / "metrics" / "chromosomes24" / "dcnn.json"
    before = path.read_bytes()
    again = run([str(BIN / "dvc"), "repro", "-f", "-s", "train@chromosomes24-dcnn", "evaluate@chromosomes24-dcnn"],
                dest, env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert path.read_bytes() == before


def test_changing_one_runs_params_reruns_only_its_stages(tiny_repo):
    dest, env = tiny_repo
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["train"]["chromosomes24-dcnn"]["fit"]["optimizer"]["lr"] = 0.002
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run([str(BIN / "dvc"), "status", "--json"], dest, env)
    changed = set(json.loads(status.stdout))
    assert changed == {"train@chromosomes24-dcnn", "evaluate@chromosomes24-dcnn"}, changed
