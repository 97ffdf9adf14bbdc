"""The karyogram base pretraining (stage karyogram_base@): slot boxes of the composer, slot-patch labels, the
batch-norm fold, no reading of test patients' crops, and a base that thesis_transfer loads."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import genediag.karyograms.pretrain as pretrain
from genediag.config import ConfigError
from genediag.data.karyogram_layout import KARYOGRAM_ROWS, compose_karyogram
from genediag.karyograms.pretrain import (PATCH_LABELS, BaseClassifier, fold_vgg16_bn, load_crops, patient_cells,
                                          pretrain_base, resolve_base_config, slot_labels)
from genediag.models import create_model

SLOTS = [c for row in KARYOGRAM_ROWS for c in row]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small nets on 2 shared cores: one intra-op thread is faster and steadier than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def crop(label: str, size: int = 32) -> np.ndarray:
    """A dark bar on white whose height falls with the chromosome number (so slots differ)."""
    img = np.full((size, size), 255, np.uint8)
    n = {"X": 7, "Y": 21}.get(label, int(label) if label.isdigit() else 5)
    h = max(6, int(size * 0.9) - n)
    img[(size - h) // 2:(size - h) // 2 + h, size // 2 - 2:size // 2 + 2] = 40
    return img


def cell_labels(sex="XX", extra=(), drop=()):
    labs = [str(c) for c in range(1, 23) for _ in range(2)] + list(sex) + list(extra)
    for d in drop:
        labs.remove(d)
    return labs


def crop_dataset(root, patients=None):
    """A crop source (``crops/manifest.csv`` + PNG files, one cell per patient, the layout of the synthetic
    cohort's chromosomes/) and a karyogram split ``splits/kg.csv`` (patient → split)."""
    patients = patients or {"T1": ("train", cell_labels()), "T2": ("train", cell_labels("XY", extra=["21"])),
                            "V1": ("val", cell_labels("XY")), "V2": ("val", cell_labels(drop=["7"])),
                            "S1": ("test", cell_labels()), "S2": ("test", cell_labels("XY"))}
    rows, split_rows = [], []
    for pid, (split, labs) in patients.items():
        (root / "crops" / pid).mkdir(parents=True)
        for lab in labs:
            path = f"{pid}/{len(rows)}.png"
            Image.fromarray(crop(lab)).save(root / "crops" / path)
            rows.append({"path": path, "label": lab, "group_id": pid, "cell_id": f"{pid}-C1"})
        split_rows.append({"group_id": pid, "split": split, "label": "normal"})
    pd.DataFrame(rows).to_csv(root / "crops" / "manifest.csv", index=False)
    (root / "splits").mkdir()
    pd.DataFrame(split_rows).to_csv(root / "splits" / "kg.csv", index=False)
    return pd.DataFrame(rows)


def small_cfg(root, **kw):
    cfg = {"backbone": "vgg16", "input_size": 64, "patch": 32, "crops": str(root / "crops" / "manifest.csv"),
           "karyogram_size": [320, 240], "resize": 128, "crop_size": 32, "karyograms": {"train": 6, "val": 3},
           "max_patches": {"train": 16, "val": 8}, "fit": {"epochs": 1, "batch_size": 8, "device": "cpu"},
           "workers": 1}
    return {**cfg, **kw}


def loaded(root, **kw):
    """(crops table with split, decoded crops, resolved config) as pretrain_base prepares them."""
    cfg = resolve_base_config("t", small_cfg(root, **kw))
    crops, images = load_crops(Path(cfg["crops"]), root / "splits" / "kg.csv", cfg["crop_size"], "test")
    return crops, images, cfg


# ------------------------------------------------------------------------------ composer slot boxes
def test_compose_returns_one_box_per_slot_around_its_chromosomes():
    labs = cell_labels("XY", extra=["21"], drop=["7", "7"])
    imgs = [crop(lab, 48) for lab in labs]
    plain = compose_karyogram(imgs, labs, (640, 480), title="46,XX")
    img, boxes = compose_karyogram(imgs, labs, (640, 480), title="46,XX", return_boxes=True)
    assert np.array_equal(img, plain)   # the boxes do not change the drawing
    assert [b.slot for b in boxes] == SLOTS
    counts = {b.slot: b.count for b in boxes}
    assert counts["21"] == 3 and counts["7"] == 0 and counts["X"] == 1 and counts["Y"] == 1 and counts["1"] == 2
    ink = img < 128
    for b in boxes:
        if b.count:   # every chromosome is drawn inside its box, and the box holds ink
            assert ink[b.y0:b.y1 - 2, b.x0:b.x1].sum() > 0
        else:
            assert b.x0 == b.x1
    inside = np.zeros_like(ink)
    for b in boxes:
        inside[b.y0:b.y1 - 2, b.x0:b.x1] = True
    body = ink.copy()
    body[: 40] = False                   # the title
    for b in boxes:                      # the slot lines and labels below them
        body[b.y1 - 1:b.y1 + 20, :] = False
    assert not (body & ~inside).any()


# ------------------------------------------------------------------------------ slot patches
def test_slot_labels():
    assert slot_labels("7", 2).sum() == 0 and slot_labels("X", 2).sum() == 0 and slot_labels("Y", 0).sum() == 0
    for count, j in ((0, 0), (1, 1), (3, 2), (4, 3), (5, 3)):
        assert np.flatnonzero(slot_labels("21", count)).tolist() == [j]
    assert PATCH_LABELS[np.flatnonzero(slot_labels("X", 1))[0]] == "X: 0-1 copies"
    assert PATCH_LABELS[np.flatnonzero(slot_labels("X", 3))[0]] == "X: 3+ copies"
    assert PATCH_LABELS[np.flatnonzero(slot_labels("Y", 1))[0]] == "Y: present"


def test_slot_patch_labels_follow_the_counts(tmp_path):
    crop_dataset(tmp_path)
    crops, images, cfg = loaded(tmp_path, max_changes=0, jitter=0.0, label_radius=0.1)
    cells = patient_cells(crops)
    assert {s: len(c) for s, c in cells.items()} == {"train": 2, "val": 2}
    pretrain._STATE.update(images=images, labels=crops["label"].tolist(), cells=cells, cfg=cfg)
    seen = set()
    for i in range(8):   # with no changes, each karyogram is one of the two train cells as it is
        x, y = pretrain.recompose("train", i)
        assert x.shape == (24, 32, 32) and y.shape == (24, len(PATCH_LABELS))
        lab = {s: tuple(row) for s, row in zip(SLOTS, y)}
        if lab["21"][2]:                                   # T2: 47,XY,+21
            seen.add("T2")
            assert lab["X"] == tuple(slot_labels("X", 1)) and lab["Y"] == tuple(slot_labels("Y", 1))
            assert y.sum() == 3
        else:                                              # T1: 46,XX
            seen.add("T1")
            assert y.sum() == 0
        assert x.max() > 200 and x.min() < 50              # inverted: chromosomes bright on black
    assert seen == {"T1", "T2"}


def test_crops_of_test_patients_are_never_read(tmp_path, monkeypatch):
    """load_crops drops test patients before decoding: no file of theirs is opened, and the base trained from
    the rest is a weights file of the network the karyogram runs build."""
    table = crop_dataset(tmp_path)
    test_files = {str(tmp_path / "crops" / p) for p in table.loc[table["group_id"].str.startswith("S"), "path"]}
    real = pretrain.load_image
    read: set[str] = set()

    def spy(path, *a, **kw):
        read.add(str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(pretrain, "load_image", spy)
    info = pretrain_base("t", small_cfg(tmp_path), tmp_path / "splits" / "kg.csv", tmp_path / "bases" / "t",
                         tmp_path / "metrics" / "t.json", resume_root=None)
    assert len(read) == len(table) - len(test_files) and not read & test_files
    assert info["cells"] == {"train": 2, "val": 2}
    assert info["patches"]["train"] <= 16 and info["patches"]["val"] <= 8
    metrics = json.loads((tmp_path / "metrics" / "t.json").read_text())
    assert set(metrics["val_patch_accuracy"]) == set(PATCH_LABELS) | {"all labels"}
    assert {"weights.pth", "args.yaml", "fit.json"} <= {p.name for p in (tmp_path / "bases" / "t").iterdir()}
    m = create_model("thesis_transfer", 2, 1, 64, backbone="vgg16", pretrained=str(tmp_path / "bases/t/weights.pth"))
    state = torch.load(tmp_path / "bases/t/weights.pth")
    assert torch.equal(m.base[0].weight, state["features.0.weight"])


def test_recomposition_is_the_same_for_any_worker_count(tmp_path):
    crop_dataset(tmp_path)
    crops, images, _ = loaded(tmp_path)
    cells = patient_cells(crops)
    out = [pretrain.make_patches(images, crops["label"].tolist(), cells, loaded(tmp_path, workers=w)[2], "train")
           for w in (1, 2)]
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="too small for inception_v3"):
        resolve_base_config("t", small_cfg(tmp_path, backbone="inception_v3"))
    with pytest.raises(ConfigError, match="missing 'backbone'"):
        resolve_base_config("t", {"input_size": 64, "crops": "c.csv"})
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_base_config("t", small_cfg(tmp_path, epochs=3))   # epochs belongs under fit
    with pytest.raises(ConfigError, match="need patch <= input_size <= resize"):
        resolve_base_config("t", small_cfg(tmp_path, input_size=256))
    table = crop_dataset(tmp_path)
    split_csv = tmp_path / "splits" / "kg.csv"
    no_cells = tmp_path / "crops" / "no_cells.csv"
    table.drop(columns="cell_id").to_csv(no_cells, index=False)
    with pytest.raises(ConfigError, match="no 'cell_id' column"):
        load_crops(no_cells, split_csv, 32, "t")
    with pytest.raises(FileNotFoundError, match="crops the base recomposes"):
        load_crops(tmp_path / "crops" / "missing.csv", split_csv, 32, "t")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_crops(tmp_path / "crops" / "manifest.csv", tmp_path / "splits" / "missing.csv", 32, "t")
    only_test = tmp_path / "splits" / "only_test.csv"
    pd.DataFrame({"group_id": ["T1", "T2", "V1", "V2"], "split": "test"}).to_csv(only_test, index=False)
    with pytest.raises(ConfigError, match="none of the train/val patients"):
        load_crops(tmp_path / "crops" / "manifest.csv", only_test, 32, "t")
    no_val = tmp_path / "splits" / "no_val.csv"
    pd.DataFrame({"group_id": ["T1", "T2", "V1", "V2"], "split": "train"}).to_csv(no_val, index=False)
    crops, _ = load_crops(tmp_path / "crops" / "manifest.csv", no_val, 32, "t")
    with pytest.raises(ConfigError, match="no crops of val-split patients"):
        patient_cells(crops)


# ------------------------------------------------------------------------------ batch-norm fold
def test_folded_vgg16_bn_computes_the_same_features():
    torch.manual_seed(0)
    m = BaseClassifier("vgg16", 1, 5)
    for bn in (x for x in m.net.features if isinstance(x, torch.nn.BatchNorm2d)):   # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    m.eval()
    plain = create_model("thesis_transfer", 2, 1, 32, backbone="vgg16", pretrained=False)
    plain.base.load_state_dict({k[len("features."):]: v for k, v in fold_vgg16_bn(m.net, 1).items()
                                if k.startswith("features.")})
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        want = m.net.forward_features(m.normalize(x))
        got = plain.base(m.normalize(x))
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_runs_load_a_base_trained_for_their_backbone_and_scale():
    """params.yaml: a karyogram run with pretrained: models/bases/<name>/weights.pth uses that base's backbone and
    input size (a slot has the size the base learned); the base takes its train/val patients from the dataset the
    runs' balanced dataset was derived from, at that dataset's ingest size and with the same blanked title band."""
    import yaml

    from genediag.schema import BASE, resolve_dataset, resolve_run, validate

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    kg = params["karyograms"]
    balance = kg["balance"][kg["dataset"]]
    used = 0
    for run in kg["runs"]:
        rc = resolve_run("karyograms", run, kg)
        pre = str(rc["arch"].get("pretrained", ""))
        if not pre.startswith("models/bases/"):
            continue
        base = validate(kg["bases"][Path(pre).parts[2]], BASE, "params.yaml: karyograms.bases")
        assert (base["backbone"], base["input_size"]) == (rc["arch"]["backbone"], rc["input_size"]), run
        assert base["patients"] == balance["source"], run
        assert base["resize"] == resolve_dataset(base["patients"], params["datasets"][base["patients"]])["ingest"]["size"]
        assert base["blank_top"] == balance["blank_top"], run
        used += 1
    # the VGG16 rows of Table 5.1 in the default (two; presets/karyograms_variants.yaml adds the other two)
    assert used == sum(1 for r in kg["runs"] if resolve_run("karyograms", r, kg)["family"] == "vgg16") == 2


def test_a_disabled_base_is_a_placeholder_that_runs_reject(tmp_path):
    """Real data: `enabled: false` writes the stage's outputs without training, and a run pointing at them stops
    with an error that says what to do instead of silently starting from random or synthetic weights."""
    import json

    from genediag.config import ConfigError
    from genediag.karyograms.pretrain import pretrain_base
    from genediag.models import create_model

    out = pretrain_base("vgg16", {"enabled": False, "backbone": "vgg16", "input_size": 32, "crops": "nowhere",
                                  "resize": 64, "patch": 32}, tmp_path / "split.csv", tmp_path / "base",
                        tmp_path / "m.json")
    assert out["enabled"] is False and json.loads((tmp_path / "m.json").read_text())["enabled"] is False
    assert (tmp_path / "base" / "weights.pth").is_file()
    with pytest.raises(ConfigError, match=r"karyograms.bases.vgg16 is disabled .* arch.pretrained"):
        create_model("thesis_transfer", num_classes=2, in_chans=1, img_size=32, backbone="vgg16",
                     pretrained=str(tmp_path / "base" / "weights.pth"))
