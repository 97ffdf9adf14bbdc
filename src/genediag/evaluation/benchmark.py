"""Inference-time benchmark (ChromosomeNet's *InferenceTime*): seconds to predict 1000 samples one at a time,
as the paper measured it, and the batched figure beside it — for the deployed path (the run's ``model.onnx`` in
ONNX Runtime, what ``evaluate`` and ``predict`` run) and for eager PyTorch (``model.pt``), measured in the same
process, one after the other, with the same intra-op thread count (:func:`genediag.models.export.compare_runtimes`).

Timings depend on the machine and on whatever else runs on it, so they are written to
``benchmarks/inference/<run>.json`` (with the run's task and model, the machine and its load average before and
after), never into ``metrics/`` (that would make ``dvc metrics diff`` noisy). Which runs are timed, and how, is
``chromosomes.benchmark.<run>`` in params.yaml (schema.BENCHMARK). Only the model is timed: the test images are
decoded, resized and stacked into one tensor first. ``accuracy_delta`` is the deployed path's accuracy minus
eager torch's on the benchmarked test samples (a fraction: 0.005 = half a point).

Fields of the JSON (besides task, model, run, input, parameters, samples, batch_size, threads):
``eager_seconds_per_1000_single``, ``eager_seconds_per_1000_batched``, ``seconds_per_1000_single``,
``seconds_per_1000_batched`` (the deployed path), ``speedup_single`` / ``speedup_batched`` (eager ÷ deployed, same
run), median / p90 ms of one call, ``accuracy_eager`` / ``accuracy_deployed`` / ``accuracy_delta``,
``argmax_agreement``, ``machine`` (CPU model, cores, load) and ``goals`` (the speed issue's targets, checked, not
asserted).
"""

from __future__ import annotations

import logging
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

log = logging.getLogger(__name__)

#: the speed issue's goals for the deployed path (checked and written into the JSON, never asserted)
GOAL_SPEEDUP_SINGLE = 3.0          # deployed one at a time ≥ 3× faster than eager
GOAL_MAX_ACCURACY_DELTA = 0.005    # |accuracy change| ≤ half a point
PAPER_MOBILENETV2_SINGLE = 8.6     # ChromosomeNet's InferenceTime of MobileNetV2 (s / 1000, one at a time; GPU)


def loadavg() -> list[float] | None:
    """os.getloadavg() (1, 5, 15 min), rounded; None where the platform has none."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """A thread count from params: 0 / None = every usable core."""
    return int(threads) if threads else usable_cpus()


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What the timings were measured on (CPU model, cores, threads, load) — for the report."""
    device = torch.device(device)
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
        "usable_cpus": usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    load = loadavg()
    if load:
        info["load_average_1min"] = load[0]
        info["load_average"] = load
    return info


def benchmark_inputs(dataset, samples: int, labels: bool = False):
    """The first `samples` items of `dataset` stacked into one tensor (cycled when the dataset is smaller); with
    `labels`, (inputs, N targets)."""
    if len(dataset) == 0:
        raise ValueError("the benchmark split has no items for this task")
    items = [dataset[i % len(dataset)] for i in range(samples)]
    x = torch.stack([it[0] for it in items])
    return (x, np.asarray([int(it[1]) for it in items])) if labels else x


def goals(result: dict[str, Any]) -> dict[str, bool | None]:
    """The speed issue's targets for one benchmark (None where a figure is missing)."""
    delta = result.get("accuracy_delta")
    out: dict[str, bool | None] = {
        f"deployed one at a time ≥ {GOAL_SPEEDUP_SINGLE:g}× eager": result["speedup_single"] >= GOAL_SPEEDUP_SINGLE,
        "deployed batched not slower than one at a time":
            result["seconds_per_1000_batched"] <= result["seconds_per_1000_single"],
        "eager batched not slower than one at a time":
            result["eager_seconds_per_1000_batched"] <= result["eager_seconds_per_1000_single"],
        f"|accuracy_delta| ≤ {GOAL_MAX_ACCURACY_DELTA:g}": None if delta is None else abs(delta) <= GOAL_MAX_ACCURACY_DELTA,
    }
    return out


def measure_inference(model: nn.Module, onnx_path: str | Path, inputs: torch.Tensor,
                      labels: np.ndarray | None, batch_size: int, warmup: int, threads: int,
                      compare_on: int | None = None) -> dict[str, Any]:
    """Eager torch and ONNX Runtime timed in this process with `threads` intra-op threads each
    (:func:`~genediag.models.export.compare_runtimes`: seconds per 1000 one at a time and in batches of
    `batch_size`), then their predictions compared on the first `compare_on` inputs (default: all) —
    agreement and, with `labels`, the accuracy of each. The load average is recorded before and after."""
    from genediag.models.export import compare_predictions, compare_runtimes

    before = loadavg()
    timing = compare_runtimes(model, onnx_path, inputs, batch_size=batch_size, warmup=warmup, threads=threads)
    after = loadavg()
    k = len(inputs) if compare_on is None else max(1, min(int(compare_on), len(inputs)))
    agree = compare_predictions(model, onnx_path, inputs[:k], None if labels is None else labels[:k],
                                threads=threads)
    result = {**timing, **agree, "loadavg_before": before, "loadavg_after": after}
    result["goals"] = goals(result)
    return result


def benchmark_run(run_dir: str | Path, dataset_dir: str | Path, split_csv: str | Path, out_json: str | Path,
                  bench_cfg: dict[str, Any]) -> dict[str, Any]:
    """Benchmark the trained model of a run folder (``model.pt`` eager, ``model.onnx`` in ONNX Runtime) on its
    dataset's test split; writes `out_json` and returns it."""
    from genediag import io as gio
    from genediag.data.datasets import CachedImageDataset, load_split_data
    from genediag.models.checkpoint import load_checkpoint
    from genediag.schema import BENCHMARK, validate

    bench = validate(bench_cfg, BENCHMARK, "benchmark")
    if bench["device"] not in ("cpu", "auto"):
        log.warning("benchmark: device %s ignored; the deployed path (ONNX Runtime) and eager torch are both timed "
                    "on the CPU", bench["device"])
    threads = resolve_threads(bench["threads"])
    run_dir = Path(run_dir)
    onnx_path = run_dir / "model.onnx"
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no exported model (train@ writes it beside model.pt)")
    model, meta = load_checkpoint(run_dir / "model.pt", device="cpu")
    cfg = meta["config"]
    _, table, _ = load_split_data(dataset_dir, split_csv, cfg["classes"], need=(bench["split"],))
    images = np.load(Path(dataset_dir) / "images.npy", mmap_mode="r")
    rows = table[(table["split"] == bench["split"]) & (table["target"] >= 0)]
    ds = CachedImageDataset(images, rows["index"].to_numpy(), rows["target"].to_numpy(), meta["input"]["size"],
                            invert=bool(meta["input"]["invert"]))
    x, y = benchmark_inputs(ds, bench["samples"], labels=True)
    run = meta["run"]
    log.info("%s: timing %d samples of size %s one at a time and in batches of %d, eager torch and ONNX Runtime, "
             "%d thread(s)", run, len(x), tuple(x.shape[1:]), bench["batch_size"], threads)
    res = measure_inference(model, onnx_path, x, y, bench["batch_size"], bench["warmup"], threads,
                            compare_on=len(ds))   # accuracy on distinct samples (the inputs cycle a small split)
    result = {
        "task": cfg["task"], "model": cfg["model"], "run": run, "split": bench["split"],
        "weights": f"trained ({run_dir / 'model.pt'})",
        "deployed": "ONNX Runtime, CPUExecutionProvider (model.onnx, float32)",
        "eager": "PyTorch eager, CPU, inference_mode (model.pt)",
        "input": list(x.shape[1:]), "parameters": sum(p.numel() for p in model.parameters()),
        **res,
        "machine": machine_info("cpu"),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    gio.write_json(out_json, result)
    log.info("%s: s per 1000 one at a time: eager %.2f, ONNX Runtime %.2f (%.1f×); batched %.2f / %.2f; accuracy "
             "delta %s; load %s → %s", run, result["eager_seconds_per_1000_single"], result["seconds_per_1000_single"],
             result["speedup_single"], result["eager_seconds_per_1000_batched"], result["seconds_per_1000_batched"],
             result["accuracy_delta"], result["loadavg_before"], result["loadavg_after"])
    return result
