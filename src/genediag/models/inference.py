"""Inference shared by evaluate, predict, karyotyping, MC dropout and the face branch: class scores of any of our
models, probabilities (temperature-scaled), penultimate features, Monte-Carlo dropout, and the
out-of-distribution score.

Class scores: N×C numbers whose argmax is the predicted class and whose softmax (after dividing by the model's
temperature) is the class probability. A single sigmoid unit becomes ``[−z/2, z/2]`` (softmax = [1 − σ(z), σ(z)]);
an angular (A-softmax) head's ``(cos θ, ‖x‖)`` becomes ``‖x‖ cos θ``.

Out of distribution, two detectors fitted on the training split, each with its threshold at a high quantile of the
validation split's scores: (1) the Mahalanobis distance of the penultimate features (the input of the model's last
linear layer) to the nearest class mean, with one shared covariance (Lee et al., NeurIPS 2018): inputs the network
represents unlike its classes; (2) the distance of the input itself, as a 16×16 thumbnail, from the training
images' per-pixel mean in units of their per-pixel spread: inputs that do not look like the training images at all
(noise, another kind of picture) even where a small network's features cannot tell. The OOD score is the larger of
the two scores divided by its threshold: above 1, the image is referred.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


def class_scores(out: Any) -> torch.Tensor:
    """N×C class scores of a model output (see the module doc)."""
    if isinstance(out, (tuple, list)):
        if len(out) == 2 and out[1].ndim == 1:   # angular head: (cos θ N×C, ‖x‖ N)
            return out[0].float() * out[1].float()[:, None]
        out = out[0]
    if out.ndim == 2 and out.shape[1] == 1:
        z = out[:, 0]
        return torch.stack([-z / 2, z / 2], dim=1)
    return out


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def last_linear(model: nn.Module) -> nn.Module:
    """The layer that turns penultimate features into class scores (the last linear or angular layer)."""
    found = None
    for m in model.modules():
        if isinstance(m, nn.Linear) or type(m).__name__ == "AngularLinear":
            found = m
    if found is None:
        raise ValueError(f"{type(model).__name__} has no linear output layer to read features from")
    return found


@contextlib.contextmanager
def capture_features(model: nn.Module, detach: bool = True) -> Iterator[list[torch.Tensor]]:
    """Collect the input of the model's last linear layer (flattened, float) on every forward pass inside the
    block (``detach=False`` keeps it in the graph, for the ONNX export)."""
    store: list[torch.Tensor] = []

    def hook(m, inp, out):
        f = inp[0].float().flatten(1)
        store.append(f.detach().cpu() if detach else f)

    handle = last_linear(model).register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


@torch.no_grad()
def scores_and_features(model: Any, dataset: Dataset, batch_size: int = 256, features: bool = False,
                        device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(class scores N×C, penultimate features N×D or None) for a dataset, in dataset order. `model` is a torch
    model or an ONNX Runtime one (:class:`genediag.models.export.OnnxClassifier`, exported with features)."""
    if not isinstance(model, nn.Module):   # ONNX Runtime
        scores, feats = [], []
        for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            s, f = model.scores_and_features(x.numpy()) if features else (model.scores(x.numpy()), None)
            scores.append(s)
            feats.append(f)
        s = np.concatenate(scores) if scores else np.zeros((0, 0), np.float32)
        return s.astype(np.float32), (np.concatenate(feats).astype(np.float32) if features and scores else None)
    device = device or next(model.parameters()).device
    model.eval()
    scores = []
    ctx = capture_features(model) if features else contextlib.nullcontext([])
    with ctx as feats:
        for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            scores.append(class_scores(model(_to_device(x, device))).float().cpu())
    s = torch.cat(scores).numpy() if scores else np.zeros((0, 0), np.float32)
    return s, (torch.cat(feats).numpy() if features and feats else None)


def module_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes and bytes): equal digests, the same network."""
    h = hashlib.sha256()
    for name, v in module.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@torch.no_grad()
def prefix_outputs(prefix: nn.Module, dataset: Dataset, batch_size: int = 32,
                   desc: str = "frozen prefix") -> torch.Tensor:
    """`prefix` (in inference mode) on every item of `dataset`, in order (a progress bar named `desc`). Draws
    nothing from the global random generator (a DataLoader's iterator would), so computing it once or many times
    leaves later draws alike."""
    from tqdm import tqdm

    prefix.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator())
    out = [prefix(x) for x, _ in tqdm(loader, desc=desc, leave=False)]
    return torch.cat(out).contiguous() if out else torch.zeros(0)


class _Tensors(Dataset):
    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], 0


class PrefixCache:
    """Scores of several models on one dataset where models with the same frozen prefix (``cache_split()``: a run's
    seeds on one pretrained base) run that prefix once: its outputs are kept by the prefix's digest and only each
    model's suffix runs. Models without a frozen prefix run whole. ``suffix(prefix(x)) == model(x)``, so the
    scores are the whole model's (to float rounding)."""

    def __init__(self, dataset: Dataset, batch_size: int = 64):
        self.dataset, self.batch_size = dataset, int(batch_size)
        self._outputs: dict[str, torch.Tensor] = {}

    def split(self, model: nn.Module) -> tuple[nn.Module, nn.Module, torch.Tensor] | None:
        """(prefix, suffix, the prefix's outputs on the dataset) of `model`, or None without a frozen prefix."""
        split = model.cache_split() if hasattr(model, "cache_split") else None
        if split is None:
            return None
        key = module_digest(split[0])
        if key not in self._outputs:
            self._outputs[key] = prefix_outputs(split[0], self.dataset, self.batch_size)
        return split[0], split[1], self._outputs[key]

    def scores_and_features(self, model: nn.Module, features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        model.eval()
        parts = self.split(model)
        if parts is None:
            return scores_and_features(model, self.dataset, self.batch_size, features)
        return scores_and_features(parts[1], _Tensors(parts[2]), self.batch_size, features)


def runner_for(model: nn.Module, run_dir: str | Path, runtime: str = "onnx", threads: int = 0) -> Any:
    """What to run inference on: ONNX Runtime on the run's exported ``model.onnx`` (``runtime: onnx``, when the file
    is there: 3-4× faster than eager PyTorch on a CPU) or the torch `model`."""
    onnx_path = Path(run_dir) / "model.onnx"
    if runtime == "onnx" and onnx_path.is_file():
        from genediag.models.export import OnnxClassifier

        return OnnxClassifier(onnx_path, threads=threads or None)
    return model


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(scores, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_proba(model: Any, dataset: Dataset, batch_size: int = 256, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities N×C (float64) for a dataset, in dataset order."""
    return softmax(scores_and_features(model, dataset, batch_size)[0], temperature)


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """Modules that are stochastic in train mode: nn.Dropout* and timm's DropPath/DropBlock."""
    return [m for m in model.modules()
            if (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)
            or (type(m).__name__ in ("DropPath", "DropBlock2d") and getattr(m, "drop_prob", 0) > 0)]


@torch.no_grad()
def mc_dropout_votes(model: nn.Module, x: torch.Tensor, passes: int, seed: int, temperature: float = 1.0,
                     chunk: int = 64, split: tuple[nn.Module, nn.Module] | None = None) -> np.ndarray | None:
    """passes × N × C probabilities with dropout active and everything else in eval mode (batch norm uses its
    running statistics); None for a model without dropout.

    A model with ``mc_split() -> (prefix, suffix)`` (``suffix(prefix(x)) == model(x)``, no stochastic layer in the
    prefix) runs the prefix once and only the suffix `passes` times: the same random draws in the same order, so
    the same votes, at a fraction of the cost. With `split` (the model's ``cache_split()``), `x` holds that split's
    prefix outputs (e.g. from :class:`PrefixCache`) and ``mc_split(split)`` continues from them."""
    drops = dropout_modules(model)
    if not drops or passes <= 0:
        return None
    device = next(model.parameters()).device
    model.eval()
    if split is not None:
        prefix, suffix = model.mc_split(split)
    else:
        prefix, suffix = model.mc_split() if hasattr(model, "mc_split") else (None, model)
    chunks = [x[i:i + chunk].to(device) for i in range(0, len(x), chunk)]
    if prefix is not None:
        chunks = [prefix(c) for c in chunks]
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in drops:
            m.train()
        try:
            for _ in range(passes):
                s = torch.cat([class_scores(suffix(c)).float().cpu() for c in chunks])
                out.append(softmax(s.numpy(), temperature))
        finally:
            for m in drops:
                m.eval()
    return np.stack(out)


# ------------------------------------------------------------------------------------------ out of distribution
THUMB = 16


@torch.no_grad()
def input_thumbnails(dataset: Dataset, batch_size: int = 256) -> np.ndarray:
    """N×256 thumbnails (16×16, channel mean) of the model inputs of a dataset, in dataset order."""
    out = []
    for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        out.append(torch.nn.functional.adaptive_avg_pool2d(x.float().mean(1, keepdim=True), THUMB).flatten(1))
    return torch.cat(out).numpy() if out else np.zeros((0, THUMB * THUMB), np.float32)


def fit_ood(features: np.ndarray, targets: np.ndarray, thumbnails: np.ndarray,
            shrinkage: float = 0.1) -> dict[str, torch.Tensor]:
    """The two detectors (module doc) from training features, targets and input thumbnails (thresholds are set
    by :func:`set_ood_thresholds`). The feature covariance is shrunk towards its diagonal by `shrinkage`, so it is
    invertible with few items per class."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets)
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(0) for c in classes])
    centred = f - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / max(1, len(f) - len(classes))
    cov = (1 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov)) + 1e-6 * np.eye(len(cov))
    t = np.asarray(thumbnails, dtype=np.float64)
    return {"means": torch.from_numpy(means.astype(np.float32)),
            "precision": torch.from_numpy(np.linalg.pinv(cov).astype(np.float32)),
            "pixel_mean": torch.from_numpy(t.mean(0).astype(np.float32)),
            "pixel_std": torch.from_numpy(np.maximum(t.std(0), 0.02).astype(np.float32))}


def ood_parts(features: np.ndarray, thumbnails: np.ndarray, ood: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(feature score: squared Mahalanobis distance to the nearest class mean, pixel score: mean squared z of the
    thumbnail) per image."""
    f = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    d = f[:, None, :] - ood["means"].float()[None, :, :]                       # N × K × D
    feat = torch.einsum("nkd,de,nke->nk", d, ood["precision"].float(), d).min(1).values.numpy()
    z = (torch.as_tensor(np.asarray(thumbnails), dtype=torch.float32) - ood["pixel_mean"]) / ood["pixel_std"]
    return feat.astype(np.float64), (z ** 2).mean(1).numpy().astype(np.float64)


def set_ood_thresholds(ood: dict[str, Any], val_features: np.ndarray, val_thumbnails: np.ndarray,
                       quantile: float) -> dict[str, Any]:
    """Each detector's threshold: the `quantile` of its scores on the validation split."""
    feat, pix = ood_parts(val_features, val_thumbnails, ood)
    return {**ood, "threshold": float(np.quantile(feat, quantile)), "pixel_threshold": float(np.quantile(pix, quantile)),
            "quantile": float(quantile)}


def ood_score(features: np.ndarray, thumbnails: np.ndarray, ood: dict[str, Any]) -> np.ndarray:
    """The larger of the two detectors' scores over their thresholds: above 1 = out of distribution."""
    feat, pix = ood_parts(features, thumbnails, ood)
    return np.maximum(feat / max(ood["threshold"], 1e-12), pix / max(ood["pixel_threshold"], 1e-12))


def input_problem(x: torch.Tensor) -> str | None:
    """A reason to refuse a prepared model input outright (NaN/inf, or every value equal), else None."""
    if not torch.isfinite(x).all():
        return "non-finite values in the input"
    if float(x.max() - x.min()) == 0.0:
        return "blank input (every pixel equal)"
    return None
