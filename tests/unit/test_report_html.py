"""reports/index.html is built from whatever reports, metrics, plots and model cards exist; model cards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from genediag.reports.html import build_html_report, markdown_to_html, read_tsv_series
from genediag.reports.model_card import model_card, write_model_card

ROOT = Path(__file__).resolve().parents[1]
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a2dd2cc90000000049454e44ae426082")


def make_outputs(root: Path) -> None:
    """A workspace as two branches would leave it: two Markdown reports, metrics, curves, a card, figures."""
    (root / "reports" / "figures" / "chromosomes").mkdir(parents=True)
    (root / "reports" / "figures" / "chromosomes" / "confusion.png").write_bytes(PNG)
    (root / "reports" / "figures" / "orphan.png").write_bytes(PNG)
    (root / "reports" / "chromosomes.md").write_text(
        "# Chromosome classification (synthetic cohort)\n\n> **Synthetic data.**\n\n"
        "| Model | Accuracy |\n| :--- | ---: |\n| dcnn | 0.9507 |\n\n"
        "![Confusion](figures/chromosomes/confusion.png)\n\nSee [the metrics](../metrics/chromosomes24/dcnn.json).\n")
    (root / "reports" / "faces.md").write_text("# Face photos\n\nNo model yet.\n")
    (root / "metrics" / "chromosomes24").mkdir(parents=True)
    (root / "metrics" / "chromosomes24" / "dcnn.json").write_text(json.dumps(
        {"task": "chromosomes24", "model": "dcnn", "split": "test", "dataset": "chromosomes", "n": 730,
         "accuracy": 0.950685, "macro_f1": 0.948409, "best_epoch": 10, "per_class_accuracy": {"1": 1.0}}))
    (root / "metrics" / "karyotyping").mkdir()
    (root / "metrics" / "karyotyping" / "run.json").write_text(json.dumps(
        {"dataset": "other", "synthetic": True, "karyotype_accuracy": 1.0, "cells": 16}))
    curves = root / "plots" / "training" / "chromosomes24-dcnn" / "plots" / "metrics"
    for split, values in (("train", [3.1, 1.2, 0.4]), ("val", [3.0, 1.5, 0.9])):
        (curves / split).mkdir(parents=True)
        (curves / split / "loss.tsv").write_text("step\tloss\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(values)))
    (curves / "lr.tsv").write_text("step\tlr\n0\t0.001\n1\t0.003\n2\t0.0001\n")
    (root / "plots" / "confusion" / "chromosomes24").mkdir(parents=True)
    (root / "plots" / "confusion" / "chromosomes24" / "dcnn.csv").write_text("actual,predicted\n1,1\n")
    (root / "evaluation" / "chromosomes24-dcnn").mkdir(parents=True)
    (root / "evaluation" / "chromosomes24-dcnn" / "MODEL_CARD.md").write_text("# Model card: chromosomes24-dcnn\n\n"
                                                                              "## Limits\n\n- synthetic\n")


def test_page_collects_every_report_metric_curve_card_and_figure(tmp_path):
    make_outputs(tmp_path)
    out = tmp_path / "reports" / "index.html"
    counts = build_html_report(out, tmp_path / "reports", tmp_path / "metrics", tmp_path / "plots",
                               tmp_path / "evaluation", title="t", synthetic_datasets=["chromosomes"])
    assert counts == {"reports": 2, "metrics_files": 2, "model_cards": 1, "training_runs": 1,
                      "plot_data_files": 1, "other_figures": 1}
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "http://" not in page and "https://" not in page
    for text in ("Chromosome classification (synthetic cohort)", "Face photos", "Model card: chromosomes24-dcnn",
                 "chromosomes24-dcnn", "<svg", "0.9507", "karyotype_accuracy", "(synthetic)"):
        assert text in page, text
    assert '<td style="text-align:left">dcnn</td>' in page                    # Markdown table rendered
    assert "src=\"figures/chromosomes/confusion.png\"" in page                 # image beside the page
    assert "href=\"../metrics/chromosomes24/dcnn.json\"" in page               # link re-pointed from the .md
    assert "href='../plots/confusion/chromosomes24/dcnn.csv'" in page
    assert "figures/orphan.png" in page                                         # a figure no report shows
    assert page.count("<polyline") == 3                                         # loss train + val, lr
    # other data files are untouched and the output is deterministic
    again = build_html_report(out, tmp_path / "reports", tmp_path / "metrics", tmp_path / "plots",
                              tmp_path / "evaluation", title="t", synthetic_datasets=["chromosomes"])
    assert again == counts and out.read_text() == page


def test_embedded_images_make_a_single_file(tmp_path):
    make_outputs(tmp_path)
    out = tmp_path / "handout" / "index.html"
    build_html_report(out, tmp_path / "reports", tmp_path / "metrics", tmp_path / "plots", tmp_path / "evaluation",
                      embed_images=True)
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 2 and "confusion.png\"" not in page


def test_markdown_links_are_repointed_and_absolute_urls_kept(tmp_path):
    src = tmp_path / "a" / "b" / "card.md"
    html = markdown_to_html("[x](../c.txt) [y](https://example.org) ![i](i.png) [z](#top)", src, tmp_path / "a")
    assert 'href="c.txt"' in html and 'href="https://example.org"' in html
    assert 'src="b/i.png"' in html and 'href="#top"' in html


def test_dvclive_tsv_reader(tmp_path):
    path = tmp_path / "loss.tsv"
    path.write_text("timestamp\tstep\tloss\n1\t0\t2.5\n2\t1\tnan\n3\t2\t1.0\n")
    assert read_tsv_series(path) == ("loss", [(0.0, 2.5), (2.0, 1.0)])


def test_stage_script_builds_the_page_from_params(tmp_path):
    make_outputs(tmp_path)
    params = {"ingest": {"chromosomes": {"source": "data/synthetic/chromosomes/manifest.csv"},
                         "faces": {"source": "/data/private/faces"}},
              "report_html": {"title": "Team results", "embed_images": False}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, str(ROOT / "stages" / "report_html.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "reports" / "index.html").read_text()
    assert "<title>Team results</title>" in page and "dataset(s) chromosomes come from the embedded" in page

    params["report_html"]["colour"] = "red"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad = subprocess.run([sys.executable, str(ROOT / "stages" / "report_html.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "report_html: unknown key(s) ['colour']" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_model_card_states_data_params_metrics_use_and_limits(tmp_path):
    data = tmp_path / "data"
    (data / "ingested" / "chromosomes").mkdir(parents=True)
    (data / "ingested" / "chromosomes" / "summary.json").write_text(json.dumps(
        {"source": "data/synthetic/chromosomes/manifest.csv", "input": 100, "accepted": 98, "quarantined": 2,
         "groups": 7, "mode": "L"}))
    (data / "splits").mkdir()
    (data / "splits" / "chromosomes.json").write_text(json.dumps(
        {"items": {"train": 70, "val": 14, "test": 14}, "groups": {"train": 5, "val": 1, "test": 1}}))
    (tmp_path / "models" / "r").mkdir(parents=True)
    (tmp_path / "models" / "r" / "fit.json").write_text(json.dumps({"best_epoch": 3, "epochs_run": 4}))
    cfg = {"task": "chromosomes24", "model": "dcnn", "dataset": "chromosomes", "classes": "normal24",
           "arch": {"name": "pinnacle_dcnn", "dropout": 0.3}, "input_size": 64, "invert": True, "augment": [],
           "fit": {"epochs": 10, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.003}, "seed": 0}}
    metrics = {"split": "test", "n": 14, "accuracy": 0.857143, "macro_f1": 0.8, "macro_specificity": 0.99,
               "per_class_accuracy": {"1": 1.0, "2": 0.5, "X": 0.75}}
    path = write_model_card("r", cfg, metrics, tmp_path / "evaluation" / "r" / "MODEL_CARD.md", data_dir=data,
                            models_dir=tmp_path / "models", n_parameters=1234)
    card = path.read_text()
    assert card == model_card("r", cfg, metrics, data_dir=data, models_dir=tmp_path / "models", n_parameters=1234)
    for section in ("## Model", "## Data", "## Training", "## Test metrics (synthetic)", "## Intended use",
                    "## Limits"):
        assert section in card, section
    assert "# Model card: r (synthetic)" in card and "synthetic cohort" in card
    assert "100 inputs = 98 accepted + 2 quarantined; 7 patients" in card
    assert "| Accuracy | 0.8571 |" in card and "`2` 0.500, `X` 0.750, `1` 1.000" in card
    assert "lr=0.003" in card and "10 / 4 / 3" in card and "1,234" in card
    assert "Not a medical device" in card and "genediag predict --run r" in card
