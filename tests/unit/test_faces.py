"""Face branch: synthetic cohort, MTCNN detection and review overrides, alignment, SE-ResNet64, A-softmax,
verification protocol, and a tiny end-to-end run (generate → ingest → detect → align → split → train → evaluate
→ report) on a few photos."""

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from genediag.config import ConfigError
from genediag.data.ingest import ingest
from genediag.faces import synthetic as S
from genediag.faces.align import TEMPLATES, align_dataset, align_face, similarity_transform, template
from genediag.faces.detect import MANUAL_COLUMNS, load_manual, run_detection
from genediag.faces.losses import ASoftmaxLoss, psi
from genediag.faces.seresnet import SE_RESNET64_BLOCKS, layer_count, se_resnet64

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small nets on 2 shared cores: one intra-op thread is faster and steadier than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bases():
    return S.load_bases()


def photo(bases, seed=0, pattern="healthy", size=(200, 200), **pose):
    cfg = S.resolve_config({})
    rng = np.random.default_rng(seed)
    person = S.make_person("t", pattern, rng, cfg, len(bases), base=seed % len(bases))
    img, truth = S.render_photo(bases[person.base], person, rng, cfg, size, pose=pose or None)
    return img, truth


def write_dataset(tmp_path, images, name="ds"):
    """Photos + CSV manifest → ingested dataset dir."""
    root = tmp_path / name
    rows = []
    for i, img in enumerate(images):
        p = root / "photos" / f"p{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
        rows.append({"path": f"photos/p{i}.png", "label": "healthy", "group_id": f"g{i}"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    ingest({"source": str(root / "manifest.csv"), "mode": "RGB", "size": 16, "min_side": 16}, tmp_path / "ingested" / name)
    return tmp_path / "ingested" / name


def detect(tmp_path, ingest_dir, manual=None, name="det", **cfg):
    out = tmp_path / name
    summary = run_detection(ingest_dir, {"manual": manual, **cfg}, out, out / "queue.csv", out / "sheet.png",
                            progress=False)
    return summary, pd.read_csv(out / "detections.csv"), pd.read_csv(out / "queue.csv"), out


# ------------------------------------------------------------------------------------------ alignment
@pytest.mark.parametrize("name,scale", [("sphereface", 1.0), ("arcface", 1.0), ("sphereface", 0.5)])
def test_alignment_puts_landmarks_onto_the_template_within_a_pixel(name, scale):
    """Five bright dots placed by a known similarity transform land on the template after alignment."""
    dst, (w, h) = template(name, scale)
    rng = np.random.default_rng(1)
    for trial in range(3):
        a, s = rng.uniform(-0.5, 0.5), rng.uniform(1.2, 4.0) / scale  # includes faces far larger than the crop
        R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * s
        src = (dst - dst.mean(0)) @ R.T + rng.uniform(150, 250, 2)
        img = np.zeros((420, 420, 3), np.uint8)
        yy, xx = np.mgrid[0:420, 0:420]
        for x, y in src:  # smooth blobs: their centroid survives resampling
            img[..., 0] = np.maximum(img[..., 0], (255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (1.2 * s) ** 2))).astype(np.uint8))
        crop = align_face(img, src, name, scale)
        assert crop.shape == (h, w, 3)
        M = similarity_transform(src, dst)
        assert np.abs(np.hstack([src, np.ones((5, 1))]) @ M.T - dst).max() < 1e-6
        cy, cx = np.mgrid[0:h, 0:w]
        for x, y in dst:  # centroid of the blob around each template point
            win = (np.abs(cx - x) < 4 * scale + 2) & (np.abs(cy - y) < 4 * scale + 2)
            wgt = crop[..., 0].astype(float) * win
            got = np.array([(wgt * cx).sum(), (wgt * cy).sum()]) / wgt.sum()
            assert np.hypot(*(got - [x, y])) < 1.0, (name, scale, trial, got, (x, y))


def test_templates_are_the_published_ones():
    assert TEMPLATES["sphereface"]["size"] == (96, 112) and TEMPLATES["arcface"]["size"] == (112, 112)
    sp, ar = np.array(TEMPLATES["sphereface"]["points"]), np.array(TEMPLATES["arcface"]["points"])
    assert np.allclose(ar - sp, [[8, 0]] * 5)  # ArcFace's 112×112 template is SphereFace's shifted by 8 px


# --------------------------------------------------------------------------------------------- models
def test_se_resnet64_has_the_stated_block_counts():
    m = se_resnet64(num_classes=11, width=4)
    counts = layer_count(m)
    assert counts["blocks_per_stage"] == list(SE_RESNET64_BLOCKS) == [5, 9, 12, 5]
    assert counts["block_convs"] == 62 and counts["total"] == 64
    three = [mod for mod in m.stages.modules() if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (3, 3)]
    assert len(three) == 62  # the SE excitations and projection shortcuts are 1×1
    x = torch.rand(2, 3, 56, 48)
    assert m(x).shape == (2, 11) and m.embed(x).shape == (2, 32)
    cos, norm = se_resnet64(num_classes=11, width=4, head="angular").eval()(x)
    assert cos.shape == (2, 11) and norm.shape == (2,) and cos.abs().max() <= 1.0
    conv = m.stem[0].weight
    fan_in, fan_out = conv.shape[1] * 9, conv.shape[0] * 9
    assert conv.abs().max() <= math.sqrt(6 / (fan_in + fan_out)) + 1e-6  # Xavier-uniform bound


# -------------------------------------------------------------------------------------------- A-softmax
def test_asoftmax_matches_the_formula_on_hand_made_inputs():
    # psi(θ) = (−1)^k cos(4θ) − 2k on [kπ/4, (k+1)π/4]
    for deg, want in [(0, 1.0), (22.5, 0.0), (45, -1.0), (60, -(math.cos(math.radians(240))) - 2), (90, -3.0),
                      (120, math.cos(math.radians(480)) - 4), (180, -7.0)]:
        got = psi(torch.tensor([math.cos(math.radians(deg))], dtype=torch.float64), 4).item()
        assert got == pytest.approx(want, abs=1e-9), deg
    grid = torch.linspace(-1, 1, 4001, dtype=torch.float64)
    assert (psi(grid, 4).diff() >= -1e-12).all()  # monotonic in cos θ (decreasing in θ), continuous
    # two samples, three classes, hand-made cosines and norms
    cos = torch.tensor([[math.cos(math.radians(60)), 0.2, -0.1], [0.3, math.cos(math.radians(20)), 0.5]])
    norm = torch.tensor([2.0, 3.0])
    y = torch.tensor([0, 1])
    loss = ASoftmaxLoss(margin=4)((cos, norm), y).item()
    expected = []
    for i, yi in enumerate(y.tolist()):
        theta = math.acos(cos[i, yi].item())
        k = math.floor(4 * theta / math.pi)
        target = norm[i].item() * ((-1) ** k * math.cos(4 * theta) - 2 * k)
        others = [norm[i].item() * cos[i, j].item() for j in range(3) if j != yi]
        expected.append(-target + math.log(math.exp(target) + sum(math.exp(o) for o in others)))
    assert loss == pytest.approx(sum(expected) / 2, rel=1e-5)
    crit = ASoftmaxLoss(margin=4)
    assert torch.allclose(crit.scores((cos, norm)), cos * norm[:, None])
    with pytest.raises(ConfigError, match="angular"):
        crit(torch.zeros(2, 3), y)


def test_asoftmax_annealing_reaches_softmax_limit():
    """With a huge λ the target logit is ‖x‖cos θ_y: plain softmax cross-entropy on ‖x‖cos θ."""
    cos = torch.tensor([[0.1, 0.5, -0.3]])
    norm = torch.tensor([4.0])
    y = torch.tensor([2])
    crit = ASoftmaxLoss(margin=4, lambda_base=1e9, lambda_min=1e9)
    ce = torch.nn.functional.cross_entropy(cos * norm[:, None], y)
    assert crit((cos, norm), y).item() == pytest.approx(ce.item(), rel=1e-6)


# ------------------------------------------------------------------------------------------- detection
def test_no_face_two_faces_and_tiny_face_are_handled(tmp_path, bases):
    face, truth = photo(bases, 1, iod=34.0, roll=0.0, cx=100.0, cy=90.0)
    other, _ = photo(bases, 2, iod=34.0, roll=0.0, cx=100.0, cy=90.0)
    two = np.concatenate([face, other], 1)                     # 400×200: two people
    blank = np.full((200, 200, 3), 120, np.uint8)              # no face at all
    tiny, _ = photo(bases, 3, iod=8.0)                         # a face far below min_face_size
    ing = write_dataset(tmp_path, [face, two, blank, tiny])
    summary, det, queue, out = detect(tmp_path, ing, min_face_size=40)
    assert det["status"].tolist() == ["detected", "detected", "no_face", "no_face"]
    assert det.loc[0, "n_faces"] == 1 and det.loc[1, "n_faces"] == 2
    # the kept face of the two-face photo is the most probable one, and its landmarks are inside its box
    x1, y1, x2, y2 = det.loc[1, ["x1", "y1", "x2", "y2"]]
    assert x1 <= det.loc[1, "left_eye_x"] <= x2 and y1 <= det.loc[1, "nose_y"] <= y2
    assert abs(det.loc[0, "left_eye_x"] - truth["eye_l_x"]) < 0.2 * truth["iod"]
    assert set(queue["index"]) == {1, 2, 3}  # two faces, no face, tiny face: all queued with a reason
    reasons = dict(zip(queue["index"], queue["review"]))
    assert "2 faces" in reasons[1] and "no face" in reasons[2] and "no face" in reasons[3]
    assert summary["detection_rate"] == 0.5 and summary["review_queue"] == 3
    assert (out / "sheet.png").stat().st_size > 0
    aligned = align_dataset(out, {"template": "sphereface", "scale": 0.5}, tmp_path / "aligned")
    assert aligned["aligned"] == 2 and aligned["excluded"] == 2  # nothing silently dropped
    assert len(pd.read_csv(tmp_path / "aligned" / "excluded.csv")) == 2


def test_a_manual_box_changes_only_that_photos_crop(tmp_path, bases):
    imgs = [photo(bases, s)[0] for s in range(4)]
    ing = write_dataset(tmp_path, imgs)
    _, det, _, out = detect(tmp_path, ing, name="before")
    align_dataset(out, {"scale": 0.5}, tmp_path / "a1")
    before = np.load(tmp_path / "a1" / "images.npy")
    path = det.loc[2, "path"]
    box = det.loc[2, ["x1", "y1", "x2", "y2"]].to_numpy(float) + [12, 6, 12, 6]  # a reviewer's box, shifted
    manual = tmp_path / "manual_boxes.csv"
    pd.DataFrame([{"path": path, "action": "box", "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3],
                   "note": "moved"}], columns=MANUAL_COLUMNS).to_csv(manual, index=False)
    _, det2, queue2, out2 = detect(tmp_path, ing, manual=str(manual), name="after")
    align_dataset(out2, {"scale": 0.5}, tmp_path / "a2")
    after = np.load(tmp_path / "a2" / "images.npy")
    changed = [i for i in range(4) if not np.array_equal(before[i], after[i])]
    assert changed == [2]
    assert det2.loc[2, "status"] == "manual_box" and det2.loc[2, "x1"] == pytest.approx(box[0], abs=0.01)
    same_cols = [c for c in det.columns if c != "note"]
    pd.testing.assert_frame_equal(det2.drop(index=2)[same_cols], det.drop(index=2)[same_cols])
    # landmarks given by hand are used as they are; 'exclude' removes the photo from alignment with its reason
    pts = det.loc[1, ["left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y", "nose_x", "nose_y", "mouth_left_x",
                      "mouth_left_y", "mouth_right_x", "mouth_right_y"]].to_numpy(float) + 1.5
    rows = [{"path": det.loc[1, "path"], "action": "landmarks", **dict(zip(MANUAL_COLUMNS[6:16], pts))},
            {"path": det.loc[3, "path"], "action": "exclude", "note": "eyes closed"}]
    pd.DataFrame(rows, columns=MANUAL_COLUMNS).to_csv(manual, index=False)
    _, det3, _, out3 = detect(tmp_path, ing, manual=str(manual), name="again")
    assert det3.loc[1, "status"] == "manual_landmarks" and det3.loc[1, "left_eye_x"] == pytest.approx(pts[0], abs=0.01)
    summary = align_dataset(out3, {"scale": 0.5}, tmp_path / "a3")
    assert summary["aligned"] == 3
    assert "eyes closed" in pd.read_csv(tmp_path / "a3" / "excluded.csv")["reason"].iloc[0]


def test_manual_file_errors_name_the_line(tmp_path):
    f = tmp_path / "m.csv"
    pd.DataFrame([{"path": "nope.jpg", "action": "box", "x1": 1, "y1": 1, "x2": 5, "y2": 5}],
                 columns=MANUAL_COLUMNS).to_csv(f, index=False)
    with pytest.raises(ConfigError, match=r"m\.csv:2: path 'nope\.jpg' is not a photo"):
        load_manual(f, ["a.jpg"])
    pd.DataFrame([{"path": "a.jpg", "action": "box", "x1": 1, "y1": 1}], columns=MANUAL_COLUMNS).to_csv(f, index=False)
    with pytest.raises(ConfigError, match="incomplete coordinates"):
        load_manual(f, ["a.jpg"])
    with pytest.raises(ConfigError, match="not found"):
        load_manual(tmp_path / "missing.csv", ["a.jpg"])
    assert load_manual(ROOT / "review" / "faces_syndromes" / "manual_boxes.csv", ["a.jpg"]) == {}


# ---------------------------------------------------------------------------------------------- cohort
def test_patterns_and_mirroring(bases):
    assert len(S.PATTERNS) == 10 and S.CLASSES[0] == "healthy" and len(S.CLASSES) == 11
    assert S.pattern_displacement("healthy", 1.0) == {}
    for name in S.PATTERNS:
        d = S.pattern_displacement(name, 1.0)
        assert d and all(k in S.LANDMARKS for k in d)
        for k, v in d.items():  # symmetric: the mirror landmark moves by the mirrored vector
            m = S._mirror_name(k)
            if m != k:
                assert np.allclose(d[m], v * [-1, 1]), (name, k)
    names = [b.name for b in bases]
    assert names == ["astronaut", "astronaut_mirrored", "grace_hopper", "grace_hopper_mirrored"]
    a, am = bases[0], bases[1]
    assert np.allclose(a.norm["eye_l"] * [-1, 1], am.norm["eye_r"], atol=1e-6)


def test_cohort_is_deterministic_for_any_worker_count(tmp_path):
    cfg = {"syndromes": {"subjects_per_class": 3, "photos_per_subject": 1, "no_face_photos": 1},
           "identities": {"people": 4, "photos_per_person": 2}}

    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    s1 = S.generate_face_cohort(tmp_path / "w1", {**cfg, "workers": 1})
    S.generate_face_cohort(tmp_path / "w2", {**cfg, "workers": 2})
    assert digest(tmp_path / "w1") == digest(tmp_path / "w2")
    man = pd.read_csv(tmp_path / "w1" / "syndromes" / "manifest.csv")
    assert list(man.columns[:3]) == ["path", "label", "group_id"] and man["label"].nunique() == 11
    assert s1["syndromes"]["photos"] == 34 and s1["identities"]["photos"] == 8
    with pytest.raises(S.CohortConfigError, match="unknown key"):
        S.resolve_config({"colour": 1})


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_test_only_subjects_and_people(tmp_path):
    """Extra test-only people: their own ids, streams and split "test"; every other byte unchanged."""
    cfg = {"syndromes": {"subjects_per_class": 3, "photos_per_subject": 1, "no_face_photos": 1},
           "identities": {"people": 4, "photos_per_person": 2}, "workers": 1}
    S.generate_face_cohort(tmp_path / "main", cfg)
    s_syn = S.generate_face_cohort(tmp_path / "syn", {**cfg, "syndromes": {**cfg["syndromes"],
                                                                         "test_subjects_per_class": 1}})
    s_ids = S.generate_face_cohort(tmp_path / "ids", {**cfg, "identities": {**cfg["identities"], "test_people": 2}})
    main = _digest(tmp_path / "main")
    for run, ds, other in (("syn", "syndromes", "identities"), ("ids", "identities", "syndromes")):
        new = _digest(tmp_path / run)
        assert {k: v for k, v in new.items() if k.startswith(other)} == \
            {k: v for k, v in main.items() if k.startswith(other)}  # the other dataset: byte for byte
        for rel, h in main.items():  # every photo of the main cohort is unchanged
            if rel.endswith(".jpg"):
                assert new[rel] == h, rel
        old = pd.read_csv(tmp_path / "main" / ds / "manifest.csv", keep_default_na=False)
        man = pd.read_csv(tmp_path / run / ds / "manifest.csv", keep_default_na=False)
        assert list(man.columns) == list(old.columns) + ["split"]
        assert man.iloc[: len(old)].drop(columns="split").equals(old)  # same rows, same order, split ""
        assert set(man["split"].iloc[: len(old)]) == {""}
        test = man.iloc[len(old):]
        assert set(test["split"]) == {"test"} and test["group_id"].str.startswith("t").all()
        assert not set(test["group_id"]) & set(old["group_id"])
        assert all((tmp_path / run / ds / p).is_file() for p in test["path"])
        truth = pd.read_csv(tmp_path / run / ds / "truth.csv", keep_default_na=False)
        assert truth["split"].tolist() == man["split"].tolist()
    syn = pd.read_csv(tmp_path / "syn" / "syndromes" / "manifest.csv", keep_default_na=False)
    test = syn[syn["split"] == "test"]
    assert sorted(test["label"]) == sorted(S.CLASSES) and (test["no_face"] == 0).all()  # one per class
    assert test["group_id"].iloc[0] == "ts00000" and s_syn["syndromes"]["test_photos"] == 11
    ids = pd.read_csv(tmp_path / "ids" / "identities" / "manifest.csv", keep_default_na=False)
    test = ids[ids["split"] == "test"]
    assert test.groupby("group_id").size().to_dict() == {"tp0000": 2, "tp0001": 2}  # whole people, all photos
    assert (test["label"] == test["group_id"]).all()  # an identity's label is the person
    assert set(ids.loc[ids["split"] == "", "group_id"]).isdisjoint(test["group_id"])
    assert s_ids["identities"]["test_people"] == 2 and s_ids["identities"]["people"] == 6
    # a test person is not a main person redrawn: own stream
    assert _digest(tmp_path / "ids")["identities/tp0000/tp0000_0.jpg"] != main["identities/p0000/p0000_0.jpg"]
    with pytest.raises(S.CohortConfigError, match="test_people"):
        S.resolve_config({"identities": {"test_people": -1}})
    with pytest.raises(S.CohortConfigError, match="test_subjects_per_class"):
        S.resolve_config({"syndromes": {"test_subjects_per_class": 1.5}})


# -------------------------------------------------------------------------------------- verification
def test_ten_fold_verification_protocol():
    from genediag.faces.evaluate import ten_fold_verification, verification_pairs

    people = np.repeat(np.arange(6), 4)
    i, j, same = verification_pairs(people, seed=0)
    assert same.sum() == 6 * 6 and (same == 0).sum() == 36
    assert (people[i] == people[j]).tolist() == same.astype(bool).tolist()
    perfect = ten_fold_verification(np.where(same == 1, 0.9, 0.1) + 0.0, same, seed=0)
    assert perfect["accuracy"] == 1.0 and len(perfect["fold_accuracy"]) == 10
    noise = ten_fold_verification(np.random.default_rng(0).random(len(same)), same, seed=0)
    assert 0.2 < noise["accuracy"] < 0.8


# ------------------------------------------------------------------------------------------ end to end
def test_tiny_face_branch_end_to_end(tmp_path, monkeypatch):
    """generate → ingest → detect → align → split → pretrain → finetune (A-softmax, from the pretrained
    weights) → verification and test metrics → report, on a few photos and one epoch."""
    from genediag.faces.evaluate import evaluate_face_run, verify_run
    from genediag.faces.split import split_faces
    from genediag.faces.train import train_face_run
    from genediag.reports.faces import write_faces_report

    monkeypatch.chdir(tmp_path)
    S.generate_face_cohort("data/synthetic-faces", {"syndromes": {"subjects_per_class": 3, "photos_per_subject": 1,
                                                                  "no_face_photos": 0},
                                                    "identities": {"people": 5, "photos_per_person": 3},
                                                    "workers": 1})
    for ds, kind, test in (("faces_syndromes", "syndromes", 0.34), ("faces_identities", "identities", 0.4)):
        src = "syndromes" if kind == "syndromes" else "identities"
        ingest({"source": f"data/synthetic-faces/{src}/manifest.csv", "mode": "RGB", "size": 16},
               f"data/ingested/{ds}")
        run_detection(f"data/ingested/{ds}", {}, f"data/faces/detect/{ds}", f"reports/faces_review/{ds}.csv",
                      f"reports/faces_review/{ds}.png", progress=False)
        align_dataset(f"data/faces/detect/{ds}", {"scale": 0.5}, f"data/faces/aligned/{ds}")
        split_faces(f"data/faces/aligned/{ds}", f"data/faces/splits/{ds}.csv",
                    {"kind": kind, "test": test, "val": 0.34, "trials": 20})
    fit = {"epochs": 1, "batch_size": 8, "device": "cpu", "early_stopping": {"patience": 0}}
    arch = {"name": "se_resnet64", "width": 2}
    pre = {"dataset": "faces_identities", "model": "identity", "arch": {**arch, "head": "linear"}, "fit": fit}
    train_face_run("pre", pre, "pretrain")
    # same config, same bytes: the run directory (a DVC output other stages depend on) holds no wall-clock time
    first = {f.name: f.read_bytes() for f in Path("models/pre").iterdir()}
    clock = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: 1000.0 + 3 * clock())   # a slower machine's wall clock
    train_face_run("pre", pre, "pretrain")
    monkeypatch.setattr(time, "perf_counter", clock)
    assert {f.name: f.read_bytes() for f in Path("models/pre").iterdir()} == first
    assert {"model.pt", "fit.json", "args.yaml"} <= set(first)
    fine = {"dataset": "faces_syndromes", "model": "crossloss", "init": "pre", "arch": {**arch, "head": "angular"},
            "fit": {**fit, "loss": {"name": "a_softmax", "margin": 4}},
            "augment": [{"name": "Affine", "rotate": [-5, 5], "translate_px": [-2, 2], "scale": [0.95, 1.05],
                         "shear": [-2, 2], "p": 1.0}]}
    info = train_face_run("ft", fine, "finetune")
    assert info["init_tensors"] > 100
    ver = verify_run("pre", {"dataset": "faces_identities", "model": "identity", "arch": {**arch, "head": "linear"},
                             "fit": fit})
    assert 0.0 <= ver["verification_accuracy"] <= 1.0 and ver["pairs"] > 0
    res = evaluate_face_run("ft", fine)
    assert set(res["per_class"]) == set(S.CLASSES) and 0.0 <= res["top1"] <= 1.0
    assert 0.0 <= res["top1_patterns"] <= 1.0
    conf = pd.read_csv("plots/confusion/faces/crossloss.csv")
    assert list(conf.columns) == ["actual", "predicted"] and len(conf) == res["n"]
    metrics = json.loads(Path("metrics/faces/crossloss.json").read_text())
    assert "seconds" not in json.dumps(metrics)  # no timings in metrics
    md = write_faces_report({"syndromes": "faces_syndromes", "identities": "faces_identities", "pretrain": ["identity"],
                             "finetune": ["crossloss"], "embedding_runs": {"crossloss": "ft"}}, True, "reports/faces.md")
    text = md.read_text()
    assert "Synthetic data" in text and "0.9350" in text  # the published top-1 beside ours
    assert "Table 5" in text and "Table 3" in text and "Fig. 5" in text
