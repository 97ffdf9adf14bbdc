"""ONNX export (genediag.models.export): every model kind matches torch in ONNX Runtime, the scores are the
trainer's class scores, int8 quantisation keeps the predictions, and wrong inputs fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from genediag.models import create_model  # noqa: E402
from genediag.models.export import (OPSET, ExportError, ExportMismatchError, OnnxClassifier,  # noqa: E402
                                    check_export, compare_runtimes, export_onnx, quantize_int8,
                                    quantized_op_types)
from genediag.models.inference import class_scores  # noqa: E402
from genediag.training.losses import ASoftmaxLoss  # noqa: E402

# name: (model name, create_model arguments, rtol for check_export); timm models at 64 px to keep the tests fast
# (the graph is the same). The deep ImageNet networks (50–100 layers, scores up to ~15) are checked to 1e-4 plus
# 1e-4 of their largest score: torch float32 itself differs from float64 by 0.9–1.7e-4 on them (measured), so
# 1e-4 absolute would test float32 rounding, not the export (which matches to ~1e-6 on the shallower models).
CASES = {
    "dcnn": ("pinnacle_dcnn", dict(num_classes=24, in_chans=1, img_size=64), 0.0),
    "efficientnet_lite0": ("timm", dict(num_classes=5, in_chans=3, img_size=64, model_name="tf_efficientnet_lite0",
                                        pretrained=False), 1e-4),
    "mobilenetv2": ("timm", dict(num_classes=5, in_chans=3, img_size=64, model_name="mobilenetv2_100",
                                 pretrained=False), 1e-4),
    "vgg16_frozen_sigmoid": ("thesis_transfer", dict(num_classes=2, in_chans=1, img_size=64, backbone="vgg16",
                                                     trainable="frozen", standardize=True), 0.0),
    "vgg16_last_block_3class": ("thesis_transfer", dict(num_classes=3, in_chans=1, img_size=64, backbone="vgg16",
                                                        trainable="last_block"), 0.0),
    "inception_v3_frozen": ("thesis_transfer", dict(num_classes=2, in_chans=1, img_size=75,
                                                    backbone="inception_v3", trainable="frozen"), 1e-4),
    "se_resnet64_angular": ("se_resnet64", dict(num_classes=10, in_chans=3, img_size=48, width=8, head="angular"),
                            0.0),
    "inception_v3_last_block_tf_pooling": ("thesis_transfer", dict(num_classes=2, in_chans=1, img_size=75,
                                                                   backbone="inception_v3", trainable="last_block",
                                                                   tf_pooling=True), 1e-4),
}


def settle_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The convolutions' batch-norm statistics from data (one pass, cumulative mean), as in a trained model: a
    randomly initialised InceptionV3's 94 batch norms at mean 0 / variance 1 give scores of ~5e4, where a
    1e-4 tolerance would test float32 rounding rather than the export."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.training = True
    if norms:
        with torch.no_grad():
            model(x)
    return model.eval()


def build(name: str, kwargs: dict, seed: int = 0) -> tuple[nn.Module, tuple[int, int, int]]:
    torch.manual_seed(seed)
    model = create_model(name, **kwargs)
    shape = (kwargs["in_chans"], kwargs["img_size"], kwargs["img_size"])
    return settle_batchnorm(model, torch.rand(8, *shape)), shape


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """torch on one thread: on a loaded 2-core machine two OpenMP threads made these tests 3–50× slower
    (measured: SE-ResNet export 7.9 s → 1.7 s, its forward pass 3 s → 0.03 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """case name → (model, (C, H, W), ONNX path, OnnxClassifier): each model built and exported once."""

    cache: dict[str, tuple] = {}

    def get(case: str):
        if case not in cache:
            name, kwargs, _ = CASES[case]
            model, shape = build(name, kwargs)
            folder = tmp_path_factory.mktemp(case)
            path = export_onnx(model, shape, folder / "model.onnx")
            assert path == folder / "model.onnx" and path.is_file()
            assert [p.name for p in folder.iterdir()] == ["model.onnx"]  # no temporary file left
            cache[case] = (model, shape, path, OnnxClassifier(path, threads=1))
        return cache[case]

    return get


def check_kind(case: str, exported) -> None:
    model, shape, path, clf = exported(case)
    _, kwargs, rtol = CASES[case]
    torch.manual_seed(1)
    x = torch.rand(5, *shape)
    assert check_export(model, path, x, atol=1e-4, rtol=rtol) >= 0.0  # raises above the tolerance
    for batch in (1, 5):
        with torch.inference_mode():
            out = model(x[:batch])
            ref = class_scores(out).numpy()
            if kwargs.get("head") == "angular":  # the A-softmax loss's scores ‖x‖ cos θ, from (cos θ, ‖x‖)
                assert isinstance(out, tuple) and np.allclose(ref, ASoftmaxLoss().scores(out).numpy())
        got = clf.scores(x[:batch].numpy())
        assert got.shape == ref.shape == (batch, max(2, kwargs["num_classes"]))
        tol = 1e-4 + rtol * np.abs(ref).max()
        assert np.abs(got - ref).max() <= tol
        proba = clf.predict_proba(x[:batch].numpy())  # softmax: differences no larger than the scores'
        assert np.abs(proba - torch.softmax(torch.from_numpy(ref), 1).numpy()).max() <= tol


@pytest.mark.parametrize("case", list(CASES))
def test_export_matches_torch(case, exported):
    check_kind(case, exported)


@pytest.mark.slow
def test_mobilenetv2_224_float_and_int8(tmp_path):
    """The benchmark's configuration (benchmarks/onnx_inference.py): MobileNetV2 at 3×224×224, float and int8."""
    model, shape = build("timm", dict(num_classes=24, in_chans=3, img_size=224, model_name="mobilenetv2_100",
                                      pretrained=False))
    path = export_onnx(model, shape, tmp_path / "mobilenetv2.onnx")
    x = torch.rand(4, *shape)
    check_export(model, path, x, atol=1e-4, rtol=1e-4)
    int8 = quantize_int8(path, torch.rand(32, *shape).numpy(), tmp_path / "mobilenetv2.int8.onnx")
    ops = quantized_op_types(int8)
    assert ops["Conv"] == 52 and ops["Gemm"] == 1  # every convolution, depthwise included, and the classifier
    q = OnnxClassifier(int8, threads=1)
    assert q.scores(x[:1].numpy()).shape == (1, 24) and q.scores(x.numpy()).shape == (4, 24)


def test_sigmoid_thesis_model_gives_two_scores(exported):
    model, shape, _, clf = exported("vgg16_frozen_sigmoid")
    x = torch.rand(6, *shape)
    with torch.inference_mode():
        z = model(x)
    assert z.shape == (6, 1)  # the thesis' single sigmoid logit
    scores = clf.scores(x.numpy())
    assert scores.shape == (6, 2)
    np.testing.assert_allclose(scores, class_scores(z).numpy(), atol=1e-5)
    np.testing.assert_allclose(scores[:, 1], z[:, 0].numpy() / 2, atol=1e-5)
    np.testing.assert_allclose(clf.predict_proba(x.numpy())[:, 1], torch.sigmoid(z[:, 0]).numpy(), atol=1e-5)


def test_graph_metadata_and_dynamic_batch(tmp_path):
    import onnx

    model, shape = build(*CASES["dcnn"][:2])
    model.train()
    path = export_onnx(model, shape, tmp_path / "sub" / "dcnn.onnx")
    assert model.training  # the caller's model is not switched to eval mode
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == OPSET
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["genediag.input_shape"] == "1,64,64" and props["genediag.num_classes"] == "24"
    clf = OnnxClassifier(path, threads=2)
    assert clf.input_shape == shape
    x = np.random.default_rng(0).random((7, *shape), dtype=np.float32)
    one_by_one = np.concatenate([clf.scores(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(clf.scores(x), one_by_one, atol=1e-5)
    np.testing.assert_allclose(clf.predict_proba(x).sum(1), 1.0, atol=1e-6)


def test_check_export_names_the_file_on_mismatch(tmp_path):
    model, shape = build(*CASES["dcnn"][:2])
    other, _ = build(*CASES["dcnn"][:2], seed=1)
    path = export_onnx(model, shape, tmp_path / "dcnn.onnx")
    with pytest.raises(ExportMismatchError, match="dcnn.onnx.*differ"):
        check_export(other, path, torch.rand(3, *shape))


def test_wrong_channel_count_is_a_clear_error(tmp_path):
    model, shape = build(*CASES["dcnn"][:2])  # 1 channel
    path = export_onnx(model, shape, tmp_path / "dcnn.onnx")
    before = path.read_bytes()
    with pytest.raises(ExportError, match=r"first convolution takes 1 input channel\(s\), not 3"):
        export_onnx(model, (3, 64, 64), path)
    assert path.read_bytes() == before  # a failed export leaves the existing file alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcnn.onnx"]
    clf = OnnxClassifier(path)
    with pytest.raises(ValueError, match=r"dcnn.onnx: expects 1 input channel\(s\) \(N×1×64×64\), got 3"):
        clf.scores(np.zeros((2, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="expects images N×1×64×64"):
        clf.scores(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="expects a batch of images"):
        clf.scores(np.zeros((1, 64, 64), np.float32))
    with pytest.raises(ValueError, match="input channel"):
        quantize_int8(path, np.zeros((4, 3, 64, 64), np.float32), tmp_path / "int8.onnx")
    with pytest.raises(ExportError, match="input_shape"):
        export_onnx(model, (64, 64), tmp_path / "x.onnx")


def bars(n: int, rng: np.random.Generator, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """4 classes of grey images: a bright bar (horizontal / vertical / either diagonal) on noise."""
    y = rng.integers(0, 4, n)
    x = rng.random((n, 1, size, size), dtype=np.float32) * 0.4
    idx = np.arange(size)
    for i, k in enumerate(y):
        c = rng.integers(8, size - 8)
        if k == 0:
            x[i, 0, c - 2:c + 2, :] += 0.6
        elif k == 1:
            x[i, 0, :, c - 2:c + 2] += 0.6
        else:
            d = idx[:, None] - idx[None, :] if k == 2 else idx[:, None] + idx[None, :] - (size - 1)
            x[i, 0][np.abs(d) <= 2] += 0.6
    return x, y


def test_int8_dcnn_agrees_with_float(tmp_path):
    rng = np.random.default_rng(0)
    x_train, y_train = bars(256, rng)
    x_test, y_test = bars(200, rng)
    torch.manual_seed(0)
    model = create_model("pinnacle_dcnn", num_classes=4, in_chans=1, img_size=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    model.train()
    for step in range(60):
        i = torch.from_numpy(rng.integers(0, len(xt), 32))
        loss = nn.functional.cross_entropy(model(xt[i]), yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = export_onnx(model, (1, 32, 32), tmp_path / "dcnn.onnx")
    int8 = quantize_int8(path, x_train[:128], tmp_path / "dcnn.int8.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcnn.int8.onnx", "dcnn.onnx"]
    ops = quantized_op_types(int8)
    assert ops.get("Conv") == 3 and ops.get("Gemm") == 4
    fp = OnnxClassifier(path, threads=1)
    q = OnnxClassifier(int8, threads=1)
    pred_fp = fp.scores(x_test).argmax(1)
    assert (pred_fp == y_test).mean() >= 0.8  # a classifier that has learnt the task, not a constant
    agree = (q.scores(x_test).argmax(1) == pred_fp).mean()
    assert agree >= 0.9, f"int8 agrees with float on {agree:.0%} of the test images"
    assert q.scores(x_test[:1]).shape == (1, 4)
    np.testing.assert_allclose(q.predict_proba(x_test).sum(1), 1.0, atol=1e-5)


def test_compare_runtimes_reports_both_runtimes(tmp_path):
    model, shape = build(*CASES["dcnn"][:2])
    path = export_onnx(model, shape, tmp_path / "dcnn.onnx")
    threads = torch.get_num_threads()
    res = compare_runtimes(model, path, torch.rand(6, *shape), batch_size=4, warmup=1, threads=1)
    assert torch.get_num_threads() == threads  # restored
    assert res["threads"] == 1 and res["samples"] == 6
    for key in ("eager_seconds_per_1000_single", "eager_seconds_per_1000_batched", "seconds_per_1000_single",
                "seconds_per_1000_batched"):
        assert res[key] > 0
