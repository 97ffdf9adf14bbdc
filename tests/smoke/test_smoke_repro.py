"""Smoke test: the real `dvc repro` on a tiny params override, in a temporary copy of the repository."""

import json

import pytest
import yaml

from tiny_repo import BIN, METRICS, RUN, run, tiny_repo as copy_tiny_repo

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    """A reproduced tiny copy (tests/tiny_repo.py: copy, tiny params, real `dvc repro`, commit)."""
    return copy_tiny_repo(tmp_path_factory, "smoke")


def test_repro_produces_metrics_report_and_is_idempotent(tiny_repo):
    dest, env = tiny_repo
    metrics = json.loads((dest / METRICS).read_text())
    assert metrics["n"] > 0 and 0.0 <= metrics["accuracy"] <= 1.0
    assert set(metrics["per_class_accuracy"]) == {str(i) for i in range(1, 23)} | {"X", "Y"}
    report = (dest / "reports" / "chromosomes.md").read_text()
    assert "synthetic" in report.lower() and "Accuracy" in report
    assert (dest / "dvc.lock").exists()
    second = run([str(BIN / "dvc"), "repro"], dest, env)
    assert second.returncode == 0
    assert "Data and pipelines are up to date" in second.stdout + second.stderr
    shown = run([str(BIN / "dvc"), "metrics", "show", "--json"], dest, env)
    assert shown.returncode == 0 and METRICS in shown.stdout
    # a run scored on another dataset (cross_evaluation): the identity model verifying the syndrome photos' people
    cross = json.loads((dest / "metrics" / "cross" / "identity-seresnet64-on-syndromes.json").read_text())
    assert (cross["trained_on"], cross["evaluated_on"]) == ("faces_identities", "faces_syndromes")
    lo, hi = cross["ci95"]["verification_accuracy"]
    assert lo <= cross["verification_accuracy"] <= hi and cross["synthetic"] is True
    page = (dest / "reports" / "index.html").read_text()
    assert "id='summary'" in page and page.index("id='summary'") < page.index("id='figures'")


def test_same_commit_same_metrics(tiny_repo):
    """Forcing the training and evaluation to run again reproduces the metrics file byte for byte."""
    dest, env = tiny_repo
    path = dest / METRICS
    before = path.read_bytes()
    again = run([str(BIN / "dvc"), "repro", "-f", "-s", f"train@{RUN}", f"evaluate@{RUN}"], dest, env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert path.read_bytes() == before


def test_changing_one_runs_params_reruns_only_its_stages(tiny_repo):
    dest, env = tiny_repo
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["chromosomes"]["runs"][RUN]["fit"] = {"optimizer": {"lr": 0.002}}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run([str(BIN / "dvc"), "status", "--json"], dest, env)
    changed = set(json.loads(status.stdout))
    # that run's training only: its evaluate@ and benchmark@ read the run's args.yaml and model, which this stage
    # rewrites, so DVC re-runs them after it (and the reports after them) — no other run's stages
    assert changed == {f"train@{RUN}"}, changed
