"""`genediag predict`: ranked classes, MC dropout, refer flag, --json; bad input is one line and a non-zero exit."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from genediag.cli import main
from genediag.data.ingest import ingest
from genediag.models import create_model
from genediag.models.checkpoint import save_checkpoint
from genediag.predict import load_predictor
from tiny_repo import RUN, run, tiny_repo

pytestmark = pytest.mark.smoke

SIZES = "sizes-dcnn"  # an easy binary task the tiny data can teach in seconds: long vs short chromosomes
SIZE_CLASSES = {"large": ["1", "2", "3"], "small": ["19", "20", "21", "22"]}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The reproduced tiny repo, plus a binary `sizes-dcnn` model trained by the real train stage script."""
    dest, env = tiny_repo(tmp_path_factory, "predict")
    params = yaml.safe_load((dest / "params.yaml").read_text())
    sizes = json.loads(json.dumps(params["train"][RUN]))
    sizes.update(task="sizes", model="dcnn-sizes", classes=SIZE_CLASSES)
    sizes["arch"]["dropout"] = 0.1
    sizes["fit"].update(epochs=5, batch_size=8, scheduler={"name": "none"}, early_stopping={"patience": 0})
    sizes["fit"]["optimizer"]["lr"] = 0.001
    params["train"][SIZES] = sizes
    (dest / "params-sizes.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([sys.executable, "stages/train.py", SIZES, "--params", "params-sizes.yaml"], dest, env)
    assert out.returncode == 0, out.stderr[-3000:]
    return dest, env


def cli(args, cwd, env):
    return run([sys.executable, "-m", "genediag", *args], cwd, env, timeout=300)


def test_predict_reproduces_the_evaluate_stage(repo, monkeypatch, capsys):
    """Same preprocessing and forward pass as training/evaluation: same classes and probabilities."""
    dest, _ = repo
    table = pd.read_csv(dest / "evaluation" / RUN / "predictions.csv", dtype={"label": str, "predicted": str})
    rows = table.iloc[:8]
    monkeypatch.chdir(dest)
    code = main(["predict", "--run", RUN, "--json", "--top-k", "24", *rows["path"]])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["run"] == RUN and doc["model"]["kind"] == "chromosome_crop"
    assert doc["model"]["trained_on_synthetic"] is True
    assert doc["model"]["ingest_from"].startswith("params.yaml")  # the checkpoint has no ingest spec yet
    for res, (_, row) in zip(doc["results"], rows.iterrows()):
        assert res["path"] == row["path"]
        assert res["predicted"] == row["predicted"]
        probs = {c["class"]: c["probability"] for c in res["ranked"]}
        assert len(probs) == 24
        for cls, p in probs.items():
            assert p == pytest.approx(row[f"p_{cls}"], abs=2e-5)
        ranked = [c["probability"] for c in res["ranked"]]
        assert ranked == sorted(ranked, reverse=True)


def test_predict_prints_the_expected_top_class(repo, monkeypatch, capsys):
    dest, _ = repo
    split = pd.read_csv(dest / "data" / "splits" / "chromosomes.csv", dtype={"label": str})
    test = split[split["split"] == "test"]
    long_crop = test[test["label"] == "1"]["path"].iloc[0]
    short_crop = test[test["label"] == "21"]["path"].iloc[0]
    monkeypatch.chdir(dest)
    assert main(["predict", "--run", SIZES, "--params", "params-sizes.yaml", long_crop, short_crop]) == 0
    out = capsys.readouterr().out
    assert f"{long_crop}: large (p=" in out
    assert f"{short_crop}: small (p=" in out
    assert "MC dropout: 30 passes" in out and "refer for review:" in out
    assert "synthetic cohort" in out.splitlines()[0]


def test_mc_dropout_is_seeded_and_refer_flag_follows_the_threshold(repo, monkeypatch, capsys):
    dest, _ = repo
    crop = pd.read_csv(dest / "evaluation" / RUN / "predictions.csv")["path"].iloc[0]
    monkeypatch.chdir(dest)
    docs = []
    for threshold in ("0.8", "0.8", "0"):
        assert main(["predict", "--run", RUN, "--json", "--mc-passes", "12", "--refer-below", threshold, crop]) == 0
        docs.append(json.loads(capsys.readouterr().out)["results"][0])
    mc = docs[0]["mc_dropout"]
    assert mc["passes"] == 12 and 0.0 <= mc["agreement"] <= 1.0 and 0.0 <= mc["mean_probability"] <= 1.0
    assert docs[0]["mc_dropout"] == docs[1]["mc_dropout"]  # same seed, same masks
    expected = docs[0]["probability"] < 0.8 or mc["agreement"] < 0.8
    assert docs[0]["refer_for_review"] is expected and bool(docs[0]["refer_reasons"]) is expected
    assert docs[2]["refer_for_review"] is False


def test_broken_file_is_one_line_and_non_zero_exit(repo, tmp_path):
    dest, env = repo
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    good = pd.read_csv(dest / "evaluation" / RUN / "predictions.csv")["path"].iloc[0]
    out = cli(["predict", "--run", RUN, good, str(broken), str(tmp_path / "missing.png")], dest, env)
    assert out.returncode == 1
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 2 and "Traceback" not in out.stderr
    assert errors[0].startswith(f"error: {broken}: ") and "image" in errors[0]
    assert errors[1].startswith(f"error: {tmp_path / 'missing.png'}: file not found")
    assert f"{good}: " in out.stdout  # the good image is still predicted


def test_bad_input_in_json_mode_and_missing_model(repo, tmp_path, monkeypatch, capsys):
    dest, _ = repo
    broken = tmp_path / "empty.png"
    broken.write_bytes(b"")
    monkeypatch.chdir(dest)
    assert main(["predict", "--run", RUN, "--json", str(broken)]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["results"][0]["error"] == f"{broken}: empty file (0 bytes); pass a readable " \
                                                               "image file (PNG, JPEG, TIFF, BMP)"
    assert captured.err.strip().count("\n") == 0

    assert main(["predict", "--run", "no-such-run", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: models/no-such-run/model.pt: no trained model")

    not_a_model = tmp_path / "model.pt"
    not_a_model.write_bytes(b"garbage")
    assert main(["predict", "--model", str(not_a_model), str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{not_a_model}: cannot load the model" in err


def _tiny_checkpoint(path, kind, ingest_spec, classes, size=32):
    torch.manual_seed(0)
    model = create_model("pinnacle_dcnn", num_classes=len(classes), in_chans=1, img_size=size,
                         channels=[8, 8, 8], fc=[16, 16, 16], dropout=0.2)
    save_checkpoint(path, model, {"name": "pinnacle_dcnn", "channels": [8, 8, 8], "fc": [16, 16, 16],
                                  "dropout": 0.2}, classes,
                    {"size": size, "in_chans": 1, "invert": True, "kind": kind, "ingest": ingest_spec},
                    extra={"run": f"tiny-{kind}", "task": kind, "dataset": "karyograms"})
    return path


def test_karyogram_checkpoint_declares_its_own_preprocessing(repo, tmp_path, monkeypatch, capsys):
    """A self-contained checkpoint (kind + ingest spec inside) needs no params.yaml and matches ingest."""
    dest, _ = repo
    karyograms = pd.read_csv(dest / "data" / "synthetic" / "karyograms" / "manifest.csv")
    image = dest / "data" / "synthetic" / "karyograms" / karyograms["path"].iloc[0]
    spec = {"mode": "L", "size": 64, "resize": "stretch", "pad_value": 255, "min_side": 64, "max_side": 20000}
    ckpt = _tiny_checkpoint(tmp_path / "karyo.pt", "karyogram", spec, ["abnormal", "normal"])

    (tmp_path / "one.csv").write_text(f"path,label\n{image},normal\n")
    ingest({"source": str(tmp_path / "one.csv"), **spec}, tmp_path / "ingested")
    cached = np.load(tmp_path / "ingested" / "images.npy")[0]
    predictor = load_predictor(ckpt, params_path=None)
    arrays, errors = predictor.preprocess([image])
    assert errors == [None] and np.array_equal(arrays[0], cached)

    monkeypatch.chdir(tmp_path)  # no params.yaml here: the checkpoint must be enough
    assert main(["predict", "--model", str(ckpt), "--json", str(image)]) == 0
    res = json.loads(capsys.readouterr().out)["results"][0]
    assert res["kind"] == "karyogram" and {c["class"] for c in res["ranked"]} == {"abnormal", "normal"}
    assert sum(c["probability"] for c in res["ranked"]) == pytest.approx(1.0, abs=1e-5)


def test_unsupported_kind_is_a_clear_error(tmp_path, monkeypatch, capsys):
    spec = {"mode": "L", "size": 32, "resize": "pad", "pad_value": 255, "min_side": 8, "max_side": 20000}
    ckpt = _tiny_checkpoint(tmp_path / "face.pt", "face_photo", spec, ["a", "b"])
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(image)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--model", str(ckpt), str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "face_photo" in err and "\n" not in err
