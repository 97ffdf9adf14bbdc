"""Intra-op threads 1 against 2: ONNX Runtime inference and training (forward + backward + step), measured.

    python benchmarks/threads.py [--reps 3] [--out benchmarks/threads.json]

The pipeline's thread settings (``chromosomes.benchmark.<run>.threads``, ``evidence.threads``, the families'
``fit.threads`` in params.yaml) are taken from this file's result, not fixed by hand. Cases (random weights and
random inputs: the time of a forward / backward pass does not depend on the values):

- inference, ONNX Runtime (:class:`genediag.models.export.OnnxClassifier`, the deployed path of ``evaluate`` and
  ``benchmark``): seconds per 1000 images one at a time and in batches (:func:`~genediag.models.export.time_onnx`)
  for the Pinnacle DCNN (1×64×64), EfficientNet-Lite0 (3×64×64, the default timm run), SE-ResNet64 width 8
  (3×56×48, the face crops) and MobileNetV2 (3×224×224, ChromosomeNet's InferenceTime);
- training, model only (:func:`genediag.training.trainer.model_only_rate`: one fixed batch, forward + backward +
  optimiser step, no data loading): images per second of the DCNN (batch 64), EfficientNet-Lite0 at 64 px (batch
  32) and SE-ResNet64 width 8 (batch 16), the default families' settings.

Each case is measured ``--reps`` times per thread count in the order 1, 2, 2, 1, 1, 2, … (ABBA, so a load that
drifts during the run hits both counts alike), with the 1-minute load average recorded before every measurement.
The figure per thread count is the median; ``speedup_2_vs_1`` is median(2) / median(1) as a speed (> 1: two threads
faster). The choice per case: 2 threads when they are at least ``--min-gain`` (default 10 %) faster, else 1 (the
second core is then worth more to another process, e.g. a second seed). OMP_WAIT_POLICY=PASSIVE as in the stages.
The machine may be shared: under load two threads lose (a thread waits for a core another process holds), so the
load averages are part of the result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's genediag, not another installed one
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # as stages/_common.py and the Makefile set it

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from genediag.evaluation.benchmark import loadavg, machine_info  # noqa: E402
from genediag.models import create_model  # noqa: E402

MODELS = {   # name → (create_model kwargs, input shape C×H×W, training batch size)
    "pinnacle_dcnn": (dict(name="pinnacle_dcnn", in_chans=1, img_size=64, num_classes=24), (1, 64, 64), 64),
    "tf_efficientnet_lite0@64": (dict(name="timm", model_name="tf_efficientnet_lite0", pretrained=False, in_chans=3,
                                      img_size=64, num_classes=24), (3, 64, 64), 32),
    "se_resnet64_w8": (dict(name="se_resnet64", width=8, in_chans=3, img_size=56, num_classes=40), (3, 56, 48), 16),
    "mobilenetv2_100@224": (dict(name="timm", model_name="mobilenetv2_100", pretrained=False, in_chans=3,
                                 img_size=224, num_classes=24), (3, 224, 224), 8),
}
INFERENCE = ["pinnacle_dcnn", "tf_efficientnet_lite0@64", "se_resnet64_w8", "mobilenetv2_100@224"]
TRAINING = ["pinnacle_dcnn", "tf_efficientnet_lite0@64", "se_resnet64_w8"]


def build(key: str) -> tuple[nn.Module, tuple[int, int, int], int]:
    spec, shape, bs = MODELS[key]
    spec = dict(spec)
    torch.manual_seed(0)
    return create_model(spec.pop("name"), **spec).eval(), shape, bs


def abba(reps: int) -> list[int]:
    """Thread counts in the order 1, 2, 2, 1, 1, 2, … : `reps` of each."""
    order: list[int] = []
    for r in range(reps):
        order += [1, 2] if r % 2 == 0 else [2, 1]
    return order


def summarise(samples: dict[int, list[float]], higher_is_better: bool, min_gain: float) -> dict:
    """Medians per thread count, the speed ratio of 2 threads over 1 and the choice."""
    med = {t: statistics.median(v) for t, v in samples.items()}
    speed = (med[2] / med[1]) if higher_is_better else (med[1] / med[2])
    return {"median": {str(t): round(m, 4) for t, m in med.items()}, "speedup_2_vs_1": round(speed, 3),
            "choice": 2 if speed >= 1.0 + min_gain else 1}


def inference_case(key: str, args: argparse.Namespace, work: Path) -> dict:
    from genediag.models.export import OnnxClassifier, export_onnx, time_onnx

    model, shape, _ = build(key)
    path = export_onnx(model, shape, work / f"{key}.onnx")
    n = args.samples_224 if key.endswith("@224") else args.samples
    x = np.random.default_rng(0).random((n, *shape), dtype=np.float32)
    runs = []
    for t in abba(args.reps):
        load = loadavg()
        res = time_onnx(OnnxClassifier(path, threads=t), x, args.batch_size, warmup=5)
        runs.append({"threads": t, "loadavg_before": load, **res})
        print(f"  inference {key}: {t} thread(s): {res['seconds_per_1000_single']:.2f} s/1000 one at a time, "
              f"{res['seconds_per_1000_batched']:.2f} batched (load {load[0] if load else '?'})", flush=True)
    out = {"input": list(shape), "samples": n, "batch_size": args.batch_size, "runs": runs}
    for mode in ("single", "batched"):
        out[mode] = summarise({t: [r[f"seconds_per_1000_{mode}"] for r in runs if r["threads"] == t] for t in (1, 2)},
                              higher_is_better=False, min_gain=args.min_gain)
    # batch size of the batched path (evaluate, benchmark): seconds per 1000 in batches of each size, per thread count
    sizes: dict[str, dict[str, float]] = {}
    clfs = {t: OnnxClassifier(path, threads=t) for t in (1, 2)}
    for bs in args.batch_sizes:
        got: dict[int, list[float]] = {1: [], 2: []}
        for t in abba(args.reps):
            got[t].append(batched_seconds_per_1000(clfs[t], x, bs))
        sizes[str(bs)] = {str(t): round(statistics.median(v), 4) for t, v in got.items()}
    out["batch_sizes"] = sizes
    print(f"  inference {key}: s/1000 by batch size and threads {sizes}", flush=True)
    return out


def batched_seconds_per_1000(clf, x: np.ndarray, batch_size: int) -> float:
    import time

    clf.scores(x[:batch_size])   # warm-up at this shape
    t0 = time.perf_counter()
    for i in range(0, len(x), batch_size):
        clf.scores(x[i:i + batch_size])
    return (time.perf_counter() - t0) * 1000.0 / len(x)


def training_case(key: str, args: argparse.Namespace) -> dict:
    from genediag.training.trainer import model_only_rate

    model, shape, bs = build(key)
    example = (torch.rand(*shape), torch.tensor(0))
    criterion = nn.CrossEntropyLoss()
    before = torch.get_num_threads()
    runs = []
    try:
        for t in abba(args.reps):
            torch.set_num_threads(t)
            load = loadavg()
            rate = model_only_rate(model, criterion, example, torch.device("cpu"), bs, batches=args.train_batches,
                                   budget_seconds=args.train_budget)
            runs.append({"threads": t, "loadavg_before": load, "images_per_second": rate})
            print(f"  training {key}: {t} thread(s): {rate} img/s (batch {bs}; load {load[0] if load else '?'})",
                  flush=True)
    finally:
        torch.set_num_threads(before)
    return {"input": list(shape), "batch_size": bs, "runs": runs,
            **summarise({t: [r["images_per_second"] for r in runs if r["threads"] == t] for t in (1, 2)},
                        higher_is_better=True, min_gain=args.min_gain)}


def best_batch_size(inference: dict, threads: int) -> int | None:
    """The batch size with the lowest mean, over the models, of s/1000 relative to each model's best size."""
    scores: dict[str, list[float]] = {}
    for c in inference.values():
        by = {bs: v[str(threads)] for bs, v in c.get("batch_sizes", {}).items()}
        if not by:
            continue
        best = min(by.values())
        for bs, v in by.items():
            scores.setdefault(bs, []).append(v / best)
    return int(min(scores, key=lambda b: statistics.fmean(scores[b]))) if scores else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="measurements per thread count and case (default 3)")
    ap.add_argument("--samples", type=int, default=500, help="images per inference timing, 64-px models")
    ap.add_argument("--samples-224", type=int, default=200, help="images per inference timing, MobileNetV2@224")
    ap.add_argument("--batch-size", type=int, default=32, help="batch of the batched inference timing")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 256],
                    help="batch sizes of the batched-inference sweep")
    ap.add_argument("--train-batches", type=int, default=8, help="timed training batches (after one warm-up)")
    ap.add_argument("--train-budget", type=float, default=6.0, help="seconds of timed training work at most")
    ap.add_argument("--min-gain", type=float, default=0.10, help="2 threads chosen when ≥ this much faster")
    ap.add_argument("--only", nargs="+", choices=sorted(MODELS), help="these models only")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "threads.json")
    args = ap.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        ap.error("one CPU: nothing to compare")

    start = loadavg()
    print(f"threads 1 vs 2, {args.reps} rep(s) each, ABBA order; load average at the start {start}", flush=True)
    inference, training = {}, {}
    with tempfile.TemporaryDirectory(prefix="genediag-threads-") as work:
        for key in INFERENCE:
            if not args.only or key in args.only:
                inference[key] = inference_case(key, args, Path(work))
    for key in TRAINING:
        if not args.only or key in args.only:
            training[key] = training_case(key, args)

    def choose(cases: dict, part: str | None) -> int:
        picks = [(c[part] if part else c)["choice"] for c in cases.values()]
        return max(set(picks), key=picks.count) if picks else 0

    report = {
        "what": "intra-op threads 1 vs 2: ONNX Runtime inference (s / 1000 images, lower is better) and model-only "
                "training (images / s, higher is better); medians of --reps ABBA-ordered measurements",
        "weights": "random (untrained); random inputs",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": start, "loadavg_end": loadavg(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "env": {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "machine": machine_info("cpu"),
        "inference": inference,
        "training": training,
        "choice": {   # what params.yaml takes (the majority over the cases)
            "inference_single": choose(inference, "single"),
            "inference_batched": choose(inference, "batched"),
            "training": choose(training, None),
        },
    }
    report["choice"]["inference_batch_size"] = best_batch_size(inference, report["choice"]["inference_batched"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(args.out)

    print("\n{:<36} {:>10} {:>10} {:>8} {:>6}".format("case", "1 thread", "2 threads", "2 vs 1", "pick"))
    for key, c in inference.items():
        for mode in ("single", "batched"):
            s = c[mode]
            print(f"{'ORT ' + mode + ' ' + key:<36} {s['median']['1']:>10.3f} {s['median']['2']:>10.3f} "
                  f"{s['speedup_2_vs_1']:>7.2f}× {s['choice']:>6}")
    for key, c in training.items():
        print(f"{'train ' + key:<36} {c['median']['1']:>10.1f} {c['median']['2']:>10.1f} {c['speedup_2_vs_1']:>7.2f}× "
              f"{c['choice']:>6}")
    print(f"\nchoice {report['choice']}; load average {start} → {report['loadavg_end']}; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
