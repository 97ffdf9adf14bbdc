"""Face branch: synthetic cohort, MTCNN detection and alignment during ingest (FacePreparer), reviewer
corrections (review/<kind>/<dataset>.csv), SE-ResNet64, A-softmax, the verification protocol, and a tiny
end-to-end run (generate → ingest (detect + align) → split → pretrain → finetune → evaluate → report)."""

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
from genediag.data.ingest import SYNTHETIC_MARKER, is_synthetic, load_ingested
from genediag.faces import synthetic as S
from genediag.faces.align import TEMPLATES, align_face, similarity_transform, template
from genediag.faces.detect import BOX_COLUMNS, POINT_COLUMNS
from genediag.models.seresnet import SE_RESNET64_BLOCKS, layer_count, se_resnet64
from genediag.pipeline import ingest_dataset
from genediag.training.losses import ASoftmaxLoss, create_loss, psi

ROOT = Path(__file__).resolve().parents[2]
REVIEW_COLUMNS = ["path", "action", "label", "note", *BOX_COLUMNS, *POINT_COLUMNS]


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


def write_photos(tmp_path, images, name="ds"):
    """Photos + a CSV manifest (a user's own data: no synthetic marker) → the manifest path."""
    root = tmp_path / name
    rows = []
    for i, img in enumerate(images):
        p = root / "photos" / f"p{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
        rows.append({"path": f"photos/p{i}.png", "label": "healthy", "group_id": f"g{i}"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def face_dataset(source, detect=None, align=None, **extra):
    """A ``datasets:`` entry of kind face_syndromes (48×56 crops)."""
    return {"kind": "face_syndromes", "source": str(source),
            "faces": {"detect": {"min_face_size": 40, **(detect or {})},
                      "align": {"template": "sphereface", "scale": 0.5, **(align or {})}}, **extra}


def ingest(tmp_path, source, out="ing", name="faces", review=None, **cfg):
    """ingest_dataset → (summary, detections, review queue, quarantine, manifest, images, out_dir). `review`: rows of
    the reviewer's file review/face_syndromes/<name>.csv."""
    review_root = tmp_path / f"review-{out}"
    (review_root / "face_syndromes").mkdir(parents=True, exist_ok=True)
    if review is not None:
        pd.DataFrame(review, columns=REVIEW_COLUMNS).to_csv(review_root / "face_syndromes" / f"{name}.csv",
                                                            index=False)
    out_dir = tmp_path / out
    summary = ingest_dataset(name, face_dataset(source, **cfg), out_dir, review_root, progress=False)
    manifest, images = load_ingested(out_dir)
    det = pd.read_csv(out_dir / "detections.csv", keep_default_na=False)
    queue = pd.read_csv(out_dir / "review_queue.csv", keep_default_na=False)
    quarantine = pd.read_csv(out_dir / "quarantine.csv", keep_default_na=False)
    return summary, det, queue, quarantine, manifest, np.asarray(images), out_dir


# ------------------------------------------------------------------------------------------ alignment
@pytest.mark.parametrize("name,scale", [("sphereface", 1.0), ("arcface", 1.0), ("sphereface", 0.5),
                                        ("facenet", 0.7)])
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
    # FaceNet (Inception-ResNet-v1, 160×160): the ArcFace layout scaled to 160 px
    assert TEMPLATES["facenet"]["size"] == (160, 160)
    assert np.allclose(np.array(TEMPLATES["facenet"]["points"]), ar * 160 / 112)
    pts, (w, h) = template("facenet", 0.5)
    assert (w, h) == (80, 80) and np.allclose(pts, ar * 80 / 112)
    with pytest.raises(ConfigError, match="unknown 'vggface'"):
        template("vggface")
    with pytest.raises(ConfigError, match="border"):
        align_face(np.zeros((50, 50, 3), np.uint8), sp, border="wrap")


# --------------------------------------------------------------------------------------------- models
def test_se_resnet64_has_the_stated_block_counts():
    from genediag.models import create_model

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
    # the registry builds it by name (params: arch: {name: se_resnet64, width, head})
    reg = create_model("se_resnet64", num_classes=11, in_chans=3, img_size=56, width=4, head="angular")
    assert layer_count(reg) == counts and isinstance(reg(x), tuple)


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


def test_asoftmax_from_the_loss_registry():
    """fit.loss: {name: a_softmax, ...} (schema-validated: unset keys are null) builds the A-softmax loss; its
    annealing λ decays from lambda_base to lambda_min over training steps only."""
    from genediag.schema import LOSS, validate

    cfg = validate({"name": "a_softmax", "margin": 4, "lambda_base": 1000, "lambda_gamma": 0.12, "lambda_power": 1,
                    "lambda_min": 5}, LOSS, "test.loss")
    crit = create_loss(cfg)
    assert isinstance(crit, ASoftmaxLoss) and crit.m == 4 and crit.current_lambda() == 1000.0
    cos, norm, y = torch.tensor([[0.3, 0.1]], requires_grad=True), torch.tensor([2.0]), torch.tensor([0])
    with torch.no_grad():
        crit((cos, norm), y)
    assert crit.steps == 0                                   # evaluation does not advance the clock
    for _ in range(10):
        crit((cos, norm), y).backward()
    assert crit.steps == 10 and crit.current_lambda() == pytest.approx(1000 / (1 + 0.12 * 10))
    crit.steps = 10**6
    assert crit.current_lambda() == 5.0
    assert create_loss(validate({"name": "a_softmax"}, LOSS, "t")).current_lambda() == 0.0  # plain A-softmax
    with pytest.raises(ConfigError, match="positive integer"):
        create_loss({"name": "a_softmax", "margin": 2.5})
    with pytest.raises(ConfigError, match="unknown 'sphereface'"):
        create_loss({"name": "sphereface"})


# ------------------------------------------------------------------------------------ detection during ingest
def test_no_face_two_faces_and_tiny_face_are_handled(tmp_path, bases):
    """Every photo is accounted for: aligned (manifest), or quarantined with its reason; the review queue lists the
    photos a person should look at, with a contact sheet. On real data a queued photo stays out of training until
    a reviewer accepts it; on synthetic data (or queued_in_training: true) it trains."""
    face, truth = photo(bases, 1, iod=34.0, roll=0.0, cx=100.0, cy=90.0)
    other, _ = photo(bases, 2, iod=34.0, roll=0.0, cx=100.0, cy=90.0)
    two = np.concatenate([face, other], 1)                     # 400×200: two people
    cfg = S.resolve_config({})
    person = S.make_person("t", "healthy", np.random.default_rng(5), cfg, len(bases), base=0)
    empty, _ = S.render_photo(bases[0], person, np.random.default_rng(5), cfg, (200, 200), no_face=True)
    tiny, _ = photo(bases, 3, iod=8.0)                         # a face far below min_face_size
    flat = np.full((200, 200, 3), 120, np.uint8)               # not a photo at all: refused before detection
    src = write_photos(tmp_path, [face, two, empty, tiny, flat])
    assert not is_synthetic(src)
    summary, det, queue, quar, man, images, out = ingest(tmp_path, src)
    assert det["path"].tolist() == [f"photos/p{i}.png" for i in range(4)]   # p4 never reached the detector
    assert det["status"].tolist() == ["detected", "queued", "no_face", "no_face"]
    assert det.loc[0, "n_faces"] == 1 and det.loc[1, "n_faces"] == 2 and det.loc[1, "comparable_faces"] == 2
    # the kept face of the two-face photo is the most probable one, and its landmarks are inside its box
    x1, y1, x2, y2 = det.loc[1, ["x1", "y1", "x2", "y2"]].astype(float)
    assert x1 <= float(det.loc[1, "left_eye_x"]) <= x2 and y1 <= float(det.loc[1, "nose_y"]) <= y2
    assert abs(float(det.loc[0, "left_eye_x"]) - truth["eye_l_x"]) < 0.2 * truth["iod"]
    assert set(queue["path"]) == {"photos/p1.png", "photos/p2.png", "photos/p3.png"}
    queued = queue.set_index("path").loc["photos/p1.png"]
    assert "2 comparable faces" in queued["review"]
    assert float(queued["x2"]) > float(queued["x1"]) and queued["left_eye_x"] != ""   # the reviewer sees the kept face
    # real data: only the clean photo is aligned; the rest are quarantined with their reasons
    assert man["path"].tolist() == ["photos/p0.png"] and images.shape == (1, 56, 48, 3)
    reasons = dict(zip(quar["path"], quar["reason"]))
    assert set(reasons) == {"photos/p1.png", "photos/p2.png", "photos/p3.png", "photos/p4.png"}
    assert reasons["photos/p1.png"].startswith("in the review queue") and "faces.csv" in reasons["photos/p1.png"]
    assert reasons["photos/p2.png"].startswith("no face found") and reasons["photos/p3.png"].startswith("no face found")
    assert reasons["photos/p4.png"].startswith("constant image")
    assert summary["input"] == 5 and summary["accepted"] + summary["quarantined"] == 5 and not summary["synthetic"]
    f = summary["faces"]
    assert f["photos_decoded"] == 4 and f["face_found_rate"] == 0.5 and f["review_queue"] == 3
    assert f["status"] == {"detected": 1, "no_face": 2, "queued": 1} and f["queued_in_training"] is False
    assert f["comparable_multi_face"] == 1 and f["found_after_rotation"] == 0
    assert summary["faces_config"]["align"]["template"] == "sphereface" and summary["image_shape"] == [56, 48, 3]
    assert (out / "review_sheet.png").stat().st_size > 0
    # the crop is the photo aligned onto the template from the detected landmarks (stored to 0.01 px)
    pts = det.loc[0, POINT_COLUMNS].astype(float).to_numpy().reshape(5, 2)
    diff = np.abs(images[0].astype(int) - align_face(face, pts, "sphereface", 0.5).astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 8
    # queued photos train when told to (synthetic data does by default: queued_in_training: auto)
    s2, det2, _, quar2, man2, _, _ = ingest(tmp_path, src, out="ing2", detect={"queued_in_training": True})
    assert man2["path"].tolist() == ["photos/p0.png", "photos/p1.png"]
    assert set(quar2["path"]) == {"photos/p2.png", "photos/p3.png", "photos/p4.png"}
    assert man2["detection"].tolist() == ["detected", "queued"] and s2["faces"]["queued_in_training"] is True
    pd.testing.assert_frame_equal(det2, det)   # the detections do not depend on that setting


def test_a_face_turned_sideways_is_found_after_rotation(tmp_path, bases):
    """A photo with no upright face is searched again turned by 90/270/180°; the landmarks are mapped back."""
    face, truth = photo(bases, 4, iod=34.0, roll=0.0, cx=100.0, cy=90.0)
    turned = np.ascontiguousarray(np.rot90(face, -1))          # the camera held sideways
    src = write_photos(tmp_path, [face, turned])
    summary, det, _, _, man, images, _ = ingest(tmp_path, src)
    assert det["rotation"].tolist() == [0, 90] and det["status"].tolist() == ["detected", "detected"]
    assert summary["faces"]["found_after_rotation"] == 1 and len(man) == 2
    # the landmarks are in the turned photo's own pixels: (x, y) of the upright one → (H − 1 − y, x)
    upright = det.loc[0, POINT_COLUMNS].astype(float).to_numpy().reshape(5, 2)
    sideways = det.loc[1, POINT_COLUMNS].astype(float).to_numpy().reshape(5, 2)
    expect = np.stack([face.shape[0] - 1 - upright[:, 1], upright[:, 0]], 1)
    assert np.abs(sideways[[0, 1, 2]] - expect[[0, 1, 2]]).max() < 0.1 * truth["iod"]
    # both crops are upright faces: they agree far better than either does with the other one mirrored
    a, b = images.astype(float)
    assert np.abs(a - b).mean() < np.abs(a - b[:, ::-1]).mean()


def test_already_aligned_crops_are_resized_not_detected(tmp_path, bases):
    """align.detect: false (a dataset of tight, aligned crops): each photo is resized to the template, no MTCNN."""
    import cv2

    ramp = np.linspace(0, 255, 96 * 112 * 3).reshape(112, 96, 3).astype(np.uint8)   # anything but a face
    crops = [ramp, np.ascontiguousarray(ramp[::-1])]
    src = write_photos(tmp_path, crops)
    summary, det, queue, _, man, images, _ = ingest(tmp_path, src, align={"detect": False})
    assert det["status"].tolist() == ["aligned_input"] * 2 and len(queue) == 0 and len(man) == 2
    assert images.shape == (2, 56, 48, 3) and summary["faces"]["face_found"] == 0
    assert np.array_equal(images[0], cv2.resize(ramp, (48, 56), interpolation=cv2.INTER_AREA))


# --------------------------------------------------------------------------------------- reviewer corrections
def test_a_reviewer_box_changes_only_that_photos_crop(tmp_path, bases):
    imgs = [photo(bases, s)[0] for s in range(4)]
    src = write_photos(tmp_path, imgs)
    _, det, _, _, man, before, _ = ingest(tmp_path, src, out="before")
    assert len(man) == 4
    path = det.loc[2, "path"]
    box = det.loc[2, BOX_COLUMNS].astype(float).to_numpy() + [12, 6, 12, 6]  # a reviewer's box, shifted
    review = [{"path": path, "action": "box", **dict(zip(BOX_COLUMNS, box)), "note": "moved"}]
    _, det2, _, _, _, after, _ = ingest(tmp_path, src, out="after", review=review)
    changed = [i for i in range(4) if not np.array_equal(before[i], after[i])]
    assert changed == [2]
    assert det2.loc[2, "status"] == "manual_box" and float(det2.loc[2, "x1"]) == pytest.approx(box[0], abs=0.01)
    pd.testing.assert_frame_equal(det2.drop(index=2), det.drop(index=2))
    # landmarks given by hand are used as they are; exclude quarantines the photo with the note as its reason;
    # relabel changes the label and keeps the old one
    pts = det.loc[1, POINT_COLUMNS].astype(float).to_numpy() + 1.5
    review = [{"path": det.loc[1, "path"], "action": "landmarks", **dict(zip(POINT_COLUMNS, pts))},
              {"path": det.loc[3, "path"], "action": "exclude", "note": "eyes closed"},
              {"path": det.loc[0, "path"], "action": "relabel", "label": "22q11"}]
    summary, det3, _, quar, man3, again, _ = ingest(tmp_path, src, out="again", review=review)
    assert det3.loc[1, "status"] == "manual_landmarks"
    assert float(det3.loc[1, "left_eye_x"]) == pytest.approx(pts[0], abs=0.01)
    assert np.abs(again[1].astype(int) - align_face(imgs[1], pts.reshape(5, 2), "sphereface", 0.5)).max() <= 1
    assert man3["path"].tolist() == ["photos/p0.png", "photos/p1.png", "photos/p2.png"]
    assert quar["reason"].tolist() == ["excluded by the reviewer: eyes closed"]
    assert man3.loc[0, "label"] == "22q11" and man3.loc[0, "original_label"] == "healthy"
    assert summary["review_file"].endswith("face_syndromes/faces.csv")


def test_accepting_a_queued_photo_lets_it_train(tmp_path, bases):
    face, _ = photo(bases, 1, iod=34.0, roll=0.0, cx=100.0, cy=90.0)
    other, _ = photo(bases, 2, iod=34.0, roll=0.0, cx=100.0, cy=90.0)
    src = write_photos(tmp_path, [face, np.concatenate([face, other], 1)])
    _, det, queue, quar, man, _, _ = ingest(tmp_path, src, out="queued")
    assert queue["path"].tolist() == ["photos/p1.png"] and man["path"].tolist() == ["photos/p0.png"]
    _, det2, queue2, quar2, man2, _, _ = ingest(tmp_path, src, out="accepted",
                                               review=[{"path": "photos/p1.png", "action": "accept"}])
    assert det2["status"].tolist() == ["detected", "accepted"] and len(queue2) == 0 and len(quar2) == 0
    assert man2["detection"].tolist() == ["detected", "accepted"]


def test_review_file_errors_name_the_file_and_line(tmp_path, bases):
    src = write_photos(tmp_path, [photo(bases, 0)[0]])
    with pytest.raises(ConfigError, match=r"path\(s\) not in the dataset: \['nope\.jpg'\]"):
        ingest(tmp_path, src, out="e1", review=[{"path": "nope.jpg", "action": "exclude"}])
    with pytest.raises(ConfigError, match=r"faces\.csv:2: action box needs x1, y1, x2, y2"):
        ingest(tmp_path, src, out="e2", review=[{"path": "photos/p0.png", "action": "box", "x1": 1, "y1": 1}])
    with pytest.raises(ConfigError, match=r"faces\.csv:2: box needs x2 > x1"):
        ingest(tmp_path, src, out="e3", review=[{"path": "photos/p0.png", "action": "box", "x1": 9, "y1": 1,
                                                 "x2": 5, "y2": 5}])
    bad = tmp_path / "review-e4" / "face_syndromes"
    bad.mkdir(parents=True)
    pd.DataFrame([{"path": "photos/p0.png", "action": "box", "width": 3}]).to_csv(bad / "faces.csv", index=False)
    with pytest.raises(ConfigError, match=r"unknown column\(s\) \['width'\]"):
        ingest(tmp_path, src, out="e4")
    # the repository's review folders hold no corrections for the synthetic datasets
    for kind in ("face_syndromes", "face_identities"):
        assert not list((ROOT / "review" / kind).glob("*.csv"))


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
    assert (tmp_path / "w1" / SYNTHETIC_MARKER).is_file()   # ingest says "synthetic" for this cohort
    assert is_synthetic(tmp_path / "w1" / "syndromes" / "manifest.csv")
    assert is_synthetic(tmp_path / "w1" / "identities" / "manifest.csv")
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


def test_verification_interval_is_of_the_ten_fold_decisions():
    """The interval resamples the out-of-fold decisions the 10-fold accuracy counts, so it brackets that figure
    even on a small, noisy set (a threshold fitted on all pairs gave 0.600 with an interval of [0.696, 0.889])."""
    from genediag.faces.evaluate import verification_metrics

    rng = np.random.default_rng(3)
    people = np.repeat(np.arange(22), 2)
    feats = rng.normal(size=(len(people), 8)) + 0.4 * rng.normal(size=(22, 8))[people]
    m = verification_metrics(feats, people, seed=0, evidence={"bootstrap": 500, "seed": 0})
    lo, hi = m["ci95"]["verification_accuracy"]
    assert lo <= m["verification_accuracy"] <= hi and hi - lo > 0.05


# ------------------------------------------------------------------------------------------ end to end
FAMILY = {"arch": {"name": "se_resnet64", "width": 2}, "seeds": 1,
          "fit": {"epochs": 1, "batch_size": 8, "device": "cpu", "early_stopping": {"patience": 0},
                  "channels_last": False, "eval_batch_size": 64}}
FACES = {   # a faces: section of params.yaml, shrunk
    "identities": "faces_identities", "syndromes": "faces_syndromes",
    "families": {"seresnet64": FAMILY},
    "pretrain": {"pre": {"family": "seresnet64", "model": "identity", "arch": {"head": "linear"}}},
    "finetune": {"ft": {"family": "seresnet64", "model": "crossloss", "init": "pre", "arch": {"head": "angular"},
                        "fit": {"loss": {"name": "a_softmax", "margin": 4}},
                        "augment": [{"name": "Affine", "rotate": [-5, 5], "translate_px": [-2, 2],
                                     "scale": [0.95, 1.05], "shear": [-2, 2], "p": 1.0}]}},
}
DATASETS = {   # the datasets: entries of the two face datasets, with ratios that leave a few people in each split
    "faces_syndromes": {"kind": "face_syndromes", "source": "data/synthetic-faces/syndromes/manifest.csv",
                        "faces": {"align": {"template": "sphereface", "scale": 0.5}},
                        "split": {"ratios": {"train": 0.34, "val": 0.33, "test": 0.33}}},
    "faces_identities": {"kind": "face_identities", "source": "data/synthetic-faces/identities/manifest.csv",
                         "faces": {"align": {"template": "sphereface", "scale": 0.5}},
                         "split": {"ratios": {"train": 0.4, "val": 0.2, "test": 0.4}}},
}


@pytest.mark.slow
def test_tiny_face_branch_end_to_end(tmp_path, monkeypatch):
    """generate → ingest (detect + align) → split → pretrain → finetune (A-softmax, from the pretrained weights)
    → verification and test metrics → report, on a few photos and one epoch, as the dvc.yaml stages call them."""
    from genediag.data.split import split_dataset
    from genediag.faces.evaluate import evaluate_face_run, verify_run
    from genediag.faces.train import train_face_run
    from genediag.reports.faces import write_faces_report
    from genediag.schema import EVIDENCE, FACE_RUN, resolve_dataset, resolve_run, validate

    monkeypatch.chdir(tmp_path)
    S.generate_face_cohort("data/synthetic-faces", {"syndromes": {"subjects_per_class": 3, "photos_per_subject": 1,
                                                                  "no_face_photos": 1},
                                                    "identities": {"people": 5, "photos_per_person": 3},
                                                    "workers": 1})
    for name, entry in DATASETS.items():
        summary = ingest_dataset(name, entry, f"data/ingested/{name}", "review", progress=False)
        assert summary["synthetic"] and summary["faces"]["queued_in_training"] is True   # the generator's marker
        split = resolve_dataset(name, entry)["split"]
        info = split_dataset(f"data/ingested/{name}", f"data/splits/{name}.csv", split, entry["kind"])
        assert set(info["items"]) == {"train", "val", "test"}
    syn = json.loads(Path("data/ingested/faces_syndromes/summary.json").read_text())
    assert syn["input"] == 34 and syn["quarantine_reasons"] == {"no face found": 1}   # the deliberate blank photo
    ids = pd.read_csv("data/splits/faces_identities.csv", dtype=str, keep_default_na=False)
    held = set(ids.loc[ids["split"] == "test", "group_id"])
    assert len(held) == 2 and not held & set(ids.loc[ids["split"] != "test", "group_id"])   # whole people held out

    pre = resolve_run("faces", "pre", FACES, runs_key="pretrain", spec=FACE_RUN)
    assert pre["task"] == "faces" and pre["fit"]["loss"]["name"] == "cross_entropy"
    args = ("data/ingested/faces_identities", "data/splits/faces_identities.csv", "models/pre")
    train_face_run("pre", pre, "pretrain", *args, resume_root=None)
    # same config, same model: only fit.json holds timings (machine-dependent; no stage depends on it)
    first = {f.name: f.read_bytes() for f in Path("models/pre").iterdir()}
    assert {"model.pt", "seeds.pt", "model.onnx", "fit.json", "args.yaml"} <= set(first)
    clock = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: 1000.0 + 3 * clock())   # a slower machine's wall clock
    train_face_run("pre", pre, "pretrain", *args, resume_root=None)
    monkeypatch.setattr(time, "perf_counter", clock)
    again = {f.name: f.read_bytes() for f in Path("models/pre").iterdir()}
    assert {k: v for k, v in again.items() if k != "fit.json"} == {k: v for k, v in first.items() if k != "fit.json"}
    fit_json = json.loads(first["fit.json"])
    assert fit_json["stage"] == "pretrain" and fit_json["classes"] == sorted(set(ids.loc[ids["split"] == "train",
                                                                                          "label"]))

    ft = resolve_run("faces", "ft", FACES, runs_key="finetune", spec=FACE_RUN)
    with pytest.raises(ConfigError, match="needs 'init'"):
        train_face_run("ft", ft, "finetune", "data/ingested/faces_syndromes", "data/splits/faces_syndromes.csv",
                       "models/ft")
    info = train_face_run("ft", ft, "finetune", "data/ingested/faces_syndromes", "data/splits/faces_syndromes.csv",
                          "models/ft", init_dir="models/pre", resume_root=None)
    assert info["epochs_run"] == 1
    # stage 2 starts from the stage-1 body (every weight but the head), then moves a little in one epoch
    from genediag.faces.train import init_from_checkpoint
    from genediag.models.checkpoint import load_checkpoint

    model_pre, _ = load_checkpoint("models/pre/model.pt")
    model_ft, meta_ft = load_checkpoint("models/ft/model.pt")
    assert meta_ft["init"] == "pre" and meta_ft["stage"] == "finetune" and meta_ft["class_names"] == sorted(S.CLASSES)
    fresh = se_resnet64(num_classes=11, img_size=56, width=2, head="angular")
    w_pre, w_ft, w_fresh = (m.stem[0].weight.detach() for m in (model_pre, model_ft, fresh))
    assert (w_ft - w_pre).norm() < 0.5 * (w_fresh - w_pre).norm()
    assert init_from_checkpoint(fresh, "models/pre/model.pt")["init_tensors"] > 100
    assert torch.equal(fresh.stem[0].weight, w_pre)
    with pytest.raises(ConfigError, match="does not fit this run's architecture"):
        init_from_checkpoint(se_resnet64(num_classes=11, img_size=56, width=4), "models/pre/model.pt")

    evidence = validate({"bootstrap": 50, "mc_passes": 2, "mc_items": 20}, EVIDENCE, "test.evidence")
    ver = verify_run("models/pre", *args[:2], "metrics/faces/pre.json", evidence)
    assert 0.0 <= ver["verification_accuracy"] <= 1.0 and ver["pairs"] == 12 and ver["positive_pairs"] == 6
    assert ver["held_out_people"] == 2 and ver["synthetic"] is True
    res = evaluate_face_run("models/ft", "data/ingested/faces_syndromes", "data/splits/faces_syndromes.csv",
                            "metrics/faces/ft.json", "plots/faces", "evaluation/faces/ft", evidence)
    assert set(res["per_class"]) == set(S.CLASSES) and 0.0 <= res["top1"] <= 1.0 and res["loss"] == "a_softmax"
    assert 0.0 <= res["top1_patterns"] <= 1.0 and res["init"] == "pre"
    conf = pd.read_csv("plots/faces/confusion/ft.csv")
    assert list(conf.columns) == ["actual", "predicted"] and len(conf) == res["n"]
    assert "seconds" not in Path("metrics/faces/ft.json").read_text()  # no timings in metrics
    assert Path("evaluation/faces/ft/embeddings.npz").is_file()
    report = {"pretrain": ["pre"], "finetune": ["ft"], "embedding_runs": {"crossloss": "ft"}}
    md = write_faces_report(report, "data/ingested/faces_syndromes", "data/ingested/faces_identities",
                            "reports/faces.md", figures_dir="reports/figures/faces")
    text = md.read_text()
    assert "Synthetic data" in text and "0.9350" in text  # the published top-1 beside ours
    assert "Table 5" in text and "Table 3" in text and "Fig. 5" in text and "## Cohort" in text
    assert Path("reports/figures/faces/embeddings.png").is_file()
