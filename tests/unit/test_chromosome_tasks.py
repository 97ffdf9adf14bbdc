"""The chromosome task family: training caps and class weights, the inference benchmark, the report's statistics
(Table 3/4 layout), and one binary Pinnacle task end to end (cohort → ingest → split → train → evaluate →
benchmark → report)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from genediag.config import ConfigError
from genediag.data.datasets import cap_per_class as cap_train_per_class
from genediag.evaluation.benchmark import benchmark_inputs, goals, resolve_threads, usable_cpus
from genediag.models.export import latency_ms
from genediag.reports.chromosome_family import (
    accuracy_quartiles,
    best_counts,
    binary_counts,
    per_class_rows,
    positive_class,
)
from genediag.schema import BENCHMARK, resolve_run, validate
from genediag.training.losses import create_loss
from genediag.training.run import balanced_class_weights


def resolve_benchmark_config(cfg):
    return validate(cfg, BENCHMARK, "benchmark.<run>")


def _table():
    split = ["train"] * 10 + ["val"] * 4 + ["test"] * 3 + ["train"] * 2
    target = [0] * 6 + [1] * 4 + [0, 0, 1, 1] + [0, 1, 1] + [-1, -1]
    return pd.DataFrame({"index": range(len(split)), "split": split, "target": target})


def test_cap_train_per_class_is_seeded_and_leaves_val_test_alone():
    t = _table()
    a, b = cap_train_per_class(t, 3, seed=0), cap_train_per_class(t, 3, seed=0)
    assert a.equals(b)
    train = a[(a["split"] == "train") & (a["target"] >= 0)]
    assert train["target"].value_counts().to_dict() == {0: 3, 1: 3}
    assert a[a["split"] != "train"].equals(t[t["split"] != "train"])
    assert (a["target"] == -1).sum() == 2  # rows outside the task are not the cap's business
    assert list(a.index) == sorted(a.index)  # order kept
    assert cap_train_per_class(t, None, 0) is t
    assert not cap_train_per_class(t, 3, seed=1).equals(a)  # another seed, another subsample
    v = cap_train_per_class(t, 1, seed=0, split="val")  # max_val_per_class
    assert v[v["split"] == "val"]["target"].value_counts().to_dict() == {0: 1, 1: 1}
    assert v[v["split"] != "val"].equals(t[t["split"] != "val"])
    with pytest.raises(ValueError, match="test"):
        cap_train_per_class(t, 1, seed=0, split="test")
    with pytest.raises(ConfigError, match=r"chromosomes\.runs\.r\.caps\.train: expected an integer >= 1"):
        resolve_run("chromosomes", "r", {"families": {"f": {"arch": {"name": "pinnacle_dcnn"}, "input_size": 32}},
                                         "runs": {"r": {"family": "f", "task": "t", "model": "m", "classes": "all",
                                                        "caps": {"train": 0}}}})


def test_balanced_class_weights_hand_computed():
    # counts 1 and 3: inverse 1 and 1/3, mean 2/3 → 1.5 and 0.5 (mean 1)
    assert balanced_class_weights(np.array([0, 1, 1, 1]), 2) == [1.5, 0.5]
    assert balanced_class_weights(np.array([0, 1, 2]), 3) == [1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="class index"):
        balanced_class_weights(np.array([0, 0]), 2)


def test_weighted_cross_entropy():
    logits = torch.tensor([[2.0, 0.5], [0.1, 1.0], [0.3, 0.2]])
    y = torch.tensor([0, 1, 1])
    loss = create_loss({"name": "cross_entropy", "weight": [1.5, 0.5], "label_smoothing": 0.0})
    expected = nn.functional.cross_entropy(logits, y, weight=torch.tensor([1.5, 0.5]))
    assert loss(logits, y).item() == pytest.approx(expected.item())
    # by hand: weighted mean of -log softmax
    nll = -torch.log_softmax(logits, 1)[torch.arange(3), y]
    w = torch.tensor([1.5, 0.5, 0.5])
    assert loss(logits, y).item() == pytest.approx(((w * nll).sum() / w.sum()).item())
    with pytest.raises(ConfigError, match="balanced"):
        create_loss({"name": "cross_entropy", "weight": "balanced"})


def test_benchmark_inputs_latency_and_goals():
    class DS:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.full((1, 4, 4), float(i)), i

    x = benchmark_inputs(DS(), 7)
    assert x.shape == (7, 1, 4, 4) and [int(v) for v in x[:, 0, 0, 0]] == [0, 1, 2, 0, 1, 2, 0]
    x2, y = benchmark_inputs(DS(), 5, labels=True)
    assert torch.equal(x2, x[:5]) and y.tolist() == [0, 1, 2, 0, 1]
    # nearest-rank p90 and the median of an even count, in ms
    assert latency_ms([0.004, 0.001, 0.002, 0.003]) == {"single_ms_median": 2.5, "single_ms_p90": 4.0}
    assert latency_ms([0.001] * 9 + [0.1]) == {"single_ms_median": 1.0, "single_ms_p90": 1.0}
    assert resolve_threads(0) == usable_cpus() and resolve_threads(1) == 1
    g = goals({"speedup_single": 3.2, "seconds_per_1000_single": 1.0, "seconds_per_1000_batched": 1.1,
               "eager_seconds_per_1000_single": 3.2, "eager_seconds_per_1000_batched": 2.0, "accuracy_delta": -0.01})
    assert list(g.values()) == [True, False, True, False]
    assert goals({"speedup_single": 1.0, "seconds_per_1000_single": 1.0, "seconds_per_1000_batched": 1.0,
                  "eager_seconds_per_1000_single": 1.0, "eager_seconds_per_1000_batched": 1.0,
                  "accuracy_delta": None})["|accuracy_delta| ≤ 0.005"] is None
    with pytest.raises(ConfigError, match=r"benchmark\.<run>\.samples: expected an integer >= 1"):
        resolve_benchmark_config({"samples": 0})
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_benchmark_config({"sample": 10})


def test_quartiles_and_best_counts():
    q = accuracy_quartiles([1.0, 0.5, 0.75, 0.25, float("nan")])
    assert q == {"min": 0.25, "q1": 0.4375, "median": 0.625, "q3": 0.8125, "iqr": 0.375, "max": 1.0}
    v = np.random.default_rng(0).random(24)
    q = accuracy_quartiles(v)
    assert q["q1"] == pytest.approx(np.percentile(v, 25)) and q["median"] == pytest.approx(np.median(v))
    per_model = {"a": {"1": 1.0, "2": 0.5, "3": 0.9}, "b": {"1": 1.0, "2": 0.7, "3": 0.8}}
    assert best_counts(per_model, ["1", "2", "3"]) == {"a": 2, "b": 2}  # a tie counts for both
    rows, counts = per_class_rows(per_model)
    assert rows[0] == ["1", "**1.0000**", "**1.0000**"] and rows[1] == ["2", 0.5, "**0.7000**"]
    assert rows[-2][0] == "**average**" and rows[-2][1] == pytest.approx(0.8) and rows[-1][1:] == [2, 2]


def test_binary_counts_and_positive_class():
    assert positive_class(["22", "der22"]) == "der22" and positive_class(["iXq", "X"]) == "iXq"
    k = binary_counts(["22", "22", "der22", "der22", "der22"], ["22", "der22", "der22", "der22", "22"], "der22")
    assert k == {"tp": 2, "fn": 1, "fp": 1, "tn": 1}


# ---------------------------------------------------------------------------------------------- end to end
TINY_COHORT = {"seed": 3, "normal_patients": 1, "abnormalities": ["t(9;22)(q34;q11.2)"], "patients_per_abnormality": 3,
               "cells_per_patient": {"normal": 1, "numerical": 1, "structural": 2}, "canvas": 64,
               "karyogram_size": [320, 240], "female_fraction": 0.0}
SECTION = {"families": {"dcnn": {
    "model": "dcnn", "arch": {"name": "pinnacle_dcnn", "channels": [8, 8, 8], "fc": [16, 16, 16], "dropout": 0.0},
    "input_size": 32, "invert": True, "caps": {"train": 3},
    "fit": {"epochs": 2, "batch_size": 4, "loss": {"name": "cross_entropy", "weight": "balanced"}, "device": "cpu",
            "optimizer": {"name": "adam", "lr": 0.01}, "channels_last": False}}},
    "runs": {"binary-der22-dcnn": {"family": "dcnn", "task": "binary-der22",
                                   "classes": {"22": ["22"], "der22": ["der22"]}}}}
EVIDENCE = {"bootstrap": 100, "seed": 0, "ece_bins": 15, "refer_below": 0.8, "mc_passes": 5, "mc_items": 20,
            "runtime": "onnx", "threads": 1}


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    from genediag.data.split import split_dataset
    from genediag.evaluation.benchmark import benchmark_run
    from genediag.evaluation.evaluate import evaluate_run
    from genediag.pipeline import ingest_dataset
    from genediag.schema import resolve_dataset
    from genediag.synthetic.cohort import generate_cohort
    from genediag.training.run import train_run

    root = tmp_path_factory.mktemp("family")
    generate_cohort(root / "synthetic", TINY_COHORT)
    ds = {"kind": "chromosome_crops", "source": str(root / "synthetic" / "chromosomes" / "manifest.csv"),
          "ingest": {"size": 32}, "split": {"ratios": {"train": 0.34, "val": 0.33, "test": 0.33}}}
    data = root / "data" / "ingested" / "chromosomes"
    split_csv = root / "data" / "splits" / "chromosomes.csv"
    ingest_dataset("chromosomes", ds, data, progress=False)
    split_dataset(data, split_csv, resolve_dataset("chromosomes", ds)["split"])
    run = "binary-der22-dcnn"
    cfg = resolve_run("chromosomes", run, SECTION)
    info = train_run(run, cfg, data, split_csv, root / "models" / run, root / "plots" / "training" / run,
                     resume_root=None)
    metrics = evaluate_run(root / "models" / run, data, split_csv, root / "metrics" / "chromosomes" / f"{run}.json",
                           root / "plots" / "chromosomes", root / "evaluation" / "chromosomes" / run, EVIDENCE)
    bench = benchmark_run(root / "models" / run, data, split_csv, root / "benchmarks" / "inference" / f"{run}.json",
                          {"samples": 20, "batch_size": 8, "warmup": 1, "threads": 1})
    return root, info, metrics, bench


def test_binary_run_trains_on_the_capped_weighted_task(binary_run):
    import yaml

    root, info, metrics, _ = binary_run
    fit = json.loads((root / "models" / "binary-der22-dcnn" / "fit.json").read_text())
    assert fit["classes"] == ["22", "der22"]
    assert fit["items"]["train"] <= 6  # at most 3 per class
    assert fit["train_images_per_second"] > 0 and fit["epoch_seconds"]
    args = yaml.safe_load((root / "models" / "binary-der22-dcnn" / "args.yaml").read_text())
    assert args["fit"]["loss"]["weight"] == "balanced" and args["run"] == "binary-der22-dcnn"
    from genediag.models.checkpoint import read_checkpoint

    ckpt = read_checkpoint(root / "models" / "binary-der22-dcnn" / "model.pt")
    w = ckpt["config"]["fit"]["loss"]["weight"]
    assert ckpt["input"]["cache"]["size"] == 32 and ckpt["input"]["kind"] == "chromosome_crop"
    split = pd.read_csv(root / "data" / "splits" / "chromosomes.csv", dtype=str)
    n_test = int(split[(split["split"] == "test") & split["label"].isin(["22", "der22"])].shape[0])
    assert metrics["n"] == n_test  # the test split is not capped
    assert set(metrics["per_class_accuracy"]) == {"22", "der22"}
    assert set(metrics["ci95"]) >= {"accuracy", "auc", "recall", "precision", "macro_f1"}
    assert 0 <= metrics["ece"] <= 1 and metrics["ood"]["available"]
    assert (root / "plots" / "chromosomes" / "referral" / "binary-der22-dcnn" / "max_probability.csv").is_file()
    assert w == "balanced" or isinstance(w, list)


def test_benchmark_file_is_outside_metrics(binary_run):
    root, _, _, bench = binary_run
    path = root / "benchmarks" / "inference" / "binary-der22-dcnn.json"
    saved = json.loads(path.read_text())
    assert saved["samples"] == 20 and saved["seconds_per_1000_single"] > 0 and saved == bench
    assert (saved["task"], saved["model"], saved["run"]) == ("binary-der22", "dcnn", "binary-der22-dcnn")
    assert saved["machine"]["torch_threads"] >= 1 and saved["input"] == [1, 32, 32]
    # eager torch and the deployed path (ONNX Runtime on model.onnx) in the same process, with the same threads
    for key in ("eager_seconds_per_1000_single", "eager_seconds_per_1000_batched", "seconds_per_1000_single",
                "seconds_per_1000_batched", "single_ms_median", "eager_single_ms_median"):
        assert saved[key] > 0, key
    assert saved["threads"] == 1 and saved["batch_size"] == 8
    assert saved["speedup_single"] == pytest.approx(
        saved["eager_seconds_per_1000_single"] / saved["seconds_per_1000_single"], rel=0.01)
    # the trained model served by ONNX Runtime predicts what torch predicts; accuracy on the distinct test items
    assert saved["argmax_agreement"] == 1.0 and saved["accuracy_delta"] == 0.0
    assert saved["compared_samples"] <= 20 and 0.0 <= saved["accuracy_eager"] <= 1.0
    assert saved["max_abs_score_diff"] < 1e-3
    assert len(saved["loadavg_before"]) == 3 and "load_average_1min" in saved["machine"]
    assert set(saved["goals"]) >= {"deployed batched not slower than one at a time"}
    metrics = json.loads((root / "metrics" / "chromosomes" / "binary-der22-dcnn.json").read_text())
    assert not any("seconds" in k for k in metrics)


def test_report_has_the_binary_table(binary_run):
    from genediag.reports.chromosomes import write_chromosome_report

    root, _, metrics, _ = binary_run
    out = write_chromosome_report(["binary-der22"], root / "data" / "ingested" / "chromosomes",
                                  root / "data" / "splits" / "chromosomes.json", root / "reports" / "chromosomes.md",
                                  metrics_dir=root / "metrics" / "chromosomes", plots_dir=root / "plots" / "chromosomes",
                                  karyotyping_metrics=root / "metrics" / "karyotyping",
                                  figures_dir=root / "reports" / "figures", cohort_figures_dir=root / "none",
                                  benchmarks_dir=root / "benchmarks" / "inference")
    text = out.read_text()
    assert "## Abnormal vs normal chromosome (binary tasks) (synthetic cohort)" in text
    assert "| der22 vs 22 | Pinnacle DCNN |" in text
    assert "Inference time (s / 1000 samples" in text and "fill from the paper" in text
    assert (root / "reports" / "figures" / "confusion_binary-der22_dcnn.png").is_file()


def test_inference_section_shows_eager_deployed_and_the_reference(tmp_path):
    from genediag.reports.chromosome_family import inference_section, load_references

    bench = {"task": "chromosomes24", "model": "dcnn", "parameters": 1.1e6, "input": [1, 64, 64], "threads": 2,
             "eager_seconds_per_1000_single": 3.0, "seconds_per_1000_single": 0.75, "speedup_single": 4.0,
             "eager_seconds_per_1000_batched": 1.5, "seconds_per_1000_batched": 0.5, "batch_size": 32,
             "accuracy_delta": -0.001, "loadavg_before": [0.5, 0.4, 0.3], "loadavg_after": [0.9, 0.5, 0.3],
             "machine": {"cpu": "X", "usable_cpus": 2}}
    ref = {**bench, "task": "reference", "model": "mobilenetv2_100", "beside": ["chromosomes24"],
           "weights_short": "random weights", "input": [3, 224, 224], "accuracy_delta": None,
           "published_seconds_per_1000_single": 8.6, "published_note": "8.6 s on a GPU"}
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    (tmp_path / "dcnn.json").write_text(json.dumps(bench))
    refs = load_references(tmp_path, "chromosomes24")
    assert [r["model"] for r in refs] == ["mobilenetv2_100"] and load_references(tmp_path, "chromosomes32") == []
    text = "\n".join(inference_section("chromosomes24", [{"model": "dcnn"}, {"model": "resnet50"}],
                                       {"dcnn": bench}, refs))
    dcnn = next(line for line in text.splitlines() if "(`dcnn`)" in line)
    assert "| 3.00 | 0.75 | 4.0× | 1.50 / 0.50 (batch 32) | -0.10 | 0.50 → 0.90 |" in dcnn
    assert "not measured" in next(line for line in text.splitlines() if "resnet50" in line)
    mob = next(line for line in text.splitlines() if line.startswith("| reference: MobileNetV2"))
    assert "random weights" in mob and "3×224×224" in mob and mob.rstrip(" |").endswith("8.6")
    assert "Reference row: 8.6 s on a GPU" in text
