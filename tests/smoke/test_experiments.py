"""Experiments: queue two `-S` overrides, run the queue with one worker, `dvc exp show` lists their metrics."""

from __future__ import annotations

import json
import time

import pytest

from tiny_repo import METRICS, RUN, dvc, git, tiny_repo

pytestmark = pytest.mark.smoke

EXPERIMENTS = {  # name -> -S override; "++" adds a key the run entry does not have yet (it inherits its family's)
    "lr-0.002": f"++chromosomes.runs.{RUN}.fit.optimizer.lr=0.002",
    "epochs-3": f"++chromosomes.runs.{RUN}.fit.epochs=3",
}
QUEUE_TIMEOUT_S = 900  # generous: two tiny train+evaluate runs; the queue is polled, not timed


@pytest.fixture(scope="module")
def queued(tmp_path_factory):
    dest, env = tiny_repo(tmp_path_factory, "experiments")
    try:
        for name, override in EXPERIMENTS.items():
            out = dvc("exp", "run", "--queue", "-n", name, "-S", override, cwd=dest, env=env)
            assert out.returncode == 0, out.stdout + out.stderr
            assert "Queued experiment" in out.stdout
        started = dvc("queue", "start", "-j", "1", cwd=dest, env=env)
        assert started.returncode == 0, started.stderr
        # wait for the experiments' git refs (a cheap git call); `dvc queue status` (a whole dvc process)
        # only now and then, to notice a failed task instead of waiting for the timeout
        deadline = time.monotonic() + QUEUE_TIMEOUT_S
        last_status = time.monotonic()
        while time.monotonic() < deadline:
            refs = git("for-each-ref", "--format=%(refname)", "refs/exps", cwd=dest).split()
            if {r.rsplit("/", 1)[-1] for r in refs} >= set(EXPERIMENTS):
                break
            if time.monotonic() - last_status > 30:
                last_status = time.monotonic()
                status = dvc("queue", "status", cwd=dest, env=env)
                if "Failed" in status.stdout:
                    break
            time.sleep(2)
        while True:  # the refs exist a moment before the tasks are marked done
            status = dvc("queue", "status", cwd=dest, env=env)
            pending = [ln for ln in status.stdout.splitlines() if " Queued" in ln or " Running" in ln]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert not pending, f"queue still busy after {QUEUE_TIMEOUT_S}s:\n{status.stdout}"
        yield dest, env, status.stdout
    finally:
        dvc("queue", "stop", "--kill", cwd=dest, env=env, timeout=120)  # the idle worker exits


def test_queue_ran_every_experiment(queued):
    _, _, status = queued
    for name in EXPERIMENTS:
        line = next((ln for ln in status.splitlines() if f" {name} " in f" {ln} "), "")
        assert "Success" in line, status


def test_exp_show_lists_their_params_and_metrics(queued):
    dest, env, _ = queued
    shown = dvc("exp", "show", "--json", cwd=dest, env=env)
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    found = {}
    for baseline in rows:
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            found[exp["name"]] = rev["data"]
    assert set(EXPERIMENTS) <= set(found), sorted(found)
    for name, override in EXPERIMENTS.items():
        data = found[name]
        params = data["params"]["params.yaml"]["data"]["chromosomes"]["runs"][RUN]
        key, value = override.split("=")
        node = params
        for part in key.split(".")[3:]:
            node = node[part]
        assert str(node) == value
        metrics = data["metrics"][METRICS]["data"]
        assert metrics["run"] == RUN and metrics["n"] > 0 and 0.0 <= metrics["accuracy"] <= 1.0
    assert found["epochs-3"]["metrics"][METRICS]["data"]["epochs_run"] == 3

    table = dvc("exp", "show", "--md", "--only-changed", cwd=dest, env=env)
    assert table.returncode == 0 and all(name in table.stdout for name in EXPERIMENTS)
