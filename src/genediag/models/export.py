"""ONNX export of the trained models and CPU inference with ONNX Runtime (float and static int8).

The exported graph is the model followed by :func:`genediag.models.inference.class_scores`: its output ``scores``
is the N×C class scores for every model kind, so ONNX Runtime and torch agree on what the "logits" are (with
``features=True`` a second output ``features`` holds the penultimate features, the input of the last linear
layer, for the out-of-distribution check):

- softmax models (Pinnacle DCNN, timm backbones, multi-class thesis models): the logits, unchanged;
- the thesis' single sigmoid logit z (binary tasks): N×2 scores [−z/2, z/2], whose softmax is [1 − σ(z), σ(z)];
- the face SE-ResNet's angular (A-softmax) head, which returns (cos θ N×C, ‖x‖ N): the scores ‖x‖ cos θ that
  :meth:`genediag.training.losses.ASoftmaxLoss.scores` gives (the logits without the margin).

The input is float32 N×C×H×W images in [0, 1] (the input normalisation is inside the models), named ``images``,
with a dynamic batch axis; the output is named ``scores``. ``predict_proba`` is the softmax of the scores.

Exporter: torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), pinned. Measured with
torch 2.14.1 / onnx 1.23 / onnxruntime 1.32 on every model kind here (DCNN, timm tf_efficientnet_lite0 and
mobilenetv2_100, thesis VGG16 and InceptionV3 (TensorFlow pooling too), SE-ResNet64 with the angular head): both
exporters give graphs that match torch (batch 1 and 5), but the torch.export-based one (``dynamo=True``, torch's
default since 2.9)
- needs the extra package ``onnxscript`` (and ``onnx_ir``);
- cannot write opset 17: it exports opset 18 and its down-conversion failed on every model ("axes_input_to_attribute
  ... No initializer or constant input"), leaving opset 18;
- took 3–10× longer per export under the same conditions (MobileNetV2 27 s against 7 s, the DCNN 21 s against
  2 s, on this 2-core machine), which the unit tests cannot afford.
The TorchScript exporter is deprecated (a DeprecationWarning) but complete in torch 2.14, which the project pins;
moving to ``dynamo=True`` is a change of this one call (``dynamic_shapes`` instead of ``dynamic_axes``) plus
``onnxscript`` in the dependencies.

Files are written atomically: to a temporary file in the target folder, then renamed over the target, so a
failed export or quantisation never leaves a partial file (nor replaces an existing good one).
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from genediag.models.inference import capture_features, class_scores

OPSET = 17               # ONNX opset written by export_onnx, pinned: these graphs need nothing newer, onnxruntime
                         # from the dependency floor (1.17) on runs it, per-channel QDQ int8 needs ≥ 13
INPUT_NAME = "images"    # float32 N×C×H×W in [0, 1]
OUTPUT_NAME = "scores"   # float32 N×C class scores (softmax = class probabilities)
FEATURES_NAME = "features"   # float32 N×D penultimate features (export_onnx(..., features=True))
BATCH_AXIS = "batch"
_EXPORT_BATCH = 2        # the traced example batch; the batch axis is dynamic, batch 1 and larger both run


class ExportError(ValueError):
    """The model cannot be exported for the asked input shape (the message says why)."""


class ExportMismatchError(AssertionError):
    """ONNX Runtime's scores differ from torch's by more than the tolerance (the message names the file)."""


output_scores = class_scores   # N×C class scores of any model output (an angular head's: ‖x‖ cos θ)


class ScoresModel(nn.Module):
    """`model` followed by :func:`output_scores` (and, with `features`, its penultimate features): what is
    exported, and what :func:`check_export` and :func:`compare_runtimes` run in torch."""

    def __init__(self, model: nn.Module, features: bool = False):
        super().__init__()
        self.model = model
        self.features = features

    def forward(self, x: torch.Tensor):
        if not self.features:
            return output_scores(self.model(x))
        with capture_features(self.model, detach=False) as feats:
            scores = output_scores(self.model(x))
        return scores, feats[0]


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in shape):
        raise ExportError(f"input_shape: expected (channels, height, width) of positive integers, got {input_shape!r}")
    return tuple(int(v) for v in shape)  # type: ignore[return-value]


def _in_channels(model: nn.Module) -> int | None:
    """The input channels of the model's first registered convolution (None when it has none): for messages."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def _atomic_target(path: Path) -> tuple[Path, Path]:
    """(target, temporary file beside it) for an atomic write: write the temporary file, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return path, Path(tmp)


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    """A CPU copy of `model` in eval mode (the caller's model keeps its device and train/eval state)."""
    return copy.deepcopy(model).cpu().eval()


def export_onnx(model: nn.Module, input_shape: Sequence[int], path: str | Path, opset: int = OPSET,
                features: bool = False) -> Path:
    """Export `model` (eval mode, CPU) to ONNX at `path`: input ``images`` N×C×H×W float32 in [0, 1] with a dynamic
    batch axis, output ``scores`` N×classes (:func:`output_scores`) and with `features` a second output
    ``features`` N×D (the penultimate features). `input_shape` is (C, H, W). Returns the path.

    Raises :class:`ExportError` when the model does not take inputs of that shape (e.g. a wrong channel count).
    """
    import onnx

    c, h, w = _check_shape(input_shape)
    net = ScoresModel(_cpu_eval_copy(model), features).eval()
    example = torch.rand(_EXPORT_BATCH, c, h, w)
    try:
        with torch.inference_mode():
            out = net(example)
            out = out[0] if features else out
    except Exception as exc:  # noqa: BLE001 — re-raised with the shape that failed
        expected = _in_channels(net)
        hint = (f" (its first convolution takes {expected} input channel(s), not {c})"
                if expected is not None and expected != c else "")
        raise ExportError(f"input_shape {(c, h, w)}: the model does not run on inputs N×{c}×{h}×{w}{hint}: "
                          f"{exc}") from exc
    if out.ndim != 2 or out.shape[0] != _EXPORT_BATCH:
        raise ExportError(f"expected N×C class scores, the model gives shape {tuple(out.shape)}")
    path, tmp = _atomic_target(Path(path))
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter's deprecation notices, and the tracer's warning about class_scores' test of
            # the class axis (`out.shape[1] == 1`): that axis is fixed, only the batch axis is dynamic
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            outputs = [OUTPUT_NAME] + ([FEATURES_NAME] if features else [])
            torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=int(opset),
                              input_names=[INPUT_NAME], output_names=outputs,
                              dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, **{o: {0: BATCH_AXIS} for o in outputs}},
                              do_constant_folding=True, export_params=True)
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        meta = {"genediag.input_shape": f"{c},{h},{w}", "genediag.num_classes": str(out.shape[1]),
                "genediag.output": "class scores N×C (softmax = class probabilities)",
                "genediag.model": type(model).__name__, "genediag.exporter": f"torch {torch.__version__} "
                f"torch.onnx.export(dynamo=False), opset {opset}"}
        onnx.helper.set_model_props(proto, meta)
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------------------ ONNX Runtime
def session_options(threads: int | None = None):
    """ONNX Runtime options for one model on the CPU: `threads` intra-op threads (None: ORT's default, one per
    physical core), one inter-op thread, sequential execution, all graph optimisations."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads: at least 1, got {threads}")
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only
    return so


class OnnxClassifier:
    """An exported model in ONNX Runtime (CPUExecutionProvider): ``scores`` N×C and ``predict_proba`` (softmax)
    of float32 N×C×H×W images in [0, 1], any batch size."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no ONNX model here (export one with genediag.models.export)")
        self.threads = threads
        self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        # (C, H, W) as the graph declares them (an int, or None where the axis is symbolic)
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape[1:])
        self.output_name = self.session.get_outputs()[0].name

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        want = "×".join("?" if d is None else str(d) for d in self.input_shape)
        if x.ndim != 4:
            raise ValueError(f"{self.path.name}: expects a batch of images N×{want} (float32), got an array of "
                             f"shape {x.shape}")
        if len(self.input_shape) == 3 and self.input_shape[0] is not None and x.shape[1] != self.input_shape[0]:
            raise ValueError(f"{self.path.name}: expects {self.input_shape[0]} input channel(s) (N×{want}), got "
                             f"{x.shape[1]} (input shape {x.shape})")
        if any(d is not None and d != s for d, s in zip(self.input_shape, x.shape[1:])):
            raise ValueError(f"{self.path.name}: expects images N×{want}, got shape {x.shape}")
        return x

    def scores(self, x: np.ndarray) -> np.ndarray:
        """N×C class scores of images N×C×H×W (float32 in [0, 1])."""
        x = self._check(x)
        return self.session.run([self.output_name], {self.input_name: x})[0]

    @property
    def has_features(self) -> bool:
        return any(o.name == FEATURES_NAME for o in self.session.get_outputs())

    def scores_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N×C class scores, N×D penultimate features) of a graph exported with ``features=True``."""
        return tuple(self.session.run([self.output_name, FEATURES_NAME], {self.input_name: self._check(x)}))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """N×C class probabilities: the softmax of :meth:`scores`."""
        s = self.scores(x).astype(np.float64)
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _torch_scores(model: nn.Module, inputs: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """`model`'s class scores (eval mode, on its own device) of `inputs`; the model's train/eval state is kept."""
    was = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    net = ScoresModel(model)
    out = []
    try:
        with torch.inference_mode():
            for i in range(0, len(inputs), batch_size):
                out.append(net(inputs[i:i + batch_size].to(device)).float().cpu())
    finally:
        model.train(was)
    return torch.cat(out).numpy()


def check_export(model: nn.Module, onnx_path: str | Path, inputs: torch.Tensor, atol: float = 1e-4,
                 rtol: float = 0.0) -> float:
    """The largest |torch − ONNX Runtime| over the class scores of `inputs` (N×C×H×W; `model` in eval mode).

    Raises :class:`ExportMismatchError` naming the file when it exceeds ``atol + rtol · max |torch score|``.
    `rtol` (0: an absolute tolerance only) scales with the size of the scores: float32 itself is not exact to
    1e-4 on deep networks with scores of ~10 (timm MobileNetV2 with batch-norm statistics from data, scores up
    to 13: torch float32 differs from float64 by up to 1.7e-4, ONNX Runtime by 1.4e-4), so the tests check such
    models with ``rtol=1e-4``.
    """
    if len(inputs) == 0:
        raise ValueError("check_export: no inputs")
    ref = _torch_scores(model, inputs)
    # one thread: a correctness check, and the lightest on a shared machine
    got = OnnxClassifier(onnx_path, threads=1).scores(inputs.detach().cpu().float().numpy())
    if got.shape != ref.shape:
        raise ExportMismatchError(f"{onnx_path}: ONNX Runtime gives scores of shape {got.shape}, torch {ref.shape}")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    worst = float(diff.max())
    scale = float(np.abs(ref).max())
    tol = atol + rtol * scale
    if not np.isfinite(worst) or worst > tol:
        raise ExportMismatchError(
            f"{onnx_path}: ONNX Runtime's scores differ from torch's by up to {worst:.3g} on {len(inputs)} input(s), "
            f"more than the tolerance {tol:.3g} (atol {atol:g} + rtol {rtol:g} × largest |score| {scale:.3g}); "
            f"the file does not match this model — re-export it")
    return worst


# ------------------------------------------------------------------------------------------ int8
class _ArrayReader:
    """onnxruntime.quantization.CalibrationDataReader over an array of images, in batches."""

    def __init__(self, name: str, images: np.ndarray, batch_size: int):
        self.name, self.images, self.batch_size = name, images, batch_size
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self.images), self.batch_size):
            yield {self.name: self.images[i:i + self.batch_size]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._batches()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def quantized_op_types(onnx_path: str | Path) -> dict[str, int]:
    """How many nodes of each operator type a QDQ model runs on 8-bit tensors: nodes whose inputs come from a
    DequantizeLinear and whose outputs all go to a QuantizeLinear (the DQ → op → Q pattern that ONNX Runtime
    replaces by an integer kernel). Nodes that only read a dequantised tensor and compute in float are not counted.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    read_by: dict[str, list[str]] = {}
    for n in graph.node:
        for i in n.input:
            read_by.setdefault(i, []).append(n.op_type)
    counts: Counter[str] = Counter()
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        fed = any(made_by.get(i) == "DequantizeLinear" for i in n.input if i)
        out = [o for o in n.output if o]
        if fed and out and all(read_by.get(o) and all(t == "QuantizeLinear" for t in read_by[o]) for o in out):
            counts[n.op_type] += 1
    return dict(counts)


def shape_only_nodes(graph) -> list[str]:
    """Names of the nodes of an ONNX graph that compute on tensor shapes only (every input a constant, an
    initializer or another such node's output, one of them reached from a Shape node): e.g. TensorFlow-"same"
    padding amounts, which the TorchScript exporter writes as float arithmetic on ``Shape`` (timm's tf_* models).
    They are not image data and must not be quantised (8-bit pad amounts)."""
    consts = {i.name for i in graph.initializer}
    shape_valued: set[str] = set()
    names = []
    for n in graph.node:  # ONNX graphs are topologically sorted
        if n.op_type == "Constant":
            consts.update(n.output)
            continue
        ins = [i for i in n.input if i]
        if n.op_type == "Shape" or (ins and all(i in consts or i in shape_valued for i in ins)
                                    and any(i in shape_valued for i in ins)):
            shape_valued.update(n.output)
            if n.op_type != "Shape":
                names.append(n.name)
    return names


def quantize_int8(onnx_path: str | Path, calibration: np.ndarray, out_path: str | Path, *,
                  per_channel: bool = True, batch_size: int = 32) -> Path:
    """Static int8 quantisation of an exported float model, calibrated on `calibration` (training images,
    float32 N×C×H×W in [0, 1]; a few hundred are plenty): written atomically to `out_path`, returned.

    ``onnxruntime.quantization.quantize_static`` in QDQ format (QuantizeLinear/DequantizeLinear pairs around
    the quantised operators, which ONNX Runtime fuses into int8 kernels), after its ``quant_pre_process``
    (shape inference and graph optimisation, which folds batch norms into the convolutions). Weights: signed
    int8, symmetric, per output channel (`per_channel`) for Conv and Gemm/MatMul; activations: unsigned 8 bit
    (uint8), asymmetric, ranges from min/max calibration. U8S8 rather than the S8S8 default because it is ORT's
    fast path on x86 without VNNI (AVX2 ``vpmaddubsw``; this machine): MobileNetV2 at 224 px, one thread, batches
    of 16 took 8.7 s per 1000 images with U8S8 against 15.1 s with S8S8 (float: 15.8 s), at equal argmax
    agreement. (The instruction can saturate; ORT's advice when accuracy drops is ``reduce_range`` or U8U8.)

    Which operators get quantised: ``quantize_static``'s default set (its QDQ and QLinear registries: Conv,
    Gemm/MatMul, MaxPool/AveragePool/GlobalAveragePool, Add, Mul, Concat, Sigmoid, Pad, shape operators such as
    Flatten/Reshape/Gather, …; a Relu or Clip after a convolution is folded into it). Measured
    (:func:`quantized_op_types`, which lists what a given file got):
    - Pinnacle DCNN: everything: 3 Conv, 3 MaxPool, Flatten, 4 Gemm;
    - timm mobilenetv2_100: 52 Conv (depthwise included), 10 residual Add, GlobalAveragePool, Flatten, Gemm;
      tf_efficientnet_lite0: 49 Conv, 9 Add, its 5 TF-"same" Pad (the pad amounts, float arithmetic on shapes,
      are excluded: :func:`shape_only_nodes`), GlobalAveragePool, Flatten, Gemm;
    - thesis VGG16 / InceptionV3: every Conv, pooling and Concat, the head's Gemm and BatchNormalization, and the
      sigmoid score pair's Gather/Concat;
    - SE-ResNet64 (angular head): every Conv, the squeeze-excitation GlobalAveragePool/Sigmoid/Mul, the residual
      Add, and the angular head's Div (features / norm) and MatMul; its norm (ReduceL2) and Clip stay float.
    The input normalisation (Sub/Div of the [0, 1] image) stays float; its output is quantised for the first Conv.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx_path = Path(onnx_path)
    images = np.ascontiguousarray(calibration, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"calibration: expected float32 images N×C×H×W (N ≥ 1), got shape {images.shape}")
    clf = OnnxClassifier(onnx_path)
    clf._check(images[:1])  # the same channel/size checks as inference, with the file named
    path, tmp = _atomic_target(Path(out_path))
    try:
        with tempfile.TemporaryDirectory(prefix="genediag-int8-") as work:
            pre = Path(work) / "preprocessed.onnx"
            quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
            graph = onnx.load(str(pre)).graph
            if any(not n.name for n in graph.node):
                raise RuntimeError(f"{pre}: unnamed nodes after quant_pre_process (nodes_to_exclude needs names)")
            reader = _ArrayReader(clf.input_name, images, max(1, int(batch_size)))
            quantize_static(str(pre), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=shape_only_nodes(graph))
        proto = onnx.load(str(tmp))
        meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
        meta["genediag.quantization"] = (f"static QDQ, uint8 activations, int8 weights, per_channel={per_channel}, "
                                         f"MinMax calibration on {len(images)} image(s)")
        onnx.helper.set_model_props(proto, meta)
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------------------ timing
def _per_1000(seconds: float, n: int) -> float:
    return round(seconds * 1000.0 / n, 4)


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median and 90th percentile (nearest rank) of per-call times given in seconds, in milliseconds."""
    ms = sorted(float(v) * 1000.0 for v in seconds)
    if not ms:
        raise ValueError("no latencies")
    n = len(ms)
    mid = n // 2
    median = ms[mid] if n % 2 else (ms[mid - 1] + ms[mid]) / 2
    return {"single_ms_median": round(median, 4), "single_ms_p90": round(ms[min(n - 1, math.ceil(0.9 * n) - 1)], 4)}


def time_onnx(clf: OnnxClassifier, inputs: np.ndarray, batch_size: int = 64, warmup: int = 10) -> dict[str, float]:
    """ONNX Runtime seconds per 1000 samples, one at a time (N runs of batch 1) and in batches of `batch_size`,
    and the median / 90th-percentile time of one call of batch 1 (ms)."""
    x = np.ascontiguousarray(inputs, dtype=np.float32)
    n = len(x)
    if n == 0:
        raise ValueError("no samples to time")
    for i in range(min(warmup, n)):
        clf.scores(x[i:i + 1])
    if warmup:
        clf.scores(x[:min(batch_size, n)])
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        s = time.perf_counter()
        clf.scores(x[i:i + 1])
        lat.append(time.perf_counter() - s)
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, n, batch_size):
        clf.scores(x[i:i + batch_size])
    batched = time.perf_counter() - t0
    return {"seconds_per_1000_single": _per_1000(single, n), "seconds_per_1000_batched": _per_1000(batched, n),
            **latency_ms(lat)}


def time_eager(model: nn.Module, inputs: torch.Tensor, batch_size: int = 64, warmup: int = 10) -> dict[str, float]:
    """Eager torch (CPU, eval, inference mode; the model followed by its class scores) seconds per 1000 samples,
    one at a time and in batches of `batch_size`, and the median / 90th-percentile time of one call of batch 1
    (``eager_single_ms_median``, ``eager_single_ms_p90``)."""
    net = ScoresModel(_cpu_eval_copy(model)).eval()
    x = inputs.detach().cpu().float().contiguous()
    n = len(x)
    if n == 0:
        raise ValueError("no samples to time")
    with torch.inference_mode():
        for i in range(min(warmup, n)):
            net(x[i:i + 1])
        if warmup:
            net(x[:min(batch_size, n)])
        lat = []
        t0 = time.perf_counter()
        for i in range(n):
            s = time.perf_counter()
            net(x[i:i + 1])
            lat.append(time.perf_counter() - s)
        single = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, n, batch_size):
            net(x[i:i + batch_size])
        batched = time.perf_counter() - t0
    return {"eager_seconds_per_1000_single": _per_1000(single, n),
            "eager_seconds_per_1000_batched": _per_1000(batched, n),
            **{f"eager_{k}": v for k, v in latency_ms(lat).items()}}


def compare_runtimes(model: nn.Module, onnx_path: str | Path, inputs: torch.Tensor, batch_size: int = 64,
                     warmup: int = 10, threads: int = 1) -> dict[str, Any]:
    """Eager torch against ONNX Runtime on the CPU, in this one process, both with `threads` threads: seconds per
    1000 samples one at a time (a batch of 1 per call, over every input) and in batches of `batch_size`.

    torch's intra-op thread count is set to `threads` for the measurement and restored afterwards; ONNX Runtime
    gets a session with `threads` intra-op threads (:func:`session_options`).
    """
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads: at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        eager = time_eager(model, inputs, batch_size, warmup)
        ort = time_onnx(OnnxClassifier(onnx_path, threads=threads), inputs.detach().cpu().float().numpy(),
                        batch_size, warmup)
    finally:
        torch.set_num_threads(before)
    out: dict[str, Any] = {**eager, **ort, "threads": threads, "samples": len(inputs), "batch_size": batch_size,
                           "warmup": warmup}
    out["speedup_single"] = round(eager["eager_seconds_per_1000_single"] / ort["seconds_per_1000_single"], 2) \
        if ort["seconds_per_1000_single"] > 0 else math.inf
    out["speedup_batched"] = round(eager["eager_seconds_per_1000_batched"] / ort["seconds_per_1000_batched"], 2) \
        if ort["seconds_per_1000_batched"] > 0 else math.inf
    return out


def compare_predictions(model: nn.Module, onnx_path: str | Path, inputs: torch.Tensor,
                        labels: Sequence[int] | np.ndarray | None = None, threads: int = 1,
                        batch_size: int = 256) -> dict[str, Any]:
    """What changes when `model` is served by ONNX Runtime instead of eager torch, on `inputs` (N×C×H×W): the
    share of samples whose predicted class (argmax) agrees, the largest |score difference|, and with `labels`
    (N class indices) both accuracies and ``accuracy_delta`` = deployed − eager (a fraction; ×100 for points).
    Without labels the accuracies are None."""
    if len(inputs) == 0:
        raise ValueError("compare_predictions: no inputs")
    ref = _torch_scores(model, inputs, batch_size)
    clf = OnnxClassifier(onnx_path, threads=threads)
    x = inputs.detach().cpu().float().numpy()
    got = np.concatenate([clf.scores(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    pe, po = ref.argmax(1), got.argmax(1)
    out: dict[str, Any] = {
        "compared_samples": int(len(x)),
        "argmax_agreement": round(float((pe == po).mean()), 6),
        "max_abs_score_diff": float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()),
        "accuracy_eager": None, "accuracy_deployed": None, "accuracy_delta": None,
    }
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if len(y) != len(x):
            raise ValueError(f"compare_predictions: {len(y)} labels for {len(x)} inputs")
        acc_e, acc_o = float((pe == y).mean()), float((po == y).mean())
        out.update(accuracy_eager=round(acc_e, 6), accuracy_deployed=round(acc_o, 6),
                   accuracy_delta=round(acc_o - acc_e, 6))
    return out
