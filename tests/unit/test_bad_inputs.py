"""Bad input, misuse and faults: each gets a clear error or a quarantine row with its reason, and
``input == accepted + quarantined`` always holds. The README's reliability table lists these cases."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from genediag.config import ConfigError
from genediag.data.decode import DecodeError, Limits, decode_image, fit_square, load_image, read_file
from genediag.data.ingest import IngestError, load_ingested
from genediag.io import OutputError, write_bytes
from genediag.pipeline import ingest_dataset


def png(path: Path, seed: int = 0, size=(24, 32), mode: str = "L") -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0]) + ((3,) if mode == "RGB" else ()), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)
    return path


def run_csv(tmp_path: Path, rows: list[tuple], extra_cfg: dict | None = None, columns=("path", "label", "group_id"),
            review: Path | None = None, out: str = "out"):
    """Ingest `rows` as a CSV manifest in ``tmp_path/src`` into ``tmp_path/<out>``."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    pd.DataFrame(rows, columns=list(columns)).to_csv(src / "m.csv", index=False)
    cfg = {"kind": "chromosome_crops", "source": str(src / "m.csv"), "ingest": {"size": 16}, **(extra_cfg or {})}
    out = tmp_path / out
    summary = ingest_dataset("ds", cfg, out, review or tmp_path / "review", progress=False)
    quarantine = pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False)
    manifest, images = load_ingested(out)
    assert summary["input"] == len(rows) == len(manifest) + len(quarantine)   # nothing silently dropped
    return summary, manifest, images, quarantine


def reason(quarantine: pd.DataFrame, name: str) -> str:
    hits = quarantine[quarantine["path"].str.endswith(name)]
    assert len(hits) == 1, (name, quarantine.to_dict("records"))
    return hits["reason"].iloc[0]


# ------------------------------------------------------------------------------------------ decoding
def test_broken_files_are_quarantined_with_their_reason(tmp_path):
    src = tmp_path / "src"
    good = png(src / "good.png", 1)
    data = good.read_bytes()
    (src / "truncated.png").write_bytes(data[: len(data) // 2])
    (src / "empty.png").write_bytes(b"")
    (src / "notes.png").write_text("this is not an image\n")
    (src / "script.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    png(src / "tiny.png", 2, size=(4, 4))
    png(src / "wide.png", 3, size=(300, 20))
    rows = [(n, "1", f"P{i}") for i, n in enumerate(["good.png", "truncated.png", "empty.png", "notes.png",
                                                       "script.eps", "tiny.png", "wide.png", "missing.png"])]
    rows += [("", "1", "P9"), ("good2.png", "", "P10")]
    png(src / "good2.png", 4)
    _, manifest, _, q = run_csv(tmp_path, rows, {"ingest": {"size": 16, "max_side": 200}})
    assert reason(q, "truncated.png").startswith("cannot decode")
    assert reason(q, "empty.png") == "empty file (0 bytes)"
    assert reason(q, "notes.png").startswith("not an image")
    assert reason(q, "script.eps").startswith("not an image")          # PostScript never reaches Ghostscript
    assert reason(q, "tiny.png").startswith("too small")
    assert reason(q, "wide.png").startswith("too large")
    assert reason(q, "missing.png") == "file not found"
    assert "empty path in manifest" in set(q["reason"])
    assert reason(q, "good2.png") == "missing label in manifest"
    assert list(manifest["path"]) == ["good.png"]


def test_size_and_pixel_caps(tmp_path):
    src = tmp_path / "src"
    png(src / "big.png", 1, size=(60, 60))
    png(src / "ok.png", 2, size=(20, 20))
    _, _, _, q = run_csv(tmp_path, [("big.png", "1", "P1"), ("ok.png", "1", "P2")],
                         {"ingest": {"size": 16, "max_pixels": 1000}})
    assert reason(q, "big.png").startswith("too many pixels")
    with pytest.raises(DecodeError, match="file too large"):
        read_file(src / "big.png", max_bytes=100)


def _float_tiff(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr.astype(np.float32), "F").save(path)
    return path


def test_nan_inf_and_constant_images_are_refused_not_called(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    base = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    _float_tiff(src / "nan.tif", np.where(base > 0.5, np.nan, base))
    _float_tiff(src / "inf.tif", np.where(base > 0.5, np.inf, base))
    _float_tiff(src / "flat.tif", np.full((32, 32), 0.5))
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(src / "black.png")
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(src / "white.jpg")
    _float_tiff(src / "fine.tif", base * 1000)
    rows = [(n, "1", f"P{i}") for i, n in enumerate(["nan.tif", "inf.tif", "flat.tif", "black.png", "white.jpg",
                                                       "fine.tif"])]
    _, manifest, images, q = run_csv(tmp_path, rows)
    assert reason(q, "nan.tif").startswith("non-finite")
    assert reason(q, "inf.tif").startswith("non-finite")
    for name in ("flat.tif", "black.png", "white.jpg"):
        assert reason(q, name).startswith("constant image"), name
    assert list(manifest["path"]) == ["fine.tif"]
    fine = decode_image((src / "fine.tif").read_bytes(), "L")
    assert fine.min() == 0 and fine.max() == 255       # float scaled from its own range, like 16-bit


def test_multi_page_and_animated_files_need_a_frame(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    frames = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 24), np.uint8)) for i in range(3)]
    frames[0].save(src / "stack.tif", save_all=True, append_images=frames[1:])
    other = [Image.fromarray(np.random.default_rng(10 + i).integers(0, 256, (24, 24), np.uint8)) for i in range(3)]
    other[0].save(src / "anim.gif", save_all=True, append_images=other[1:], duration=100)
    png(src / "single.png", 7, size=(24, 24))
    rows = [("stack.tif", "1", "P1"), ("anim.gif", "1", "P2"), ("single.png", "1", "P3")]
    _, manifest, _, q = run_csv(tmp_path, rows)
    assert reason(q, "stack.tif").startswith("multi-page or animated image (3 frames)")
    assert reason(q, "anim.gif").startswith("multi-page or animated image")
    _, manifest, images, q = run_csv(tmp_path, rows, {"ingest": {"size": 24, "frame": 1}}, out="frame1")
    assert list(manifest["path"]) == ["stack.tif", "anim.gif"]   # a single-frame file has no frame 1
    assert reason(q, "single.png") == "frame 1 requested but the file has 1"
    assert np.array_equal(images[0], np.asarray(frames[1]))   # the frame asked for


def test_exif_orientation_is_applied_everywhere(tmp_path):
    upright = np.zeros((20, 40), np.uint8)
    upright[:, :10] = 255           # a bright band on the left of a landscape image
    upright[5, 5] = 128
    img = Image.fromarray(upright)
    stored = img.transpose(Image.Transpose.ROTATE_90)   # what a sideways camera stores
    exif = Image.Exif()
    exif[0x0112] = 6                # "rotate 90° clockwise to display"
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif.tobytes(), quality=100)
    arr, _ = load_image(path, "L", Limits(min_side=1))
    assert arr.shape == (20, 40)    # upright again: landscape
    assert arr[:, :10].mean() > 200 and arr[:, 20:].mean() < 40


def test_sixteen_bit_grey_and_colour_photos_keep_their_contrast(tmp_path):
    deep = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 40 + 1000)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    grey = decode_image((tmp_path / "deep.png").read_bytes(), "L")
    assert grey.min() == 0 and grey.max() == 255
    rgb = decode_image((tmp_path / "deep.png").read_bytes(), "RGB")   # a 16-bit grey face photo
    assert rgb.shape == (32, 32, 3) and rgb.mean() < 200 and rgb.std() > 40   # not clipped to white


# ------------------------------------------------------------------------------------ paths and files
def test_paths_outside_the_root_are_never_read_and_reveal_nothing(tmp_path):
    png(tmp_path / "outside.png", 1)
    png(tmp_path / "src" / "inside.png", 2)
    rows = [("../outside.png", "1", "P1"), ("/etc/passwd", "1", "P2"), ("/etc/no-such-file", "1", "P3"),
            ("sub/../../outside.png", "1", "P4"), ("sub/../inside.png", "1", "P5")]
    _, manifest, _, q = run_csv(tmp_path, rows)
    assert set(q["reason"]) == {"path outside the data root (set allow_outside_root: true to allow it)"}
    assert list(manifest["path"]) == ["inside.png"]
    _, manifest, _, q = run_csv(tmp_path, [("../outside.png", "1", "P1")], {"allow_outside_root": True}, out="opt_in")
    assert len(manifest) == 1   # an explicit opt-in reads it


def test_symlinks_fifos_devices_and_folders(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    target = png(tmp_path / "elsewhere.png", 1)
    os.symlink(target, src / "link.png")
    os.mkfifo(src / "pipe.png")
    (src / "folder.png").mkdir()
    png(src / "ok.png", 2)
    rows = [("link.png", "1", "P1"), ("pipe.png", "1", "P2"), ("folder.png", "1", "P3"), ("/dev/zero", "1", "P4"),
            ("ok.png", "1", "P5")]
    _, _, _, q = run_csv(tmp_path, rows, {"allow_outside_root": True})
    assert reason(q, "link.png").startswith("symbolic link (not followed)")
    assert reason(q, "pipe.png") == "a named pipe, not an image file"   # refused before open: no hang
    assert reason(q, "folder.png") == "a folder, not an image file"
    assert reason(q, "/dev/zero") == "a device, not an image file"      # never read: no memory blow-up


def test_folder_source_symlinks_non_utf8_names_and_stray_files(tmp_path):
    root = tmp_path / "tree"
    png(root / "1" / "P1" / "a.png", 1)
    png(root / "1" / "P2" / "b.png", 2)
    png(tmp_path / "other" / "P9" / "c.png", 3)
    os.symlink(tmp_path / "other" / "P9", root / "1" / "P9")          # a symlinked patient folder
    os.symlink(root / "1" / "P1" / "a.png", root / "1" / "again.png")
    png(root / "2" / "P3" / "d.png", 4)
    bad = os.fsencode(str(root / "2" / "P3")) + b"/caf\xe9.png"       # Latin-1 name: not UTF-8
    with open(bad, "wb") as fh:
        fh.write((root / "2" / "P3" / "d.png").read_bytes()[:-1] + b"\x00")
    (root / "stray.png").write_bytes(b"x")
    (root / "1" / ".DS_Store").write_bytes(b"junk")
    cfg = {"kind": "chromosome_crops", "source": str(root), "ingest": {"size": 16}}
    summary = ingest_dataset("tree", cfg, tmp_path / "out", tmp_path / "review", progress=False)
    manifest, _ = load_ingested(tmp_path / "out")
    q = pd.read_csv(tmp_path / "out" / "quarantine.csv", dtype=str, keep_default_na=False)
    assert summary["input"] == len(manifest) + len(q) == 7
    assert reason(q, "1/P9").startswith("symbolic link")
    assert reason(q, "again.png").startswith("symbolic link")
    assert reason(q, "caf\\xe9.png").startswith("file name is not valid UTF-8")
    assert reason(q, "stray.png") == "file outside any class folder"
    assert summary["ignored_hidden_files"] == 1
    assert sorted(manifest["path"]) == ["1/P1/a.png", "1/P2/b.png", "2/P3/d.png"]   # relative to the root
    assert dict(zip(manifest["path"], manifest["group_id"]))["1/P1/a.png"] == "P1"


# ------------------------------------------------------------------------------------ content and labels
def test_duplicates_and_label_conflicts(tmp_path):
    src = tmp_path / "src"
    a = png(src / "a.png", 1)
    (src / "a_copy.png").write_bytes(a.read_bytes())
    Image.open(a).save(src / "a_as.tif")               # the same pixels in another format
    b = png(src / "b.png", 2)
    (src / "b_other_label.png").write_bytes(b.read_bytes())
    rows = [("a.png", "1", "P1"), ("a_copy.png", "1", "P2"), ("a_as.tif", "1", "P3"), ("b.png", "2", "P4"),
            ("b_other_label.png", "3", "P5")]
    _, manifest, _, q = run_csv(tmp_path, rows)
    assert reason(q, "a_copy.png") == "duplicate of a.png (same pixels)"
    assert reason(q, "a_as.tif") == "duplicate of a.png (same pixels)"
    assert reason(q, "b.png").startswith("label conflict")          # every copy: the truth is unknown
    assert reason(q, "b_other_label.png").startswith("label conflict")
    assert list(manifest["path"]) == ["a.png"]


def test_label_allow_list_and_mapping(tmp_path):
    src = tmp_path / "src"
    for i, n in enumerate(["a", "b", "c", "d"]):
        png(src / f"{n}.png", i)
    rows = [("a.png", "1", "P1"), ("b.png", "25", "P2"), ("c.png", "chrX", "P3"), ("d.png", "junk", "P4")]
    _, manifest, _, q = run_csv(tmp_path, rows, {"labels": "chromosomes24"})
    assert reason(q, "b.png") == "label not in task: '25'"
    assert reason(q, "c.png") == "label not in task: 'chrX'"
    _, manifest, _, q = run_csv(tmp_path, rows, {"labels": {"1": "1", "chrX": "X", "junk": None}}, out="mapped")
    assert dict(zip(manifest["path"], manifest["label"])) == {"a.png": "1", "c.png": "X"}
    assert reason(q, "d.png") == "label not in task: 'junk'"


def test_user_columns_never_override_computed_ones(tmp_path):
    src = tmp_path / "src"
    rows = []
    for i in range(4):
        png(src / f"{i}.png", i)
        rows.append((f"{i}.png", "1", f"P{i}", 3 - i, "deadbeef", 99))
    _, manifest, images, _ = run_csv(tmp_path, rows, columns=("path", "label", "group_id", "index", "sha256", "width"))
    assert list(manifest["index"]) == [0, 1, 2, 3]
    assert list(manifest["user_index"].astype(int)) == [3, 2, 1, 0]
    assert (manifest["sha256"] != "deadbeef").all() and set(manifest["user_sha256"]) == {"deadbeef"}
    for i, path in enumerate(manifest["path"]):     # row i's pixels are its own file's
        assert np.array_equal(images[i], fit_square(decode_image((src / path).read_bytes(), "L"), 16, "pad", 255))


def test_reviewer_corrections(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        png(src / f"{i}.png", i)
    review = tmp_path / "review"
    (review / "chromosome_crops").mkdir(parents=True)
    (review / "chromosome_crops" / "ds.csv").write_text("path,action,label,note\n0.png,exclude,,two overlap\n"
                                                       "1.png,relabel,2,was filed as 1\n")
    _, manifest, _, q = run_csv(tmp_path, [(f"{i}.png", "1", f"P{i}") for i in range(3)], review=review)
    assert reason(q, "0.png") == "excluded by the reviewer: two overlap"
    row = manifest[manifest["path"] == "1.png"].iloc[0]
    assert row["label"] == "2" and row["original_label"] == "1"
    (review / "chromosome_crops" / "ds.csv").write_text("path,action,label,note\nnope.png,exclude,,x\n")
    with pytest.raises(ConfigError, match=r"ds.csv: path\(s\) not in the dataset: \['nope.png'\]"):
        run_csv(tmp_path, [(f"{i}.png", "1", f"P{i}") for i in range(3)], review=review, out="again")


def test_bad_split_column_value(tmp_path):
    png(tmp_path / "src" / "a.png", 1)
    png(tmp_path / "src" / "b.png", 2)
    _, _, _, q = run_csv(tmp_path, [("a.png", "1", "P1", "holdout"), ("b.png", "1", "P2", "test")],
                         columns=("path", "label", "group_id", "split"))
    assert reason(q, "a.png") == "split column says 'holdout' (expected train, val, test or empty)"


def test_no_group_column_is_said_out_loud(tmp_path):
    png(tmp_path / "src" / "a.png", 1)
    summary, manifest, _, _ = run_csv(tmp_path, [("a.png", "1")], columns=("path", "label"))
    assert summary["group_by"] == "file" and "no group column" in summary["warning"]


def test_identity_folders_group_by_person(tmp_path):
    root = tmp_path / "people"
    for person in ("ann", "bob"):
        for k in range(2):
            png(root / person / f"{k}.png", hash((person, k)) % 1000, size=(60, 60), mode="RGB")
    cfg = {"kind": "face_identities", "source": str(root), "faces": {"align": {"detect": False}}}
    ingest_dataset("people", cfg, tmp_path / "out", tmp_path / "review", progress=False)
    manifest, _ = load_ingested(tmp_path / "out")
    assert dict(zip(manifest["path"], manifest["group_id"])) == {"ann/0.png": "ann", "ann/1.png": "ann",
                                                                 "bob/0.png": "bob", "bob/1.png": "bob"}


# -------------------------------------------------------------------------------------- whole sources
def test_unreadable_sources_are_one_clear_error(tmp_path):
    cfg = {"kind": "chromosome_crops", "ingest": {"size": 16}}
    with pytest.raises(IngestError, match="source not found"):
        ingest_dataset("d", {**cfg, "source": str(tmp_path / "nope.csv")}, tmp_path / "o", progress=False)
    (tmp_path / "m.csv").write_text("file,class\na.png,1\n")
    with pytest.raises(IngestError, match=r"lacks column\(s\) \['path', 'label'\]"):
        ingest_dataset("d", {**cfg, "source": str(tmp_path / "m.csv")}, tmp_path / "o", progress=False)
    (tmp_path / "latin.csv").write_bytes("path,label\ncaf\xe9.png,1\n".encode("latin-1"))
    with pytest.raises(IngestError, match="not UTF-8 text"):
        ingest_dataset("d", {**cfg, "source": str(tmp_path / "latin.csv")}, tmp_path / "o", progress=False)
    (tmp_path / "bad.csv").write_text("path,label\nmissing.png,1\n")
    with pytest.raises(IngestError, match="no usable images"):
        ingest_dataset("d", {**cfg, "source": str(tmp_path / "bad.csv")}, tmp_path / "o", progress=False)


@pytest.mark.parametrize("patch, message", [
    ({"ingest": {"size": 0}}, r"datasets\.d\.ingest\.size: expected an integer in \[8, 4096\], got 0"),
    ({"ingest": {"size": "big"}}, r"datasets\.d\.ingest\.size: expected an integer in \[8, 4096\], got 'big' \(str\)"),
    ({"ingest": {"sise": 3}}, r"datasets\.d\.ingest: unknown key\(s\) \['sise'\]"),
    ({"ingest": {"mode": "CMYK"}}, r"datasets\.d\.ingest\.mode: expected one of \['L', 'RGB'\]"),
    ({"kind": "xrays"}, r"datasets\.d\.kind: expected one of"),
    ({"split": {"ratios": {"train": 0.9, "test": 0.2}}}, r"datasets\.d\.split\.ratios: must add up to 1"),
    ({"ingest": {"resize": "preserve"}}, r"datasets\.d\.ingest\.scale: resize: preserve needs the scale"),
])
def test_params_errors_name_the_key(tmp_path, patch, message):
    from genediag.schema import deep_merge

    cfg = deep_merge({"kind": "chromosome_crops", "source": str(tmp_path / "m.csv")}, patch)
    with pytest.raises(ConfigError, match=message):
        ingest_dataset("d", cfg, tmp_path / "o", progress=False)


# -------------------------------------------------------------------------------------------- faults
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(b"the old model")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError) as err:
        write_bytes(target, b"new weights")
    assert str(err.value).startswith(f"{target}: cannot write (No space left on device); the disk is full")
    assert target.read_bytes() == b"the old model"                    # never truncated
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.pt.")]   # no temp file left


def test_ingest_reserves_its_cache_up_front(tmp_path, monkeypatch):
    png(tmp_path / "src" / "a.png", 1)

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OutputError, match=r"\.images\.tmp\.npy: cannot write \(No space left on device\)"):
        run_csv(tmp_path, [("a.png", "1", "P1")])


def test_read_only_output_folder_is_one_line(tmp_path, monkeypatch):
    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OutputError, match="cannot write \\(Read-only file system\\); the file system is read-only"):
        write_bytes(tmp_path / "x.json", b"{}")


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    import torch

    _Payload.marker = marker
    torch.save({"format": "genediag-2", "arch": {"name": "pinnacle_dcnn"}, "evil": _Payload()}, path)
    return path


def test_a_malicious_checkpoint_runs_nothing_through_predict(tmp_path):
    from genediag.cli import main

    marker = tmp_path / "pwned"
    ckpt = _malicious_checkpoint(tmp_path / "model.pt", marker)
    png(tmp_path / "x.png", 1)
    assert main(["predict", "--model", str(ckpt), str(tmp_path / "x.png")]) == 2
    assert not marker.exists()


def test_a_malicious_checkpoint_runs_nothing_through_face_init(tmp_path):
    from genediag.faces.train import init_from_checkpoint
    from genediag.models import create_model
    from genediag.models.checkpoint import CheckpointError

    marker = tmp_path / "pwned"
    ckpt = _malicious_checkpoint(tmp_path / "model.pt", marker)
    model = create_model("se_resnet64", num_classes=3, in_chans=3, img_size=56, width=4)
    with pytest.raises(CheckpointError, match="refused: the file holds objects other than tensors"):
        init_from_checkpoint(model, ckpt)
    assert not marker.exists()


def test_old_and_foreign_checkpoints_are_refused_with_a_reason(tmp_path):
    import torch

    from genediag.models.checkpoint import CheckpointError, read_checkpoint

    torch.save({"format": "genediag-1", "state_dict": {}}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="older genediag .* retrain it with `dvc repro`"):
        read_checkpoint(tmp_path / "old.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a genediag checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "text.pt")


def test_no_unpickling_anywhere_in_the_package():
    src = Path(__file__).resolve().parents[2] / "src"
    offenders = [str(p) for p in src.rglob("*.py") if "weights_only=False" in p.read_text()
                 or "pickle.load(" in p.read_text()]
    assert offenders == []


def test_predict_refers_blank_and_non_finite_images_and_errors_on_broken_ones(tmp_path):
    """A readable image with nothing to classify (constant, NaN/inf) is a referral with the input check as its
    reason, never a class; a file that is not an image is an error naming it."""
    from genediag.predict import InputImageError, prepare_file

    spec = {"cache": {"mode": "L", "size": 32, "resize": "pad", "pad_value": 255}, "kind": "chromosome"}
    Image.fromarray(np.full((40, 20), 255, np.uint8)).save(tmp_path / "blank.png")
    base = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    _float_tiff(tmp_path / "nan.tif", np.where(base > 0.5, np.nan, base))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    for name, why in (("blank.png", "input check: constant image"), ("nan.tif", "input check: non-finite")):
        arr, reasons = prepare_file(tmp_path / name, spec, {})
        assert arr is None and len(reasons) == 1 and reasons[0].startswith(why), (name, reasons)
    with pytest.raises(InputImageError, match="broken.png"):
        prepare_file(tmp_path / "broken.png", spec, {})
