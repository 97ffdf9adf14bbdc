"""A killed training run resumes from its last finished epoch and ends byte-identical to an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

pytestmark = pytest.mark.smoke
ROOT = Path(__file__).resolve().parents[2]
PARAMS = {
    "chromosomes": {
        "families": {"small": {
            "model": "dcnn", "arch": {"name": "pinnacle_dcnn", "channels": [8, 8, 8], "fc": [16, 16, 16],
                                      "dropout": 0.3},
            "input_size": 32, "invert": True,
            "augment": [{"name": "HorizontalFlip", "p": 0.5}],
            "fit": {"epochs": 8, "batch_size": 4, "optimizer": {"name": "adam", "lr": 0.003},
                    "scheduler": {"name": "onecycle"}, "early_stopping": {"patience": 0}, "channels_last": False,
                    "threads": 1}}},
        "runs": {"tiny": {"family": "small", "task": "tiny", "classes": "all"}},
    }
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from genediag.data.split import split_dataset
    from genediag.pipeline import ingest_dataset
    from genediag.schema import resolve_dataset

    root = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(0)
    rows = []
    for label in ("a", "b", "c"):
        for k in range(160):
            img = rng.integers(100, 200, (40, 40), dtype=np.uint8)
            c = "abc".index(label)
            img[5 + 10 * c: 15 + 10 * c, 5:35] = 0          # a dark bar whose height says the class
            path = root / "src" / label / f"{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.astype(np.uint8)).save(path)
            rows.append((f"{label}/{k}.png", label, f"P{k % 40}{label}"))
    pd.DataFrame(rows, columns=["path", "label", "group_id"]).to_csv(root / "src" / "m.csv", index=False)
    cfg = {"kind": "chromosome_crops", "source": str(root / "src" / "m.csv"), "ingest": {"size": 32},
           "split": {"near_duplicates": False}}
    ingest_dataset("d", cfg, root / "ingested", progress=False)
    split_dataset(root / "ingested", root / "split.csv", resolve_dataset("d", cfg)["split"])
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return root


def train(root: Path, out: str, kill_after_epoch: int | None = None) -> subprocess.Popen | int:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "stages" / "train.py"), "chromosomes", "tiny", str(root / "ingested"),
           str(root / "split.csv"), str(root / out), str(root / f"plots-{out}"), "--params", str(root / "params.yaml")]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after_epoch is None:
        return proc.wait()
    state = root / ".genediag" / "resume" / "tiny" / "seed-0" / "state.pt"
    import torch

    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            try:
                done = int(torch.load(state, weights_only=True)["epoch"])
            except Exception:   # being renamed into place
                done = 0
            if done >= kill_after_epoch:   # SIGKILL: nothing of the process survives but its files
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return done
        time.sleep(0.02)
    pytest.fail(f"the run ended before epoch {kill_after_epoch} was saved: {proc.stderr.read().decode()[-500:]}")


def test_a_killed_run_resumes_byte_identical(data):
    assert train(data, "straight") == 0
    killed_at = train(data, "resumed", kill_after_epoch=3)
    assert 3 <= killed_at < 8
    assert not (data / "resumed" / "model.pt").exists()     # nothing was saved but the resume state
    assert train(data, "resumed") == 0
    for name in ("model.pt", "seeds.pt", "summary.csv"):
        assert (data / "resumed" / name).read_bytes() == (data / "straight" / name).read_bytes(), name
    import json

    fit = json.loads((data / "resumed" / "fit.json").read_text())
    assert fit["seeds"][0]["timing"]["resumed_from_epoch"] == killed_at
    assert fit["train_images_per_second"] > 0 and fit["peak_memory_mb"] > 0
    assert not (data / ".genediag" / "resume" / "tiny" / "seed-0" / "state.pt").exists()   # cleaned up
