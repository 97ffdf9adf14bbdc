"""What presets/chromosomenet_cpu.yaml would cost on this CPU, without running it: one measured training epoch of
two backbones, the model-only rates of all eight, and an estimate of the whole preset built from them.

    python benchmarks/chromosomenet_cpu_cost.py [--epoch-runs chromosomes24-mobilenetv2_100 chromosomes24-resnet50]

Needs the ingested chromosome dataset and its split (``dvc repro split@chromosomes``). Steps:

1. params.yaml with the preset merged (:func:`genediag.presets.deep_merge`, as ``genediag.presets apply`` does, in
   memory: params.yaml is not touched); every run the preset adds is resolved over its family.
2. For every backbone, on random inputs of the run's input shape (random weights; the time does not depend on
   them): the model-only training rate (:func:`genediag.training.trainer.model_only_rate`: forward + backward +
   step on one batch of ``fit.batch_size``, no data loading) and eager inference times (one image, and batches of
   ``fit.eval_batch_size``).
3. For the ``--epoch-runs``: :func:`genediag.training.run.train_run` for real on the dataset with ``fit.epochs: 1``
   (everything train@<run> does: load, cap, one epoch with validation, calibration, ONNX export and check) into a
   temporary folder; its wall time and fit.json's epoch seconds.
4. Estimate per run: train = epochs × (epoch seconds predicted from the model-only rate, scaled by the measured
   ratio epoch ÷ (train items ÷ model-only rate) of the epoch runs, their mean) + the epoch runs' mean fixed cost
   (train_run wall − its epoch); evaluate ≈ (test items + evidence.mc_passes × mc_items) × eager batched seconds per
   image (ONNX Runtime is faster than eager for the test pass, so this leans high); benchmark ≈ 1000 × 2 × eager
   one-at-a-time + 1000 × 2 × eager batched per image (eager and the deployed path; leans high the same way).
   Early stopping (patience 5) can only shorten training, so the estimate is for the full epoch budget.

Writes ``benchmarks/chromosomenet_cpu_cost.json`` (with the load average beside every timing) and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's genediag, not another installed one
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import yaml  # noqa: E402

from genediag.evaluation.benchmark import loadavg, machine_info, resolve_threads  # noqa: E402


def merged_params(params: Path, preset: Path) -> tuple[dict, list[str]]:
    from genediag.presets import META_KEY, deep_merge

    base = yaml.load(params.read_text(), Loader=yaml.CSafeLoader)
    over = yaml.load(preset.read_text(), Loader=yaml.CSafeLoader)
    over.pop(META_KEY, None)
    runs = list((over.get("chromosomes") or {}).get("runs") or {})
    return deep_merge(copy.deepcopy(base), over), runs


def eager_times(model: nn.Module, shape: tuple[int, ...], batch: int, threads: int) -> dict:
    """Eager seconds per image, one at a time (20 calls) and in one batch of `batch` (after a warm-up)."""
    torch.set_num_threads(threads)
    model = model.eval()
    x1 = torch.rand(1, *shape)
    xb = torch.rand(batch, *shape)
    with torch.inference_mode():
        for _ in range(3):
            model(x1)
        t0 = time.perf_counter()
        for _ in range(20):
            model(x1)
        single = (time.perf_counter() - t0) / 20
        model(xb)
        t0 = time.perf_counter()
        model(xb)
        batched = (time.perf_counter() - t0) / batch
    return {"eager_single_s_per_image": round(single, 5), "eager_batched_s_per_image": round(batched, 5)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", type=Path, default=ROOT / "presets" / "chromosomenet_cpu.yaml")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "ingested" / "chromosomes")
    ap.add_argument("--split", type=Path, default=ROOT / "data" / "splits" / "chromosomes.csv")
    ap.add_argument("--epoch-runs", nargs="+", default=["chromosomes24-mobilenetv2_100", "chromosomes24-resnet50"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "chromosomenet_cpu_cost.json")
    args = ap.parse_args(argv)

    from genediag.models import create_model
    from genediag.schema import EVIDENCE, resolve_run, validate
    from genediag.training.losses import create_loss
    from genediag.training.run import train_run
    from genediag.training.trainer import model_only_rate

    params, runs = merged_params(args.params, args.preset)
    section = params["chromosomes"]
    evidence = validate(params.get("evidence") or {}, EVIDENCE, "evidence")
    start = loadavg()
    print(f"{len(runs)} runs of {args.preset.name}; load average {start}", flush=True)
    per_run: dict[str, dict] = {}
    for run in runs:
        cfg = resolve_run("chromosomes", run, section)
        threads = resolve_threads(cfg["fit"]["threads"])
        torch.set_num_threads(threads)
        arch = dict(cfg["arch"])
        arch["pretrained"] = False   # timing only: random weights, no file needed
        torch.manual_seed(0)
        model = create_model(arch.pop("name"), num_classes=24, in_chans=1, img_size=cfg["input_size"], **arch)
        shape = (1, cfg["input_size"], cfg["input_size"])
        load = loadavg()
        crit = create_loss(cfg["fit"]["loss"])
        rate = model_only_rate(model, crit, (torch.rand(*shape), torch.tensor(0)), torch.device("cpu"),
                               cfg["fit"]["batch_size"], batches=5, budget_seconds=8.0)
        inf = eager_times(model, shape, cfg["fit"]["eval_batch_size"], threads)
        per_run[run] = {"model": cfg["model"], "pretrained": cfg["arch"].get("pretrained", False),
                        "parameters": sum(p.numel() for p in model.parameters()), "threads": threads,
                        "epochs": cfg["fit"]["epochs"], "batch_size": cfg["fit"]["batch_size"],
                        "caps": cfg["caps"], "input": list(shape), "model_only_images_per_second": rate, **inf,
                        "loadavg_before": load, "loadavg_after": loadavg()}
        print(f"  {run}: {per_run[run]['parameters'] / 1e6:.1f} M params, model-only {rate} img/s, eager "
              f"{inf['eager_single_s_per_image'] * 1000:.1f} ms one / {inf['eager_batched_s_per_image'] * 1000:.2f} "
              f"ms batched per image (load {load[0] if load else '?'})", flush=True)
        del model

    epochs_measured: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="genediag-cpu-cost-") as work:
        for run in args.epoch_runs:
            cfg = resolve_run("chromosomes", run, section)
            cfg["fit"]["epochs"] = 1
            load = loadavg()
            print(f"one epoch of {run} for real (load {load}) …", flush=True)
            t0 = time.perf_counter()
            train_run(run, cfg, args.data, args.split, Path(work) / "models" / run, Path(work) / "plots" / run,
                      resume_root=None)
            wall = time.perf_counter() - t0
            fit = json.loads((Path(work) / "models" / run / "fit.json").read_text())
            epochs_measured[run] = {"train_run_seconds": round(wall, 1), "epoch_seconds": fit["epoch_seconds"][0],
                                    "items": fit["items"], "train_images_per_second": fit["train_images_per_second"],
                                    "model_only_images_per_second_in_run": fit["model_only_images_per_second"],
                                    "loadavg_before": load, "loadavg_after": loadavg()}
            print(f"  {run}: train_run {wall:.0f} s, epoch {fit['epoch_seconds'][0]:.0f} s, items {fit['items']}",
                  flush=True)

    # the estimate
    ratios, fixed = [], []
    for run, m in epochs_measured.items():
        ideal = m["items"]["train"] / per_run[run]["model_only_images_per_second"]
        ratios.append(m["epoch_seconds"] / ideal)
        fixed.append(m["train_run_seconds"] - m["epoch_seconds"])
    k, overhead = statistics.fmean(ratios), statistics.fmean(fixed)
    items = next(iter(epochs_measured.values()))["items"]
    from genediag.data.datasets import load_split_data

    _, table, _ = load_split_data(args.data, args.split, resolve_run("chromosomes", runs[0], section)["classes"])
    n_test = int(((table["split"] == "test") & (table["target"] >= 0)).sum())
    mc = int(evidence["mc_passes"]) * int(evidence["mc_items"])
    total = 0.0
    for run, r in per_run.items():
        epoch = k * items["train"] / r["model_only_images_per_second"]
        train = r["epochs"] * epoch + overhead
        evaluate = (n_test + mc) * r["eager_batched_s_per_image"]
        bench = 1000 * 2 * (r["eager_single_s_per_image"] + r["eager_batched_s_per_image"])
        r["estimate_seconds"] = {"epoch": round(epoch, 1), "train": round(train, 1), "evaluate": round(evaluate, 1),
                                 "benchmark": round(bench, 1), "total": round(train + evaluate + bench, 1)}
        total += train + evaluate + bench
    report = {
        "what": f"cost of {args.preset.relative_to(ROOT)} on this machine, estimated from measurements (not run)",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": start, "loadavg_end": loadavg(),
        "machine": machine_info("cpu"),
        "train_items": items, "test_items": n_test, "mc_dropout_images": mc,
        "epoch_over_model_only": [round(v, 3) for v in ratios], "fixed_seconds_per_run": [round(v, 1) for v in fixed],
        "epochs_measured": epochs_measured,
        "runs": per_run,
        "estimate_total_seconds": round(total, 0),
        "estimate_total_hours": round(total / 3600, 2),
        "assumptions": "full epoch budget (early stopping can only shorten it); evaluate and benchmark from eager "
                       "batched/single times (the deployed ONNX Runtime path is faster: the estimate leans high); "
                       "the machine's load during the measurement carries into the estimate (see loadavg fields)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    print(f"\n{'run':<36} {'img/s':>7} {'epoch s':>8} {'train s':>8} {'eval s':>7} {'bench s':>8} {'total s':>8}")
    for run, r in per_run.items():
        e = r["estimate_seconds"]
        print(f"{run:<36} {r['model_only_images_per_second']:>7} {e['epoch']:>8} {e['train']:>8} {e['evaluate']:>7} "
              f"{e['benchmark']:>8} {e['total']:>8}")
    print(f"total ≈ {total / 3600:.2f} h (epoch ÷ model-only ratios {report['epoch_over_model_only']}, fixed "
          f"{report['fixed_seconds_per_run']} s per run); load {start} → {report['loadavg_end']}; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
