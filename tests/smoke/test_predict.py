"""`genediag predict` on the models of the reproduced tiny repository: the same probabilities as the evaluate stage,
MC dropout seeded, the refer flag, face photos end to end (a face, no face, two faces), karyograms from the
checkpoint alone; bad input is one line and a non-zero exit."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from genediag.cli import main
from tiny_repo import RUN, run, tiny_repo

pytestmark = pytest.mark.smoke

CROPS = "data/synthetic/chromosomes"
FACE_RUN = "faces-crossloss"
KARYOGRAM_RUN = "karyograms-vgg16-frozen"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return tiny_repo(tmp_path_factory, "predict")


def cli(args, cwd, env):
    return run([sys.executable, "-m", "genediag", *args], cwd, env, timeout=300)


def evaluated(dest, branch, run_name):
    return pd.read_csv(dest / "evaluation" / branch / run_name / "predictions.csv", dtype=str,
                       keep_default_na=False)


def test_predict_reproduces_the_evaluate_stage(repo, monkeypatch, capsys):
    """Same preprocessing and forward pass as evaluation (checkpoint only): same classes and probabilities."""
    dest, _ = repo
    rows = evaluated(dest, "chromosomes", RUN).iloc[:8]
    monkeypatch.chdir(dest)
    paths = [f"{CROPS}/{p}" for p in rows["path"]]
    assert main(["predict", "--run", RUN, "--json", "--top-k", "24", *paths]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["run"] == RUN and doc["model"]["kind"] == "chromosome_crop"
    assert doc["model"]["trained_on_synthetic"] is True and doc["model"]["runtime"] == "onnx"
    for res, (_, row) in zip(doc["results"], rows.iterrows()):
        assert res["predicted"] == row["predicted"]
        probs = {c["class"]: c["probability"] for c in res["ranked"]}
        assert len(probs) == 24
        for cls, p in probs.items():
            assert p == pytest.approx(float(row[f"p_{cls}"]), abs=2e-5)
        assert res["ood_score"] == pytest.approx(float(row["ood_score"]), rel=1e-3, abs=1e-3)
        ranked = [c["probability"] for c in res["ranked"]]
        assert ranked == sorted(ranked, reverse=True)


def test_mc_dropout_is_seeded_and_refer_flag_follows_the_threshold(repo, monkeypatch, capsys):
    dest, _ = repo
    crop = f"{CROPS}/{evaluated(dest, 'chromosomes', RUN)['path'].iloc[0]}"
    monkeypatch.chdir(dest)
    docs = []
    for threshold in ("0.8", "0.8", "0"):
        assert main(["predict", "--run", RUN, "--json", "--mc-passes", "12", "--refer-below", threshold, crop]) == 0
        docs.append(json.loads(capsys.readouterr().out)["results"][0])
    mc = docs[0]["mc_dropout"]
    assert mc["passes"] == 12 and 0.0 <= mc["agreement"] <= 1.0 and 0.0 <= mc["mean_probability"] <= 1.0
    assert docs[0]["mc_dropout"] == docs[1]["mc_dropout"]  # same seed, same masks
    low = docs[0]["probability"] < 0.8 or mc["agreement"] < 0.8
    assert docs[0]["refer_for_review"] is (low or docs[0]["ood_score"] > 1)
    assert not any("probability" in r or "agreement" in r for r in docs[2]["refer_reasons"])


def test_out_of_distribution_input_is_referred(repo, tmp_path, monkeypatch, capsys):
    """A photo of something else (a face) and a blank image given to the chromosome model are referred."""
    dest, _ = repo
    photo = next((dest / "data" / "synthetic-faces" / "syndromes").rglob("*.jpg"))
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((60, 30), 255, np.uint8)).save(blank)
    monkeypatch.chdir(dest)
    assert main(["predict", "--run", RUN, "--json", str(photo), str(blank)]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    for res in results:
        assert res["refer_for_review"], res
    assert any("out of distribution" in r or "input check" in r for r in results[0]["refer_reasons"])


def test_face_photos_end_to_end(repo, tmp_path, monkeypatch, capsys):
    """A synthetic test photo: detect → align → ranked syndromes; no face: referred without a class; two faces
    side by side: referred for the second comparable face."""
    dest, _ = repo
    manifest = pd.read_csv(dest / "data" / "synthetic-faces" / "syndromes" / "manifest.csv", dtype=str,
                           keep_default_na=False)
    ingested = pd.read_csv(dest / "data" / "ingested" / "faces_syndromes" / "manifest.csv", dtype=str,
                           keep_default_na=False)
    photo_rel = ingested["path"].iloc[0]
    photo = dest / "data" / "synthetic-faces" / "syndromes" / photo_rel
    img = np.asarray(Image.open(photo).convert("RGB"))
    two = tmp_path / "two_faces.png"
    Image.fromarray(np.concatenate([img, img[:, ::-1]], axis=1)).save(two)
    none = tmp_path / "no_face.png"
    Image.fromarray(np.random.default_rng(0).integers(90, 110, (160, 160, 3), dtype=np.uint8)).save(none)
    monkeypatch.chdir(dest)
    assert main(["predict", "--run", FACE_RUN, "--json", str(photo), str(none), str(two)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["kind"] == "face"
    face, no_face, pair = doc["results"]
    classes = set(manifest["label"])
    assert face["predicted"] in classes and len(face["ranked"]) == 3
    assert sum(c["probability"] for c in face["ranked"]) <= 1.0 + 1e-6
    assert no_face["predicted"] is None and no_face["refer_for_review"]
    assert any("no face" in r for r in no_face["refer_reasons"])
    # the run's gallery (models/<run>/gallery.npz, written by its evaluation): syndromes by nearest gallery photo
    assert doc["model"]["gallery"]["method"] == "nearest_neighbour" and doc["model"]["gallery"]["photos"] > 0
    nn_ = face["nearest_neighbour"]
    sims = [c["similarity"] for c in nn_["ranked"]]
    assert len(sims) == 3 and sims == sorted(sims, reverse=True) and nn_["ranked"][0]["class"] in classes
    assert all(-1.0 <= v <= 1.0 + 1e-6 for v in sims) and nn_["centroid_ranked"]
    assert "nearest_neighbour" not in no_face
    assert pair["predicted"] in classes and pair["refer_for_review"]
    assert any("comparable faces" in r for r in pair["refer_reasons"])


def test_karyogram_from_the_checkpoint_alone(repo, tmp_path, monkeypatch, capsys):
    """No params.yaml in the working folder: the checkpoint carries the karyogram preprocessing."""
    dest, _ = repo
    rows = evaluated(dest, "karyograms", KARYOGRAM_RUN)
    row = rows[rows["path"].str.startswith(("P", "T"))].iloc[0]   # an original karyogram (not an augmented copy)
    image = dest / "data" / "synthetic" / "karyograms" / row["path"]
    ckpt = dest / "models" / KARYOGRAM_RUN / "model.pt"
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--model", str(ckpt), "--json", "--mc-passes", "0", str(image)]) == 0
    res = json.loads(capsys.readouterr().out)["results"][0]
    assert res["kind"] == "karyogram" and res["predicted"] == row["predicted"]
    assert res["probability"] == pytest.approx(float(row[f"p_{row['predicted']}"]), abs=2e-5)


def test_broken_file_is_one_line_and_non_zero_exit(repo, tmp_path):
    dest, env = repo
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    good = f"{CROPS}/{evaluated(dest, 'chromosomes', RUN)['path'].iloc[0]}"
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
    assert json.loads(captured.out)["results"][0]["error"].startswith(f"{broken}: empty file (0 bytes); pass a")
    assert captured.err.strip().count("\n") == 0

    assert main(["predict", "--run", "no-such-run", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: models/no-such-run/model.pt")

    not_a_model = tmp_path / "model.pt"
    not_a_model.write_bytes(b"garbage")
    assert main(["predict", "--model", str(not_a_model), str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(not_a_model) in err
