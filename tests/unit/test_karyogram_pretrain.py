"""The karyogram base pretraining (stage pretrain_base@): slot boxes of the composer, slot-patch labels, the
batch-norm fold, no reading of test patients, and a base that thesis_transfer loads."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import genediag.karyograms.pretrain as pretrain
from genediag.config import ConfigError
from genediag.karyograms.pretrain import (PATCH_LABELS, BaseClassifier, fold_vgg16_bn, patient_cells, pretrain_base,
                                          resolve_pretrain_config, slot_labels)
from genediag.models import create_model
from genediag.data.karyogram_layout import KARYOGRAM_ROWS, compose_karyogram

SLOTS = [c for row in KARYOGRAM_ROWS for c in row]


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
    """data/ingested/crops (one cell per patient) + data/splits/kg.csv (patient → split)."""
    patients = patients or {"T1": ("train", cell_labels()), "T2": ("train", cell_labels("XY", extra=["21"])),
                            "V1": ("val", cell_labels("XY")), "V2": ("val", cell_labels(drop=["7"])),
                            "S1": ("test", cell_labels()), "S2": ("test", cell_labels("XY"))}
    rows, imgs, split_rows = [], [], []
    for pid, (split, labs) in patients.items():
        for lab in labs:
            imgs.append(crop(lab))
            rows.append({"index": len(rows), "path": f"{pid}/{len(rows)}.png", "label": lab, "group_id": pid,
                         "cell_id": f"{pid}-C1"})
        split_rows.append({"group_id": pid, "split": split, "label": "normal"})
    d = root / "ingested" / "crops"
    d.mkdir(parents=True)
    np.save(d / "images.npy", np.stack(imgs))
    pd.DataFrame(rows).to_csv(d / "manifest.csv", index=False)
    (root / "splits").mkdir()
    pd.DataFrame(split_rows).to_csv(root / "splits" / "kg.csv", index=False)
    return pd.DataFrame(rows)


def small_cfg(**kw):
    cfg = {"backbone": "vgg16", "input_size": 64, "patch": 32, "crops": "crops", "patients_from": "kg",
           "karyogram_size": [320, 240], "resize": 128, "karyograms": {"train": 6, "val": 3},
           "max_patches": {"train": 64, "val": 32}, "fit": {"epochs": 1, "batch_size": 16, "device": "cpu"},
           "workers": 1}
    return {**cfg, **kw}


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
    table = crop_dataset(tmp_path)
    cells = patient_cells(table, tmp_path / "splits" / "kg.csv", "test")
    cfg = resolve_pretrain_config("t", small_cfg(max_changes=0, jitter=0.0, label_radius=0.1))
    images = np.load(tmp_path / "ingested" / "crops" / "images.npy")
    pretrain._STATE.update(images=images, labels=table["label"].tolist(), cells=cells, cfg=cfg)
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


def test_cells_of_test_patients_are_never_read(tmp_path, monkeypatch):
    table = crop_dataset(tmp_path)
    test_rows = set(table.index[table["group_id"].str.startswith("S")])
    real = pretrain.load_ingested
    read: set[int] = set()

    class Spy:
        def __init__(self, arr):
            self.arr, self.ndim, self.shape = arr, arr.ndim, arr.shape

        def __len__(self):
            return len(self.arr)

        def __getitem__(self, i):
            read.add(int(i))
            return self.arr[i]

    monkeypatch.setattr(pretrain, "load_ingested", lambda d: (lambda m, a: (m, Spy(np.asarray(a))))(*real(d)))
    info = pretrain_base("t", small_cfg(), data_dir=tmp_path, out_dir=tmp_path / "bases",
                         metrics_dir=tmp_path / "metrics")
    assert read and not read & test_rows
    assert info["cells"] == {"train": 2, "val": 2}
    assert set(json.loads((tmp_path / "metrics" / "t.json").read_text())["val_patch_accuracy"]) == \
        set(PATCH_LABELS) | {"all labels"}
    # the base is a weights file of the network the karyogram runs build
    m = create_model("thesis_transfer", 2, 1, 64, backbone="vgg16", pretrained=str(tmp_path / "bases/t/weights.pth"))
    state = torch.load(tmp_path / "bases/t/weights.pth")
    assert torch.equal(m.base[0].weight, state["features.0.weight"])


def test_recomposition_is_the_same_for_any_worker_count(tmp_path):
    table = crop_dataset(tmp_path)
    cells = patient_cells(table, tmp_path / "splits" / "kg.csv", "test")
    images = np.load(tmp_path / "ingested" / "crops" / "images.npy")
    out = [pretrain.make_patches(images, table["label"].tolist(), cells, resolve_pretrain_config("t", small_cfg(
        workers=w)), "train") for w in (1, 2)]
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="too small for inception_v3"):
        resolve_pretrain_config("t", small_cfg(backbone="inception_v3"))
    with pytest.raises(ConfigError, match="missing 'backbone'"):
        resolve_pretrain_config("t", {"input_size": 64})
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_pretrain_config("t", small_cfg(epochs=3))
    table = crop_dataset(tmp_path)
    with pytest.raises(ConfigError, match="cell_id"):
        patient_cells(table.drop(columns="cell_id"), tmp_path / "splits" / "kg.csv", "x")
    with pytest.raises(FileNotFoundError, match="split"):
        patient_cells(table, tmp_path / "splits" / "missing.csv", "x")


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
    """params.yaml: a run with pretrained: models/bases/<name>/weights.pth uses that base's backbone and input
    size (a slot has the size the base learned), and the base never reads the runs' test patients' split."""
    from pathlib import Path

    import yaml

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    used = 0
    for run, rc in params["train"].items():
        pre = str(rc["arch"].get("pretrained", ""))
        if not pre.startswith("models/bases/"):
            continue
        base = params["pretrain_base"][Path(pre).parts[2]]
        assert (base["backbone"], base["input_size"]) == (rc["arch"]["backbone"], rc["input_size"]), run
        assert base["patients_from"] == params["balance"][rc["dataset"]]["source"], run
        assert base["resize"] == params["ingest"][base["patients_from"]]["size"], run
        assert base["blank_top"] == params["balance"][rc["dataset"]]["blank_top"], run
        used += 1
    assert used == 4   # the four VGG16 rows of Table 5.1
