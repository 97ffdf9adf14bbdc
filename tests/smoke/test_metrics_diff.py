"""Reviewing across commits: two commits with different params → `dvc params/metrics/plots diff` show the change."""

from __future__ import annotations

import json

import pytest
import yaml

from tiny_repo import METRICS, RUN, dvc, git, tiny_repo

pytestmark = pytest.mark.smoke

CONFUSION = f"plots/chromosomes/confusion/{RUN}.csv"


@pytest.fixture(scope="module")
def two_commits(tmp_path_factory):
    """Commit 1: the reproduced tiny repo (2 epochs). Commit 2: 3 epochs, reproduced and committed."""
    dest, env = tiny_repo(tmp_path_factory, "metrics-diff")
    params = yaml.safe_load((dest / "params.yaml").read_text())
    before = params["chromosomes"]["families"]["dcnn"]["fit"]["epochs"]
    # this run only: its own entry overrides the family's epochs (a new key under runs.<run>)
    params["chromosomes"]["runs"][RUN]["fit"] = {"epochs": before + 1, "early_stopping": {"patience": 0}}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc("repro", cwd=dest, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"Running stage 'train@{RUN}'" in out.stdout and "Running stage 'generate'" not in out.stdout
    git("add", "-A", cwd=dest)
    git("commit", "-qm", "one more epoch", cwd=dest)
    return dest, env, before


def test_params_and_metrics_diff_between_commits(two_commits):
    dest, env, before = two_commits
    params = dvc("params", "diff", "HEAD~1", "HEAD", "--json", cwd=dest, env=env)
    assert params.returncode == 0, params.stderr
    changed = json.loads(params.stdout)["params.yaml"]
    epochs = changed[f"chromosomes.runs.{RUN}.fit.epochs"]
    assert (epochs["old"], epochs["new"]) == (None, before + 1)

    diff = dvc("metrics", "diff", "HEAD~1", "HEAD", "--json", cwd=dest, env=env)
    assert diff.returncode == 0, diff.stderr
    metrics = json.loads(diff.stdout)[METRICS]
    assert metrics["epochs_run"] == {"old": before, "new": before + 1, "diff": 1}

    table = dvc("metrics", "diff", "HEAD~1", "HEAD", cwd=dest, env=env)  # the human-readable form
    assert table.returncode == 0 and METRICS in table.stdout and "epochs_run" in table.stdout


def test_plots_diff_shows_both_revisions(two_commits, tmp_path):
    dest, env, before = two_commits
    shown = dvc("plots", "diff", "HEAD~1", "HEAD", "--json", cwd=dest, env=env)
    assert shown.returncode == 0, shown.stderr
    plots = json.loads(shown.stdout)["data"]
    confusion = plots[CONFUSION][0]
    assert set(confusion["revisions"]) == {"HEAD~1", "HEAD"}
    assert confusion["content"]["data"]["values"], "no confusion data"
    # dvclive training curves: one point per epoch, so the new revision has one step more
    loss = next(v for k, v in plots.items() if k.startswith(f"plots/training/{RUN}/") and k.endswith("val/loss.tsv"))
    steps = {}
    for point in loss[0]["content"]["data"]["values"]:
        steps.setdefault(point["rev"], set()).add(int(point["step"]))
    assert len(steps["HEAD~1"]) == before and len(steps["HEAD"]) == before + 1

    out_dir = tmp_path / "plots_html"
    rendered = dvc("plots", "diff", "HEAD~1", "HEAD", "-o", str(out_dir), cwd=dest, env=env)
    assert rendered.returncode == 0, rendered.stderr
    page = (out_dir / "index.html").read_text()
    assert "HEAD~1" in page and "confusion" in page.lower()
