"""Inference-time benchmark (ChromosomeNet's *InferenceTime*): seconds to predict 1000 samples one at a time,
as the paper measured it, and the batched figure beside it.

Timings depend on the machine and on whatever else runs on it, so they are written to
``benchmarks/inference/<run>.json`` (with the run's task and model, and a description of the machine), never into
``metrics/`` (that would make ``dvc metrics diff`` noisy). Which runs are timed, and how, is the ``benchmark:``
section of params.yaml: one entry per run (``benchmark.<run>: {samples: 1000, ...}``), so the 416-px karyogram
models of another branch are not timed one sample at a time unless asked for. Only the model's forward pass is
timed: the test images are decoded, resized and stacked into one tensor first.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from genediag.config import select_device

log = logging.getLogger(__name__)

def machine_info(device: torch.device) -> dict[str, Any]:
    """What the timings were measured on (CPU model, cores, threads, load) — for the report."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_inference(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256, warmup: int = 10,
                   device: torch.device | str = "cpu", desc: str = "benchmark") -> dict[str, Any]:
    """Time `model` on `inputs` (N×C×H×W): one sample at a time (N forward passes of batch 1) and in batches.

    Returns seconds for all N samples each way, per-sample latency statistics (ms) and throughput.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    x = inputs.to(device)
    n = len(x)
    if n == 0:
        raise ValueError("no samples to time")
    for i in range(min(warmup, n)):
        model(x[i : i + 1])
    if warmup:
        model(x[: min(batch_size, n)])
    _sync(device)

    lat = []
    t0 = time.perf_counter()
    for i in tqdm(range(n), desc=f"{desc}: one at a time", unit="sample", mininterval=5.0, leave=False):
        s = time.perf_counter()
        model(x[i : i + 1])
        _sync(device)
        lat.append(time.perf_counter() - s)
    single = time.perf_counter() - t0

    t0 = time.perf_counter()
    for i in range(0, n, batch_size):
        model(x[i : i + batch_size])
    _sync(device)
    batched = time.perf_counter() - t0

    lat_ms = sorted(v * 1000 for v in lat)
    return {
        "samples": n,
        "single_seconds": round(single, 6),
        "batched_seconds": round(batched, 6),
        "batch_size": batch_size,
        "single_ms_mean": round(statistics.fmean(lat_ms), 4),
        "single_ms_median": round(statistics.median(lat_ms), 4),
        "single_ms_p90": round(lat_ms[min(n - 1, int(0.9 * n))], 4),
        "batched_samples_per_second": round(n / batched, 1) if batched > 0 else None,
    }


def benchmark_inputs(dataset, samples: int) -> torch.Tensor:
    """The first `samples` items of `dataset` stacked into one tensor (cycled when the dataset is smaller)."""
    if len(dataset) == 0:
        raise ValueError("the benchmark split has no items for this task")
    return torch.stack([dataset[i % len(dataset)][0] for i in range(samples)])


def benchmark_run(run_dir: str | Path, dataset_dir: str | Path, split_csv: str | Path, out_json: str | Path,
                  bench_cfg: dict[str, Any]) -> dict[str, Any]:
    """Benchmark the trained model of a run folder on its dataset; writes `out_json` and returns it."""
    from genediag import io as gio
    from genediag.data.datasets import CachedImageDataset, load_split_data
    from genediag.models.checkpoint import load_checkpoint
    from genediag.schema import BENCHMARK, validate

    bench = validate(bench_cfg, BENCHMARK, "benchmark")
    if bench["threads"]:
        torch.set_num_threads(bench["threads"])
    device = select_device(bench["device"])
    model, meta = load_checkpoint(Path(run_dir) / "model.pt")
    cfg = meta["config"]
    _, table, _ = load_split_data(dataset_dir, split_csv, cfg["classes"], need=(bench["split"],))
    images = np.load(Path(dataset_dir) / "images.npy", mmap_mode="r")
    rows = table[(table["split"] == bench["split"]) & (table["target"] >= 0)]
    ds = CachedImageDataset(images, rows["index"].to_numpy(), rows["target"].to_numpy(), meta["input"]["size"],
                            invert=bool(meta["input"]["invert"]))
    x = benchmark_inputs(ds, bench["samples"])
    run = meta["run"]
    log.info("%s: timing %d samples of size %s one at a time and in batches of %d on %s", run, len(x),
             tuple(x.shape[1:]), bench["batch_size"], device)
    timing = time_inference(model, x, bench["batch_size"], bench["warmup"], device, desc=run)
    result = {
        "task": cfg["task"], "model": cfg["model"], "run": run, "split": bench["split"],
        "input": list(x.shape[1:]), "parameters": sum(p.numel() for p in model.parameters()),
        **timing,
        "seconds_per_1000_single": round(timing["single_seconds"] * 1000 / len(x), 4),
        "seconds_per_1000_batched": round(timing["batched_seconds"] * 1000 / len(x), 4),
        "machine": machine_info(device),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    gio.write_json(out_json, result)
    log.info("%s: %.2f s per 1000 samples one at a time, %.2f s batched (%s)", run,
             result["seconds_per_1000_single"], result["seconds_per_1000_batched"], result["machine"]["cpu"])
    return result
