"""Ingest of good data: CSV and folder sources, what the manifest and summary record, the cache's resize modes,
the ``genediag ingest`` command. (Bad data: test_bad_inputs.py.)"""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from genediag.data.decode import fit_square
from genediag.data.ingest import load_ingested
from genediag.pipeline import ingest_dataset


def _png(path, value, size=(20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0]), 255, np.uint8)
    arr[5:-5, 5:-5] = value
    Image.fromarray(arr).save(path)
    return path


def test_csv_manifest_with_groups_cells_and_a_fixed_test_split(tmp_path):
    src = tmp_path / "src"
    rows = []
    for p in range(3):
        for c in range(2):
            for k, label in enumerate(("1", "2")):
                name = f"P{p}/c{c}_{label}.png"
                _png(src / name, 10 * p + 3 * c + k)
                rows.append({"path": name, "label": label, "patient": f"P{p}", "cell": f"P{p}-{c}",
                             "split": "test" if p == 2 else "", "stain": "G"})
    pd.DataFrame(rows).to_csv(src / "m.csv", index=False)
    cfg = {"kind": "chromosome_crops", "source": str(src / "m.csv"), "ingest": {"size": 16},
           "columns": {"group": "patient", "cell": "cell"}}
    summary = ingest_dataset("crops", cfg, tmp_path / "out", tmp_path / "review", progress=False)
    manifest, images = load_ingested(tmp_path / "out")
    assert summary["accepted"] == 12 and summary["groups"] == 3 and summary["group_by"] == "column"
    assert summary["synthetic"] is False and summary["kind"] == "chromosome_crops"
    assert summary["ingest"]["size"] == 16 and summary["image_shape"] == [16, 16]
    assert list(manifest["path"][:2]) == ["P0/c0_1.png", "P0/c0_2.png"]      # relative to the CSV's folder
    assert set(manifest.loc[manifest["group_id"] == "P2", "fixed_split"]) == {"test"}
    assert set(manifest.loc[manifest["group_id"] != "P2", "fixed_split"]) == {""}
    assert manifest["cell_id"].iloc[0] == "P0-0" and manifest["stain"].iloc[0] == "G"   # extra columns kept
    assert images.shape == (12, 16, 16) and images.dtype == np.uint8


def test_folder_tree_with_patient_subfolders(tmp_path):
    root = tmp_path / "tree"
    _png(root / "1" / "P1" / "a.png", 10)
    _png(root / "1" / "P2" / "b.png", 20)
    _png(root / "X" / "c.png", 30)
    cfg = {"kind": "chromosome_crops", "source": str(root), "ingest": {"size": 16}}
    summary = ingest_dataset("tree", cfg, tmp_path / "out", progress=False)
    manifest, _ = load_ingested(tmp_path / "out")
    assert dict(zip(manifest["path"], manifest["group_id"])) == {"1/P1/a.png": "P1", "1/P2/b.png": "P2",
                                                                 "X/c.png": "file:X/c.png"}
    assert summary["classes"] == {"1": 2, "X": 1}


def test_cache_resize_modes():
    arr = np.full((10, 40), 0, np.uint8)
    out = fit_square(arr, 20, "pad", 255)
    assert out.shape == (20, 20)
    assert (out[:7] == 255).all() and (out[8:12] == 0).all()
    assert fit_square(arr, 20, "stretch", 255).min() == 0
    small = fit_square(np.zeros((10, 4), np.uint8), 32, "preserve", 255, scale=2.0)   # size kept: 20×8 dark
    assert (small < 128).sum() == 20 * 8
    tall = fit_square(np.zeros((40, 4), np.uint8), 32, "preserve", 255, scale=2.0)    # shrunk only to fit
    assert (tall < 128).sum(0).max() == 32


def test_size_preserving_ingest_keeps_length_differences(tmp_path):
    src = tmp_path / "src"
    _png(src / "long.png", 0, size=(20, 60))
    _png(src / "short.png", 0, size=(20, 24))
    pd.DataFrame({"path": ["long.png", "short.png"], "label": ["1", "21"], "group_id": ["P1", "P2"]}).to_csv(
        src / "m.csv", index=False)
    base = {"kind": "chromosome_crops", "source": str(src / "m.csv")}
    ingest_dataset("pad", {**base, "ingest": {"size": 32}}, tmp_path / "pad", progress=False)
    ingest_dataset("keep", {**base, "ingest": {"size": 32, "resize": "preserve", "scale": 0.5}}, tmp_path / "keep",
                   progress=False)
    dark = lambda d: [(img < 128).sum() for img in load_ingested(d)[1]]  # noqa: E731
    pad, keep = dark(tmp_path / "pad"), dark(tmp_path / "keep")
    assert pad[1] / pad[0] > 0.6          # pad: every crop scaled to the canvas, the length difference mostly gone
    assert keep[1] / keep[0] < 0.5        # preserve: the short chromosome stays short


def test_genediag_ingest_command(tmp_path, capsys):
    from genediag.cli import main

    _png(tmp_path / "tree" / "1" / "a.png", 10)
    (tmp_path / "tree" / "1" / "b.png").write_bytes(b"")
    assert main(["ingest", "--source", str(tmp_path / "tree"), "--out", str(tmp_path / "check")]) == 0
    out = capsys.readouterr().out
    assert "2 inputs = 1 accepted + 1 quarantined" in out and "empty file" in out
    q = pd.read_csv(tmp_path / "check" / "quarantine.csv")
    assert list(q.columns) == ["path", "label", "reason"] and q["reason"].iloc[0] == "empty file (0 bytes)"
    assert json.loads((tmp_path / "check" / "summary.json").read_text())["input"] == 2
    assert main(["ingest", "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_params_check_command(tmp_path, capsys):
    from genediag.cli import main

    assert main(["params", "check", "params.yaml"]) == 0
    assert "valid" in capsys.readouterr().out
    (tmp_path / "p.yaml").write_text("datasets:\n  x: {kind: chromosome_crops, source: a.csv, ingest: {size: big}}\n")
    assert main(["params", "check", str(tmp_path / "p.yaml")]) == 2
    assert "datasets.x.ingest.size: expected an integer" in capsys.readouterr().err
