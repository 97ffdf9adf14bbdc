"""Eager PyTorch against ONNX Runtime (float and static int8) on the CPU, one image at a time and in batches.

    python benchmarks/onnx_inference.py [--samples 1000] [--threads 1 2] [--batch-size 8] [--out FILE]

Models: timm ``mobilenetv2_100`` at 3×224×224 and the Pinnacle DCNN at 1×64×64, both with RANDOM weights (no
trained checkpoint or ImageNet weights are needed: the time of a forward pass does not depend on the weight
values; the int8 model is calibrated on random images, so its argmax agreement with the float model is reported
but says little about a trained model's). For each model and thread count, in one process:
:func:`genediag.models.export.compare_runtimes` (eager and ORT seconds per 1000 images, one at a time = batch 1
per call over every input, and batched) and the int8 model's ORT times. Writes a JSON file (default
``benchmarks/onnx_inference.json``) with the machine, the load average before and after each run (the machine may
be shared with other work: timings taken under load are slower and noisier) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's genediag, not another installed one

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from genediag.evaluation.benchmark import machine_info  # noqa: E402
from genediag.models import create_model  # noqa: E402
from genediag.models.export import (OnnxClassifier, check_export, compare_runtimes, export_onnx,  # noqa: E402
                                    quantize_int8, quantized_op_types, time_onnx)

MODELS = {
    "mobilenetv2_100": dict(name="timm", model_name="mobilenetv2_100", pretrained=False, in_chans=3, img_size=224,
                            num_classes=24),
    "pinnacle_dcnn": dict(name="pinnacle_dcnn", in_chans=1, img_size=64, num_classes=24),
}
# the goals, checked in the JSON (not asserted)
GOAL_SPEEDUP_SINGLE = 3.0               # ORT one at a time ≥ 3× faster than eager
GOAL_MOBILENET_SINGLE_2_THREADS = 8.6   # MobileNetV2@224, ORT, s per 1000 one at a time, 2 threads


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []


def bench_model(key: str, args: argparse.Namespace, work: Path) -> dict:
    spec = dict(MODELS[key])
    name = spec.pop("name")
    torch.manual_seed(args.seed)
    model = create_model(name, **spec).eval()
    shape = (spec["in_chans"], spec["img_size"], spec["img_size"])
    gen = torch.Generator().manual_seed(args.seed)
    inputs = torch.rand(args.samples, *shape, generator=gen)
    calibration = torch.rand(args.calibration, *shape, generator=gen).numpy()

    t0 = time.perf_counter()
    path = export_onnx(model, shape, work / f"{key}.onnx")
    export_s = time.perf_counter() - t0
    diff = check_export(model, path, inputs[:8], atol=1e-4, rtol=1e-4)
    t0 = time.perf_counter()
    int8 = quantize_int8(path, calibration, work / f"{key}.int8.onnx")
    quant_s = time.perf_counter() - t0
    x = inputs.numpy()
    fp_pred = OnnxClassifier(path, threads=1).scores(x).argmax(1)
    q_pred = OnnxClassifier(int8, threads=1).scores(x).argmax(1)

    out = {
        "input": list(shape),
        "weights": "random (untrained; timm pretrained=False)" if name == "timm" else "random (untrained)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "onnx_bytes": path.stat().st_size,
        "int8_bytes": int8.stat().st_size,
        "export_seconds": round(export_s, 2),
        "quantize_seconds": round(quant_s, 2),
        "max_abs_diff_torch_vs_ort": diff,
        "int8_quantized_ops": quantized_op_types(int8),
        "int8_argmax_agreement_with_float": round(float((fp_pred == q_pred).mean()), 4),
        "runs": [],
    }
    for threads in args.threads:
        before = loadavg()
        print(f"{key}: {threads} thread(s), {args.samples} samples (load average {before}) …", flush=True)
        run = compare_runtimes(model, path, inputs, batch_size=args.batch_size, warmup=args.warmup, threads=threads)
        q = time_onnx(OnnxClassifier(int8, threads=threads), x, args.batch_size, args.warmup)
        run["int8_seconds_per_1000_single"] = q["seconds_per_1000_single"]
        run["int8_seconds_per_1000_batched"] = q["seconds_per_1000_batched"]
        run["loadavg_before"], run["loadavg_after"] = before, loadavg()
        out["runs"].append(run)
    return out


def goals(results: dict) -> dict:
    checks: dict[str, object] = {}
    for key, res in results.items():
        for run in res["runs"]:
            t = run["threads"]
            checks[f"{key} {t}t: ORT single ≥ {GOAL_SPEEDUP_SINGLE:g}× faster than eager"] = \
                run["speedup_single"] >= GOAL_SPEEDUP_SINGLE
            for who, single, batched in (("eager", "eager_seconds_per_1000_single", "eager_seconds_per_1000_batched"),
                                         ("ORT", "seconds_per_1000_single", "seconds_per_1000_batched"),
                                         ("int8", "int8_seconds_per_1000_single", "int8_seconds_per_1000_batched")):
                checks[f"{key} {t}t: {who} batched not slower than one at a time"] = run[batched] <= run[single]
            if key == "mobilenetv2_100" and t == 2:
                checks[f"{key} 2t: ORT single ≤ {GOAL_MOBILENET_SINGLE_2_THREADS} s per 1000"] = \
                    run["seconds_per_1000_single"] <= GOAL_MOBILENET_SINGLE_2_THREADS
    return checks


def table(results: dict, batch_size: int) -> str:
    head = (f"{'model':<16} {'thr':>3} | {'eager 1':>8} {f'eager {batch_size}':>9} | {'ORT 1':>7} "
            f"{f'ORT {batch_size}':>7} | {'int8 1':>7} {f'int8 {batch_size}':>8} | {'ORT/eager 1':>11} | load avg")
    lines = ["seconds per 1000 images (1 = one at a time, "
             f"{batch_size} = batches of {batch_size}); random weights", head, "-" * len(head)]
    for key, res in results.items():
        for r in res["runs"]:
            lines.append(f"{key:<16} {r['threads']:>3} | {r['eager_seconds_per_1000_single']:>8.2f} "
                         f"{r['eager_seconds_per_1000_batched']:>9.2f} | {r['seconds_per_1000_single']:>7.2f} "
                         f"{r['seconds_per_1000_batched']:>7.2f} | {r['int8_seconds_per_1000_single']:>7.2f} "
                         f"{r['int8_seconds_per_1000_batched']:>8.2f} | {r['speedup_single']:>10.2f}× | "
                         f"{r['loadavg_before'][0]:.2f} → {r['loadavg_after'][0]:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=1000, help="random inputs timed per model (default 1000)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    ap.add_argument("--batch-size", type=int, default=8,
                    help="batch size of the batched runs (default 8: on this 2-core CPU, larger batches of "
                         "224-px images leave the caches and run slower per image)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--calibration", type=int, default=64, help="random images the int8 model is calibrated on")
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "onnx_inference.json")
    args = ap.parse_args(argv)
    if args.samples < 1:
        ap.error("--samples: at least 1")

    import onnx
    import onnxruntime
    import timm

    start = loadavg()
    print("random weights: MobileNetV2 (timm mobilenetv2_100, pretrained=False) and the Pinnacle DCNN are untrained; "
          "timings do not depend on the weights", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="genediag-onnx-bench-") as work:
        for key in args.models:
            results[key] = bench_model(key, args, Path(work))
    report = {
        "what": "eager PyTorch vs ONNX Runtime (float, static int8 QDQ) on the CPU, seconds per 1000 images, one "
                "at a time (batch 1 per call) and batched; measured in one process",
        "weights": "RANDOM: MobileNetV2 (timm mobilenetv2_100, pretrained=False) and the Pinnacle DCNN are untrained "
                   "(timings do not depend on the weights); the int8 model is calibrated on random images",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": start,
        "loadavg_end": loadavg(),
        "loadavg_note": "os.getloadavg() (1, 5, 15 min); the machine may be shared with other work, and runs taken "
                        "under load are slower and noisier",
        "settings": {"samples": args.samples, "threads": args.threads, "batch_size": args.batch_size,
                     "warmup": args.warmup, "calibration_images": args.calibration, "seed": args.seed},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "timm": timm.__version__, "numpy": np.__version__},
        "machine": machine_info(torch.device("cpu")),
        "models": results,
    }
    report["goals"] = goals(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    print()
    print(table(results, args.batch_size))
    print()
    for what, ok in report["goals"].items():
        print(f"  [{'x' if ok else ' '}] {what}")
    print(f"\nload average {start} at the start, {report['loadavg_end']} at the end; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
