import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from genediag.config import ConfigError
from genediag.data.ingest import IngestError, fit_square, ingest, load_ingested


def _broken_files(d, make_png):
    """Real broken inputs: truncated PNG, zero-byte file, a text file named .png, a too-small image."""
    good = make_png(d / "good.png", seed=1)
    data = good.read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("this is not an image\n")
    make_png(d / "tiny.png", seed=2, size=(4, 4))
    return good


def test_csv_manifest_quarantines_broken_files_and_counts_add_up(tmp_path, make_png):
    src = tmp_path / "src"
    _broken_files(src, make_png)
    make_png(src / "rgba.png", seed=3, mode="RGB")
    Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 200).save(src / "deep.png")
    rows = [("good.png", "1", "P1"), ("truncated.png", "1", "P1"), ("empty.png", "2", "P2"), ("notes.png", "2", "P2"),
            ("tiny.png", "2", "P2"), ("missing.png", "1", "P3"), ("rgba.png", "", "P3"), ("rgba.png", "X", "P3"),
            ("deep.png", "Y", "P4"), ("good.png", "1", "P5")]
    pd.DataFrame(rows, columns=["path", "label", "group_id"]).to_csv(src / "m.csv", index=False)
    out = tmp_path / "out"
    summary = ingest({"source": str(src / "m.csv"), "size": 32}, out)

    manifest, images = load_ingested(out)
    quarantine = pd.read_csv(out / "quarantine.csv")
    assert summary["input"] == len(rows) == len(manifest) + len(quarantine)
    assert sorted(manifest["label"]) == ["1", "X", "Y"]
    reasons = dict(zip(quarantine["path"].str.split("/").str[-1] + ":" + quarantine.index.astype(str), quarantine["reason"]))
    by_file = {k.split(":")[0]: v for k, v in reasons.items()}
    assert by_file["truncated.png"].startswith("cannot decode")
    assert by_file["empty.png"] == "empty file (0 bytes)"
    assert by_file["notes.png"].startswith("not an image")
    assert by_file["tiny.png"].startswith("too small")
    assert by_file["missing.png"] == "file not found"
    assert "missing label in manifest" in set(quarantine["reason"])
    assert any(r.startswith("duplicate of") for r in quarantine["reason"])
    assert images.shape == (3, 32, 32) and images.dtype == np.uint8
    deep = images[manifest.index[manifest["label"] == "Y"][0]]
    assert deep.min() == 0 and deep.max() == 255  # 16-bit rescaled to the full 8-bit range
    assert set(manifest.columns) >= {"path", "label", "group_id", "cell_id", "sha256", "width", "height"}
    assert json.loads((out / "summary.json").read_text())["quarantined"] == len(quarantine)


def test_folder_per_class_with_patient_subfolders(tmp_path, make_png):
    root = tmp_path / "tree"
    make_png(root / "1" / "P1" / "a.png", seed=1)
    make_png(root / "1" / "P2" / "b.png", seed=2)
    make_png(root / "X" / "c.png", seed=3)
    (root / "X" / "broken.png").write_bytes(b"\x89PNG\r\n")
    (root / "stray.png").write_bytes(b"")
    summary = ingest({"source": str(root), "size": 16}, tmp_path / "out")
    manifest, _ = load_ingested(tmp_path / "out")
    assert summary["input"] == 5 and summary["accepted"] == 3 and summary["quarantined"] == 2
    assert dict(zip(manifest["path"].str.split("/").str[-1], manifest["group_id"])) == {
        "a.png": "P1", "b.png": "P2", "c.png": "img:X/c.png"}


def test_cache_is_decoded_image_padded_to_square(tmp_path):
    arr = np.full((10, 40), 0, np.uint8)
    out = fit_square(arr, 20, "pad", 255)
    assert out.shape == (20, 20)
    assert (out[:7] == 255).all() and (out[8:12] == 0).all()
    assert fit_square(arr, 20, "stretch", 255).min() == 0


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(IngestError, match="source not found"):
        ingest({"source": str(tmp_path / "nope.csv")}, tmp_path / "o")
    (tmp_path / "m.csv").write_text("file,class\na.png,1\n")
    with pytest.raises(IngestError, match=r"lacks column\(s\) \['path', 'label'\]"):
        ingest({"source": str(tmp_path / "m.csv")}, tmp_path / "o")
    with pytest.raises(ConfigError, match="unknown key"):
        ingest({"source": str(tmp_path / "m.csv"), "sise": 3}, tmp_path / "o")
