"""reports/index.html is built from whatever reports, metrics, plots and model cards exist; model cards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genediag.reports.html import build_html_report, markdown_to_html, read_tsv_series
from genediag.reports.model_card import model_card, write_model_card

ROOT = Path(__file__).resolve().parents[2]
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a2dd2cc90000000049454e44ae426082")


def make_outputs(root: Path) -> None:
    """A workspace as the pipeline leaves it: reports, headline metrics with CIs, evidence plots, curves, a card."""
    (root / "reports" / "figures" / "chromosomes").mkdir(parents=True)
    (root / "reports" / "figures" / "chromosomes" / "confusion.png").write_bytes(PNG)
    (root / "reports" / "figures" / "synthetic_karyogram.png").write_bytes(PNG)
    (root / "reports" / "chromosomes.md").write_text(
        "# Chromosome classification (synthetic cohort)\n\n> **Synthetic data.**\n\n"
        "| Model | Accuracy |\n| :--- | ---: |\n| dcnn | 0.9507 |\n\n"
        "![Confusion](figures/chromosomes/confusion.png)\n\n"
        "See [the metrics](../metrics/chromosomes/chromosomes24-dcnn.json).\n")
    (root / "reports" / "faces.md").write_text("# Face photos\n\nNo model yet.\n")
    m = root / "metrics"
    (m / "chromosomes").mkdir(parents=True)
    (m / "chromosomes" / "chromosomes24-dcnn.json").write_text(json.dumps(
        {"task": "chromosomes24", "model": "dcnn", "split": "test", "dataset": "chromosomes", "synthetic": True,
         "n": 730, "patients": 9, "accuracy": 0.950685, "macro_f1": 0.948409, "best_epoch": 10,
         "ci95": {"accuracy": [0.931, 0.967], "macro_f1": [0.925, 0.965]}, "per_class_accuracy": {"1": 1.0, "2": 0.9,
                                                                                                   "3": 0.95}}))
    (m / "chromosomes" / "chromosomes24-dcnn.seeds.json").write_text(json.dumps(
        {"summary": {"accuracy": {"mean": 0.95, "sd": 0.004, "n": 3}}}))
    (m / "faces").mkdir()
    (m / "faces" / "faces-crossloss.json").write_text(json.dumps(
        {"task": "faces", "model": "crossloss", "stage": "finetune", "dataset": "my_clinic", "synthetic": False,
         "n": 40, "patients": 40, "accuracy": 0.5, "ci95": {"accuracy": [0.35, 0.65]}}))
    (m / "karyotyping").mkdir()
    (m / "karyotyping" / "best.json").write_text(json.dumps(
        {"dataset": "chromosomes", "synthetic": True, "selected_run": "chromosomes24-dcnn", "cells_with_truth": 16,
         "exact_karyotype_accuracy": 0.9375, "ci95": {"exact_karyotype_accuracy": [0.8, 1.0]}}))
    (m / "karyograms" / "bases").mkdir(parents=True)   # sub-folders are detail: not in the summary
    (m / "karyograms" / "bases" / "vgg16.json").write_text(json.dumps({"accuracy": 0.5}))
    curves = root / "plots" / "training" / "chromosomes24-dcnn" / "plots" / "metrics"
    for split, values in (("train", [3.1, 1.2, 0.4]), ("val", [3.0, 1.5, 0.9])):
        (curves / split).mkdir(parents=True)
        (curves / split / "loss.tsv").write_text("step\tloss\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(values)))
    (curves / "lr.tsv").write_text("step\tlr\n0\t0.001\n1\t0.003\n2\t0.0001\n")
    p = root / "plots" / "chromosomes"
    (p / "confusion").mkdir(parents=True)
    (p / "confusion" / "chromosomes24-dcnn.csv").write_text("actual,predicted\n1,1\n")
    (p / "reliability").mkdir()
    (p / "reliability" / "chromosomes24-dcnn.csv").write_text(
        "bin_lower,bin_upper,count,confidence,accuracy,calibration\n0.0,0.5,0,,,temperature\n"
        "0.5,1.0,10,0.8,0.75,temperature\n0.5,1.0,10,0.9,0.75,none\n")
    (p / "referral" / "chromosomes24-dcnn").mkdir(parents=True)
    (p / "referral" / "chromosomes24-dcnn" / "max_probability.csv").write_text(
        "referred_fraction,retained,accuracy,threshold\n0.0,10,0.9,0.3\n0.5,5,1.0,0.9\n")
    (root / "evaluation" / "chromosomes" / "chromosomes24-dcnn").mkdir(parents=True)
    (root / "evaluation" / "chromosomes" / "chromosomes24-dcnn" / "MODEL_CARD.md").write_text(
        "# Model card: chromosomes24-dcnn\n\n## Limits\n\n- synthetic\n")


def build(root: Path, out: Path, **kw) -> dict:
    return build_html_report(out, root / "reports", root / "metrics", root / "plots", root / "evaluation", **kw)


def test_page_opens_on_the_summary_then_figures_then_reports(tmp_path):
    make_outputs(tmp_path)
    out = tmp_path / "reports" / "index.html"
    counts = build(tmp_path, out, title="t")
    assert counts == {"summary_tables": 3, "reports": 2, "metrics_files": 5, "model_cards": 1, "training_runs": 1,
                      "figures": 1, "evidence_charts": 2, "plot_data_files": 3}
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "http://" not in page and "https://" not in page
    order = [page.index(x) for x in ("id='summary'", "id='figures'", "id='training'", "id='report-chromosomes'",
                                     "id='metrics'", "id='model-cards'")]
    assert order == sorted(order)
    summary = page[page.index("id='summary'"):page.index("id='figures'")]
    assert "chromosomes24 · dcnn" in summary and "0.951 [0.931, 0.967]" in summary
    assert "0.004 (3 seeds)" in summary                                         # seed spread
    assert "published (their data)" in summary and "0.935" in summary           # BioFace's cross-loss figure
    assert "<span class='badge synthetic'>synthetic</span>" in summary and "badge real" in summary
    assert "0.938 [0.800, 1.000]" in summary                                    # karyotyping exact karyotype
    assert "vgg16.json" not in summary                                          # sub-folders are not headline
    assert "href='#report-chromosomes'" in summary
    figures = page[page.index("id='figures'"):page.index("id='training'")]
    assert "figures/chromosomes/confusion.png" in figures and "reliability: chromosomes24-dcnn" in figures
    assert "referral: chromosomes24-dcnn" in figures and "synthetic karyogram (synthetic)" in figures
    assert '<td style="text-align:left">dcnn</td>' in page                    # Markdown table rendered
    assert "href=\"../metrics/chromosomes/chromosomes24-dcnn.json\"" in page  # link re-pointed from the .md
    raw = page[page.index("id='metrics'"):]
    assert raw.index("<details>") < raw.index("<table>")                       # raw tables start collapsed
    assert page.count("<polyline") == 3 + 3 + 1   # curves (loss train/val, lr); reliability (ideal, before, after); referral
    again = build(tmp_path, out, title="t")
    assert again == counts and out.read_text() == page                          # deterministic


def test_summary_is_in_the_first_screen_of_a_browser(tmp_path):
    """Rendered as a person sees it: headless Chromium at 1280×1000, the summary table's top within 1,000 px."""
    import shutil

    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium on this machine (Debian: apt-get install chromium); the first-screen "
                    "check did not run")
    make_outputs(tmp_path)
    out = tmp_path / "reports" / "index.html"
    build(tmp_path, out)
    probe = out.with_name("probe.html")   # the page plus a script that writes the layout into the DOM
    probe.write_text(out.read_text().replace("</body>", "<script>const t=document.querySelector('#summary table')"
                                             ".getBoundingClientRect();document.body.setAttribute('data-top',"
                                             "Math.round(t.top));document.body.setAttribute('data-bottom',"
                                             "Math.round(t.bottom));</script></body>"))
    res = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-500:]
    import re

    top = int(re.search(r'data-top="(\d+)"', res.stdout).group(1))
    bottom = int(re.search(r'data-bottom="(\d+)"', res.stdout).group(1))
    assert 0 < top < bottom <= 1000, (top, bottom)


def test_embedded_images_make_a_single_file(tmp_path):
    make_outputs(tmp_path)
    out = tmp_path / "handout" / "index.html"
    build(tmp_path, out, embed_images=True)
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 3 and "confusion.png'" not in page and "confusion.png\"" not in page


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
    params = {"reports": {"html": {"title": "Team results", "embed_images": False}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "stages" / "report_html.py"), "reports/index.html"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "reports" / "index.html").read_text()
    assert "<title>Team results</title>" in page and "dataset(s) chromosomes come from the embedded" in page
    assert "my_clinic" not in page.split("</header>")[0]   # a real dataset is not called synthetic

    params["reports"]["html"]["colour"] = "red"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "reports.html: unknown key(s) ['colour']" in bad.stderr, bad.stderr
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
    cfg = {"task": "chromosomes24", "model": "dcnn", "dataset": "chromosomes", "classes": "normal24",
           "arch": {"name": "pinnacle_dcnn", "dropout": 0.3}, "input_size": 64, "invert": True, "augment": [],
           "fit": {"epochs": 10, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.003}, "seed": 0}}
    metrics = {"split": "test", "n": 14, "accuracy": 0.857143, "macro_f1": 0.8, "macro_specificity": 0.99,
               "ci95": {"accuracy": [0.6, 1.0]}, "ece": 0.02, "ece_uncalibrated": 0.09, "temperature": 1.4,
               "per_class_accuracy": {"1": 1.0, "2": 0.5, "X": 0.75}}
    meta = {"dataset": "chromosomes", "synthetic": True, "temperature": 1.4, "input": {"kind": "chromosome_crop"},
            "fit": {"best_epoch": 3, "epochs_run": 4}}
    path = write_model_card("r", cfg, metrics, meta, tmp_path / "evaluation" / "r" / "MODEL_CARD.md", data_dir=data,
                            n_parameters=1234)
    card = path.read_text()
    assert card == model_card("r", cfg, metrics, meta, data_dir=data, n_parameters=1234)
    for section in ("## Model", "## Data", "## Training", "## Test metrics (synthetic)", "## Intended use",
                    "## Limits"):
        assert section in card, section
    assert "# Model card: r (synthetic)" in card and "synthetic cohort" in card
    assert "100 inputs = 98 accepted + 2 quarantined; 7 patients" in card
    assert "| Accuracy | 0.8571 | [0.600, 1.000] |" in card and "0.09 before and 0.02 after" in card and "`2` 0.500, `X` 0.750, `1` 1.000" in card
    assert "lr=0.003" in card and "10 / 4 / 3" in card and "1,234" in card
    assert "Not a medical device" in card and "genediag predict --run r" in card
