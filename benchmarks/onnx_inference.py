"""Eager PyTorch against ONNX Runtime (float and static int8) on the CPU, one image at a time and in batches.

    python benchmarks/onnx_inference.py [--samples 1000] [--threads 1 2] [--batch-size 8] [--out FILE]

Models: timm ``mobilenetv2_100`` at 3×224×224 and the Pinnacle DCNN at 1×64×64, both with RANDOM weights (no
trained checkpoint or ImageNet weights are needed: the time of a forward pass does not depend on the weight
values; the int8 model is calibrated on random images, so its argmax agreement with the float model is reported
but says little about a trained model's). For each model and thread count, in one process:
:func:`genediag.evaluation.benchmark.measure_inference` (what the ``benchmark@<run>`` stage runs on trained runs:
eager and ORT seconds per 1000 images, one at a time = batch 1 per call over every input, and batched; their argmax
agreement) and the int8 model's ORT times. Writes a JSON file (default ``benchmarks/onnx_inference.json``) with the
machine, the load average before and after each run (the machine may be shared with other work: timings taken
under load are slower and noisier) and prints a table.

It also writes the MobileNetV2 @224 row that the chromosome report shows beside ChromosomeNet's InferenceTime
(8.6 s per 1000 one at a time, MobileNetV2 on a GPU): ``benchmarks/inference/mobilenetv2_100-224.json``, in the
format of the ``benchmark@<run>`` files (``"task": "reference"``), measured with ``--reference-threads`` threads
(default 2: the issue's goal is on 2 CPU cores). Random weights: no trained MobileNetV2 exists in this repository
(the CPU preset presets/chromosomenet_cpu.yaml has not been run), and no labels apply, so ``accuracy_delta`` is
null and ``argmax_agreement`` says how often ORT and torch pick the same class.
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
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # as stages/_common.py and the Makefile set it (before torch)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from genediag.evaluation.benchmark import (PAPER_MOBILENETV2_SINGLE, loadavg, machine_info,  # noqa: E402
                                           measure_inference)
from genediag.models import create_model  # noqa: E402
from genediag.models.export import (OnnxClassifier, check_export, export_onnx, quantize_int8,  # noqa: E402
                                    quantized_op_types, time_onnx)

MODELS = {
    "mobilenetv2_100": dict(name="timm", model_name="mobilenetv2_100", pretrained=False, in_chans=3, img_size=224,
                            num_classes=24),
    "pinnacle_dcnn": dict(name="pinnacle_dcnn", in_chans=1, img_size=64, num_classes=24),
}
REFERENCE = "mobilenetv2_100"
REFERENCE_JSON = ROOT / "benchmarks" / "inference" / "mobilenetv2_100-224.json"
COMPARE_ON = 200   # inputs the argmax agreement of ORT and torch is computed on


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
        print(f"{key}: {threads} thread(s), {args.samples} samples (load average {loadavg()}) …", flush=True)
        run = measure_inference(model, path, inputs, None, args.batch_size, args.warmup, threads,
                                compare_on=COMPARE_ON)
        q = time_onnx(OnnxClassifier(int8, threads=threads), x, args.batch_size, args.warmup)
        run["int8_seconds_per_1000_single"] = q["seconds_per_1000_single"]
        run["int8_seconds_per_1000_batched"] = q["seconds_per_1000_batched"]
        run["int8_loadavg_after"] = loadavg()
        out["runs"].append(run)
    return out


def reference_json(res: dict, threads: int, batch_size: int) -> dict:
    """The MobileNetV2 @224 run in the format of benchmarks/inference/<run>.json, shown beside chromosomes24."""
    run = next(r for r in res["runs"] if r["threads"] == threads)
    run = {k: v for k, v in run.items() if not k.startswith("int8")}
    goals = dict(run.pop("goals"))
    goals[f"MobileNetV2@224 deployed one at a time ≤ {PAPER_MOBILENETV2_SINGLE:g} s / 1000 on {threads} thread(s)"] = \
        run["seconds_per_1000_single"] <= PAPER_MOBILENETV2_SINGLE
    return {
        "task": "reference", "beside": ["chromosomes24"], "model": REFERENCE, "run": "reference-mobilenetv2_100-224",
        "weights": res["weights"] + "; random inputs", "weights_short": "random weights, 224 px",
        "deployed": "ONNX Runtime, CPUExecutionProvider (float32)", "eager": "PyTorch eager, CPU, inference_mode",
        "input": res["input"], "parameters": res["parameters"], **run, "goals": goals,
        "published_seconds_per_1000_single": PAPER_MOBILENETV2_SINGLE,
        "published_note": (f"ChromosomeNet's InferenceTime of MobileNetV2, {PAPER_MOBILENETV2_SINGLE:g} s per 1000 "
                           "samples one at a time on an RTX 2080 Ti GPU (the figure quoted in the speed issue); "
                           f"ours: random weights, 3×224×224 inputs, {threads} CPU thread(s), batch {batch_size} for "
                           "the batched column, written by benchmarks/onnx_inference.py."),
        "machine": machine_info(torch.device("cpu")),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def goals(results: dict) -> dict:
    checks: dict[str, object] = {}
    for key, res in results.items():
        for run in res["runs"]:
            t = run["threads"]
            for what, ok in run["goals"].items():
                if ok is not None:
                    checks[f"{key} {t}t: {what}"] = ok
            checks[f"{key} {t}t: int8 batched not slower than one at a time"] = \
                run["int8_seconds_per_1000_batched"] <= run["int8_seconds_per_1000_single"]
            if key == REFERENCE and t == 2:
                checks[f"{key} 2t: ORT single ≤ {PAPER_MOBILENETV2_SINGLE:g} s per 1000"] = \
                    run["seconds_per_1000_single"] <= PAPER_MOBILENETV2_SINGLE
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
                         f"{r['loadavg_before'][0]:.2f} → {r['loadavg_after'][0]:.2f}"
                         f" ({r['argmax_agreement']:.0%} agree)")
    return "\n".join(lines)


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


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
    ap.add_argument("--reference-threads", type=int, default=2,
                    help="thread count of the MobileNetV2 @224 reference row (default 2; 0: no reference file)")
    ap.add_argument("--reference-out", type=Path, default=REFERENCE_JSON)
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
    write_json(args.out, report)
    if args.reference_threads and REFERENCE in results and args.reference_threads in args.threads:
        write_json(args.reference_out, reference_json(results[REFERENCE], args.reference_threads, args.batch_size))
        print(f"reference row written: {args.reference_out}")
    print()
    print(table(results, args.batch_size))
    print()
    for what, ok in report["goals"].items():
        print(f"  [{'x' if ok else ' '}] {what}")
    print(f"\nload average {start} at the start, {report['loadavg_end']} at the end; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
