import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from genediag.data.datasets import CachedImageDataset
from genediag.models import create_model
from genediag.schema import FIT, validate
from genediag.training.trainer import EarlyStopping, fit


def resolve_train_config(cfg, where):
    return validate(cfg, FIT, where)

ROOT = Path(__file__).resolve().parents[2]


def toy_images(n=240, size=16, seed=0):
    """Three separable classes: a bright bar at the top, middle or bottom of a dark image."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 40, size=(n, size, size)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, c * 5 : c * 5 + 4, 2:-2] = 220
    return x, y


def toy_fit(tmp_path, epochs=4, seed=0, patience=5):
    x, y = toy_images()
    train = CachedImageDataset(x, np.arange(0, 180), y[:180], 16)
    val = CachedImageDataset(x, np.arange(180, 240), y[180:], 16)
    torch.manual_seed(seed)
    model = create_model("pinnacle_dcnn", num_classes=3, in_chans=1, img_size=16, fc=[32, 16, 16], dropout=0.0)
    cfg = resolve_train_config({"epochs": epochs, "batch_size": 32, "seed": seed, "device": "cpu",
                                "early_stopping": {"patience": patience}}, "test")
    return fit(model, train, val, cfg, tmp_path / "run", live_dir=tmp_path / "live")


def test_fit_learns_and_writes_outputs(tmp_path):
    model, result = toy_fit(tmp_path, epochs=6)
    assert result.history[-1]["val_accuracy"] > 0.9
    summary = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert list(summary["epoch"]) == list(range(1, result.epochs_run + 1))
    assert (tmp_path / "live" / "plots" / "metrics" / "val" / "loss.tsv").exists()


def test_fit_is_deterministic_on_cpu(tmp_path):
    m1, _ = toy_fit(tmp_path / "a", epochs=2)
    m2, _ = toy_fit(tmp_path / "b", epochs=2)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_early_stopping_and_best_weights_restored(tmp_path, monkeypatch):
    """Validation losses are scripted: best at epoch 2, then worse; training stops after `patience` bad epochs
    and the returned model carries epoch 2's weights."""
    import genediag.training.trainer as tr

    losses = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.95])  # noqa: B020
    snapshots = []

    def fake_validate(model, *a, **k):
        snapshots.append(copy.deepcopy(model.state_dict()))
        return {"loss": next(losses), "accuracy": 0.0}

    monkeypatch.setattr(tr, "validate", fake_validate)
    model, result = toy_fit(tmp_path, epochs=6, patience=2)
    assert result.best_epoch == 2 and result.epochs_run == 4 and result.stopped_early
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k]), k


def test_early_stopping_counter():
    s = EarlyStopping(patience=2, min_delta=0.1)
    row = lambda v: {"val_loss": v}  # noqa: E731
    assert s.step(row(1.0), 0) and not s.step(row(0.95), 1) and not s.should_stop
    assert not s.step(row(0.99), 2) and s.should_stop and s.best_epoch == 0
    acc = EarlyStopping(patience=1, monitor="val_accuracy")
    assert acc.step({"val_accuracy": 0.5}, 0) and acc.step({"val_accuracy": 0.6}, 1)
    assert not acc.step({"val_accuracy": 0.55}, 2) and acc.should_stop and acc.best_epoch == 1


def test_ddp_on_cpu_with_torchrun(tmp_path):
    """Two gloo processes train the same toy model; DDP keeps their weights identical."""
    script = tmp_path / "ddp_fit.py"
    script.write_text(f"""
import sys, numpy as np, torch, torch.distributed as dist
sys.path.insert(0, {str(ROOT / 'src')!r}); sys.path.insert(0, {str(ROOT / 'tests' / 'unit')!r})
from test_trainer import toy_fit
from pathlib import Path
model, result = toy_fit(Path({str(tmp_path)!r}), epochs=2)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
assert dist.get_world_size() == 2
assert all(torch.equal(gathered[0], g) for g in gathered), "replicas diverged"
print("rank", dist.get_rank(), "ok", result.history[-1]["val_accuracy"])
dist.destroy_process_group()
""")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(script)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("ok") == 2


def test_binary_sigmoid_models_share_the_trainer(tmp_path):
    """A one-unit (sigmoid) model trains with loss bce; class_scores turns its logit into two-class scores."""
    from genediag.models.inference import class_scores
    from genediag.training.losses import create_loss

    x, y = toy_images()
    y = (y == 2).astype(int)
    train = CachedImageDataset(x, np.arange(0, 180), y[:180], 16)
    val = CachedImageDataset(x, np.arange(180, 240), y[180:], 16)
    torch.manual_seed(0)
    model = create_model("pinnacle_dcnn", num_classes=1, in_chans=1, img_size=16, fc=[16, 16, 16], dropout=0.0)
    cfg = resolve_train_config({"epochs": 5, "batch_size": 32, "device": "cpu", "loss": {"name": "bce"}}, "test")
    model, result = fit(model, train, val, cfg, tmp_path / "run")
    assert result.history[-1]["val_accuracy"] > 0.9
    z = torch.tensor([[0.0], [2.0]])
    p = torch.softmax(class_scores(z), 1)
    assert torch.allclose(p[:, 1], torch.sigmoid(z[:, 0]))
    with pytest.raises(Exception, match="unknown 'focal'"):
        create_loss({"name": "focal"})


def _toy_run(tmp_path, seed_workers, threads):
    from genediag.schema import RUN
    from genediag.training.run import train_and_save

    x, y = toy_images(n=120)
    table = pd.DataFrame({"index": np.arange(120), "label": [str(c) for c in y], "group_id": [f"p{i}" for i in
                                                                                              range(120)],
                          "split": ["train"] * 80 + ["val"] * 20 + ["test"] * 20, "target": y})
    cfg = validate({"family": "f", "task": "toy", "model": "dcnn", "classes": ["0", "1", "2"],
                    "arch": {"name": "pinnacle_dcnn", "fc": [16, 16, 16], "dropout": 0.0}, "input_size": 16,
                    "seeds": 2, "seed_workers": seed_workers,
                    "fit": {"epochs": 2, "batch_size": 32, "device": "cpu", "threads": threads}}, RUN, "test")
    summary = {"dataset": "toy", "synthetic": True, "kind": "chromosome_crops", "image_shape": [16, 16], "mode": "L"}
    train_and_save("toy", cfg, x, table, ["0", "1", "2"], summary, tmp_path / "run", resume_root=None)
    from genediag.models.checkpoint import load_seed_checkpoints, read_checkpoint

    return [read_checkpoint(tmp_path / "run" / "model.pt")["state_dict"]] + \
        [m.state_dict() for m, _ in load_seed_checkpoints(tmp_path / "run" / "seeds.pt")]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="parallel seeds need two cores")
def test_seeds_in_parallel_processes_equal_seeds_one_after_the_other(tmp_path):
    """Two seeds side by side (one process and one thread each) give the same weights as the same seeds trained
    one after the other on one thread: the parallel path changes the wall time, not the models."""
    import json

    parallel = _toy_run(tmp_path / "par", seed_workers=0, threads=0)
    fit_json = json.loads((tmp_path / "par" / "run" / "fit.json").read_text())
    assert fit_json["seeds"][0]["seed_workers"] == 2 and fit_json["seeds"][0]["threads"] == 1
    sequential = _toy_run(tmp_path / "seq", seed_workers=1, threads=1)
    assert len(parallel) == len(sequential) == 2
    for a, b in zip(parallel, sequential):
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert not all(torch.equal(parallel[0][k], parallel[1][k]) for k in parallel[0])   # two different seeds
