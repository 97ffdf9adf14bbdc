"""``genediag compare`` on two commits of a tiny git + DVC repository: one run's accuracy really changes (many test
items flip to correct), another's moves by one item (noise). The paired bootstrap over the DVC-tracked predictions
must flag the first and not the second; a run without predictions falls back to the intervals."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genediag.evaluation.metrics import headline_metrics
from genediag.evaluation.uncertainty import bootstrap_ci

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
NAMES = ["normal", "abnormal"]


def sh(root: Path, *cmd: str) -> str:
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr}"
    return res.stdout


def predictions(correct: np.ndarray, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(correct)
    target = np.arange(n) % 2
    pred = np.where(correct, target, 1 - target)
    p1 = np.clip(np.where(pred == 1, 0.6 + 0.4 * rng.random(n), 0.4 * rng.random(n)), 0, 1)
    return pd.DataFrame({"index": np.arange(n), "path": [f"img{i:03d}.png" for i in range(n)],
                         "group_id": [f"P{i // 4:02d}" for i in range(n)],  # 4 items per patient
                         "target": [NAMES[t] for t in target], "predicted": [NAMES[p] for p in pred],
                         "p_normal": (1 - p1).round(6), "p_abnormal": p1.round(6)})


def write_run(root: Path, run: str, preds: pd.DataFrame, track_predictions: bool = True) -> None:
    idx = {n: i for i, n in enumerate(NAMES)}
    y, pred = preds["target"].map(idx).to_numpy(), preds["predicted"].map(idx).to_numpy()
    probs = preds[["p_normal", "p_abnormal"]].to_numpy()
    head = headline_metrics(y, pred, probs, NAMES)
    ci = bootstrap_ci(lambda y, pred, probs: headline_metrics(y, pred, probs, NAMES), preds["group_id"].to_numpy(),
                      {"y": y, "pred": pred, "probs": probs}, 300, 0)
    metrics = root / "metrics" / "karyograms" / f"{run}.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps({"task": "karyograms", "model": run, "synthetic": True, "n": len(y),
                                   **{k: round(v, 6) for k, v in head.items() if v is not None}, "ci95": ci}))
    if track_predictions:
        out = root / "evaluation" / "karyograms" / run / "predictions.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        preds.to_csv(out, index=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    sh(root, "git", "init", "-q")
    sh(root, "git", "config", "user.email", "t@example.org")
    sh(root, "git", "config", "user.name", "t")
    sh(root, "dvc", "init", "-q")
    n = 160
    base = np.random.default_rng(1).random(n) < 0.7          # 70 % correct
    (root / "params.yaml").write_text("karyograms:\n  lr: 0.001\nevidence:\n  bootstrap: 400\n")
    write_run(root, "real", predictions(base, 0))
    write_run(root, "noise", predictions(base, 0))
    write_run(root, "nopreds", predictions(base, 0), track_predictions=False)
    sh(root, "dvc", "add", "-q", "evaluation")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-q", "-m", "A")

    better = base.copy()
    better[np.flatnonzero(~base)[:40]] = True                 # 40 more items right: +25 points
    one_more = base.copy()
    one_more[np.flatnonzero(~base)[0]] = True                 # one item: noise
    (root / "params.yaml").write_text("karyograms:\n  lr: 0.003\nevidence:\n  bootstrap: 400\n")
    write_run(root, "real", predictions(better, 0))
    write_run(root, "noise", predictions(one_more, 0))
    write_run(root, "nopreds", predictions(better, 0), track_predictions=False)
    sh(root, "dvc", "add", "-q", "evaluation")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-q", "-m", "B")
    return root


def test_compare_flags_the_real_change_and_not_the_noise(repo):
    from genediag.reports.compare import compare

    result = compare("HEAD~1", "HEAD", repo)
    assert result["params"] == [("karyograms.lr", 0.001, 0.003)] and result["bootstrap"] == 400
    acc = {c.run: c for c in result["metrics"] if c.metric == "accuracy"}
    assert acc["real"].method == "paired bootstrap" and acc["real"].beyond == "yes"
    assert acc["real"].change == pytest.approx(40 / 160, abs=1e-6) and acc["real"].diff_ci[0] > 0
    assert acc["noise"].method == "paired bootstrap" and acc["noise"].beyond == "no"
    assert acc["noise"].diff_ci[0] <= 0 <= acc["noise"].diff_ci[1]
    # no predictions: only the intervals; +25 points on 160 items leaves them disjoint
    assert acc["nopreds"].method == "intervals" and acc["nopreds"].beyond == "yes"


def test_compare_command_prints_the_table(repo):
    res = subprocess.run(["python", "-m", "genediag", "compare", "HEAD~1", "HEAD", "--repo", str(repo),
                          "--html", str(repo / "cmp.html")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "beyond noise" in out and "| karyograms | real | Accuracy (top-1) |" in out
    row = next(line for line in out.splitlines() if line.startswith("| karyograms | noise | Accuracy"))
    assert row.rstrip().endswith("| no (paired bootstrap) |")
    assert "`karyograms.lr` | 0.001 | 0.003 |" in out
    assert "id='compare'" in (repo / "cmp.html").read_text()


def test_workspace_is_the_default_b_and_bad_revisions_are_clear(repo):
    from genediag.cli import main

    assert main(["compare", "HEAD", "--repo", str(repo)]) == 0   # HEAD vs an unchanged working tree
    assert main(["compare", "no-such-rev", "--repo", str(repo)]) == 2
