"""Predict with a trained model: ranked classes, MC-dropout confidence and a refer-for-review flag.

A checkpoint (``models/<run>/model.pt``) declares what its inputs are in its ``input`` spec; prediction
dispatches on ``input["kind"]`` to a *preprocessor* that turns an image file into the same uint8 array the
ingest stage cached for training, and then goes through the very code the trainer and the evaluate stage use
(:class:`~genediag.data.datasets.CachedImageDataset` for resizing/inversion,
:func:`~genediag.training.trainer.predict_proba` for the forward pass), so a file scores exactly as it did in
``evaluation/<run>/predictions.csv``.

Kinds: ``chromosome_crop`` and ``karyogram`` (and the generic ``image``) share one preprocessor — decode with
the dataset's ingest mode and size limits, then :func:`~genediag.data.ingest.fit_square` with its resize/pad
settings. A branch with its own input pipeline (faces: detect, align, crop) registers another kind with
:func:`register_preprocessor` (kind ``face``, ``needs_ingest=False``) in a module listed in
:data:`PLUGIN_MODULES` (``genediag/faces/predict.py``), imported only when a checkpoint asks for that kind; a
preprocessor signals unusable input (no face found, …) by raising :class:`InputImageError`, which the CLI
prints as one line. Checkpoints without ``input["kind"]`` get one from :func:`infer_kind`.

The ingest settings come from the checkpoint's ``input["ingest"]`` when present; older checkpoints lack them,
and then they are read from ``params.yaml: ingest.<dataset>`` (the params of the same commit as the model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from genediag.config import ConfigError, load_params
from genediag.data.ingest import DEFAULTS as INGEST_DEFAULTS, decode_image, fit_square

log = logging.getLogger(__name__)

INGEST_KEYS = ("mode", "size", "resize", "pad_value", "min_side", "max_side")
KIND_BY_DATASET = {"chromosomes": "chromosome_crop", "karyograms": "karyogram"}
SYNTHETIC_ROOT = Path("data") / "synthetic"
IMAGE_HINT = "pass a readable image file (PNG, JPEG, TIFF, BMP)"


class InputImageError(ValueError):
    """One input file cannot be used (unreadable, not an image, no face found, …); the message says why."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class ModelSpecError(ConfigError):
    """The checkpoint does not say how to preprocess its inputs (and params.yaml cannot fill the gap)."""


# ------------------------------------------------------------------------------------------ preprocessors
Preprocessor = Callable[[Path, dict[str, Any]], np.ndarray]
_PREPROCESSORS: dict[str, Preprocessor] = {}
_NEEDS_INGEST: set[str] = set()
# modules that register more kinds when they exist (a branch adds e.g. genediag/faces/predict.py with
# @register_preprocessor("face", needs_ingest=False)); imported lazily, only if present
PLUGIN_MODULES = ("genediag.faces.predict",)


def register_preprocessor(*kinds: str, needs_ingest: bool = True):
    """Register ``fn(path, spec) -> uint8 array`` (H×W or H×W×3 at the model's input shape) for kinds.

    ``needs_ingest``: the spec must carry ``ingest`` settings (from the checkpoint or params.yaml); a kind with
    its own pipeline reads whatever else it stored in the checkpoint's ``input`` spec."""

    def deco(fn: Preprocessor) -> Preprocessor:
        for kind in kinds:
            if kind in _PREPROCESSORS:
                raise ValueError(f"preprocessor for kind '{kind}' registered twice")
            _PREPROCESSORS[kind] = fn
            if needs_ingest:
                _NEEDS_INGEST.add(kind)
        return fn

    return deco


def _load_plugins() -> None:
    import importlib
    import importlib.util

    for name in PLUGIN_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package is absent
            found = False
        if found:
            importlib.import_module(name)


def preprocessor_for(kind: str) -> Preprocessor:
    if kind not in _PREPROCESSORS:
        _load_plugins()
    if kind not in _PREPROCESSORS:
        raise ModelSpecError(f"this model's inputs are of kind '{kind}', which this version of genediag cannot "
                             f"preprocess (known kinds: {', '.join(sorted(_PREPROCESSORS))})")
    return _PREPROCESSORS[kind]


def read_image_bytes(path: Path) -> bytes:
    if not path.exists():
        raise InputImageError(path, f"file not found; {IMAGE_HINT}")
    if path.is_dir():
        raise InputImageError(path, f"is a directory; {IMAGE_HINT}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputImageError(path, f"cannot read ({exc.strerror or exc}); {IMAGE_HINT}") from None


@register_preprocessor("image", "chromosome_crop", "karyogram")
def square_image(path: Path, spec: dict[str, Any]) -> np.ndarray:
    """Decode and fit to the ingest square exactly as ``ingest`` did when it built the training cache."""
    ing = spec["ingest"]
    arr, reason = decode_image(read_image_bytes(path), ing["mode"], int(ing["min_side"]), int(ing["max_side"]))
    if arr is None:
        raise InputImageError(path, f"{reason}; {IMAGE_HINT}")
    return fit_square(arr, int(ing["size"]), ing["resize"], int(ing["pad_value"]))


# ------------------------------------------------------------------------------------------------- model
def family(dataset: str, names: Sequence[str]) -> str | None:
    """`dataset` itself, or the longest of `names` it derives from by a '-suffix' (karyograms-balanced →
    karyograms), or None."""
    if dataset in names:
        return dataset
    parents = [n for n in names if dataset.startswith(f"{n}-")]
    return max(parents, key=len) if parents else None


def ingest_spec_from_params(dataset: str, params_path: str | Path | None,
                            data_dir: str | Path = "data") -> tuple[dict[str, Any], str, str]:
    """(ingest settings, where they came from, source) for a checkpoint that does not carry them."""
    if params_path is None or not Path(params_path).is_file():
        raise ModelSpecError(f"the checkpoint lacks input.ingest, and params file {params_path} was not found to "
                             f"read ingest.{dataset} from; run from the repository root or pass --params PATH")
    sections = load_params(params_path).get("ingest") or {}
    name = family(dataset, list(sections))
    if name is None:
        raise ModelSpecError(f"{params_path}: no ingest.{dataset} (nor a dataset it derives from) to tell how the "
                             f"model's images were prepared; pass --params with the params of the training commit")
    cfg = {**INGEST_DEFAULTS, **sections[name]}
    where = f"{params_path}: ingest.{name}" + (f" (dataset {dataset} derives from it)" if name != dataset else "")
    summary_path = Path(data_dir) / "ingested" / dataset / "summary.json"
    if summary_path.is_file():  # the cache the model was trained on, when it is here: must agree
        import json

        summary = json.loads(summary_path.read_text())
        shape, mode = summary.get("image_shape") or [], summary.get("mode")
        if (shape and int(shape[0]) != int(cfg["size"])) or (mode and mode != cfg["mode"]):
            raise ModelSpecError(f"{where} gives {cfg['mode']} {cfg['size']} px but {summary_path} says "
                                 f"{mode} {shape}: these params are not the ones the model was trained with")
    return cfg, where, str(sections[name].get("source", ""))


def resolve_input_spec(meta: dict[str, Any], params_path: str | Path | None = "params.yaml",
                       data_dir: str | Path = "data") -> dict[str, Any]:
    """The full input spec {kind, size, in_chans, invert, ingest{mode, size, resize, pad_value, min/max_side}}."""
    spec = dict(meta["input"])
    dataset = meta.get("dataset")
    spec.setdefault("kind", infer_kind(meta))
    spec.setdefault("invert", False)
    preprocessor_for(spec["kind"])  # fail early for kinds this version cannot preprocess
    if spec["kind"] not in _NEEDS_INGEST:
        return spec
    if not isinstance(spec.get("ingest"), dict):
        if dataset is None:
            raise ModelSpecError("the checkpoint has neither input.ingest nor a dataset name; retrain it with a "
                                 "current genediag")
        spec["ingest"], spec["ingest_from"], source = ingest_spec_from_params(str(dataset), params_path, data_dir)
        spec.setdefault("source", source)
    spec["ingest"] = {k: spec["ingest"].get(k, INGEST_DEFAULTS[k]) for k in INGEST_KEYS}
    want_chans = 3 if spec["ingest"]["mode"] == "RGB" else 1
    if int(spec["in_chans"]) != want_chans:
        raise ModelSpecError(f"the model takes {spec['in_chans']} channel(s) but ingest mode "
                             f"{spec['ingest']['mode']!r} gives {want_chans}; the params do not match this model")
    return spec


def infer_kind(meta: dict[str, Any]) -> str:
    """Kind of a checkpoint that does not declare one (written before ``input.kind`` existed)."""
    if meta.get("task") == "faces":
        return "face"
    name = family(str(meta.get("dataset")), list(KIND_BY_DATASET))
    return KIND_BY_DATASET[name] if name else "image"


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """Modules that are stochastic in train mode: nn.Dropout* and timm's DropPath/DropBlock."""
    return [m for m in model.modules()
            if (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)
            or (type(m).__name__ in ("DropPath", "DropBlock2d") and getattr(m, "drop_prob", 0) > 0)]


def _class_scores(out: Any) -> torch.Tensor:
    """N×C scores as the trainer sees them (a single sigmoid unit becomes two classes)."""
    try:
        from genediag.training.trainer import class_scores
    except ImportError:  # a trainer without single-logit support: one logit per class
        return out[0] if isinstance(out, (tuple, list)) else out
    return class_scores(out)


def is_synthetic_source(source: str | None) -> bool | None:
    if not source:
        return None
    try:
        Path(source).resolve().relative_to(SYNTHETIC_ROOT.resolve())
        return True
    except ValueError:
        return False


@dataclass
class Predictor:
    model: nn.Module
    meta: dict[str, Any]
    spec: dict[str, Any]
    checkpoint: Path
    dropouts: list[nn.Module] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def describe(self) -> dict[str, Any]:
        source = self.meta.get("data_source") or self.spec.get("source")
        return {"checkpoint": str(self.checkpoint), "run": self.meta.get("run"), "task": self.meta.get("task"),
                "dataset": self.meta.get("dataset"), "kind": self.spec["kind"], "classes": self.class_names,
                "input_size": int(self.spec["size"]), "ingest": self.spec.get("ingest"),
                "ingest_from": self.spec.get("ingest_from", "checkpoint"), "training_source": source or None,
                "trained_on_synthetic": is_synthetic_source(source), "has_dropout": bool(self.dropouts)}

    def preprocess(self, paths: Sequence[str | Path]) -> tuple[list[np.ndarray | None], list[str | None]]:
        """Per path: (uint8 array like the ingest cache, None) or (None, one-line error)."""
        fn = preprocessor_for(self.spec["kind"])
        arrays: list[np.ndarray | None] = []
        errors: list[str | None] = []
        for p in paths:
            try:
                arrays.append(fn(Path(p), self.spec))
                errors.append(None)
            except InputImageError as exc:
                arrays.append(None)
                errors.append(str(exc))
        return arrays, errors

    def dataset(self, arrays: Sequence[np.ndarray]):
        from genediag.data.datasets import CachedImageDataset

        images = np.stack(arrays)
        return CachedImageDataset(images, np.arange(len(images)), np.zeros(len(images), dtype=np.int64),
                                  int(self.spec["size"]), invert=bool(self.spec["invert"]))

    def mc_dropout(self, x: torch.Tensor, passes: int, seed: int) -> torch.Tensor | None:
        """passes×C softmax outputs with dropout active (everything else in eval mode); None without dropout."""
        if not self.dropouts or passes <= 0:
            return None
        device = next(self.model.parameters()).device
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for m in self.dropouts:
                m.train()
            try:
                scores = _class_scores(self.model(x.unsqueeze(0).repeat(passes, *([1] * x.ndim)).to(device)))
            finally:
                for m in self.dropouts:
                    m.eval()
        return torch.softmax(scores.float(), dim=1).cpu()

    def predict(self, paths: Sequence[str | Path], top_k: int = 3, mc_passes: int = 30, seed: int = 0,
                refer_below: float = 0.8) -> list[dict[str, Any]]:
        """One result per path, in order: a ranked prediction or {"path", "error"}."""
        from genediag.training.trainer import predict_proba

        arrays, errors = self.preprocess(paths)
        good = [i for i, a in enumerate(arrays) if a is not None]
        results: list[dict[str, Any]] = [{"path": str(p), "error": e} for p, e in zip(paths, errors)]
        if not good:
            return results
        ds = self.dataset([arrays[i] for i in good])
        with torch.no_grad():
            probs = predict_proba(self.model, ds).numpy()
        names = self.class_names
        k = max(1, min(int(top_k), len(names)))
        for j, i in enumerate(good):
            p = probs[j]
            order = np.argsort(-p, kind="stable")
            top = int(order[0])
            res: dict[str, Any] = {
                "path": str(paths[i]), "kind": self.spec["kind"], "predicted": names[top],
                "probability": round(float(p[top]), 6),
                "ranked": [{"class": names[c], "probability": round(float(p[c]), 6)} for c in order[:k]],
                "mc_dropout": None,
            }
            mc = self.mc_dropout(ds[j][0], mc_passes, seed)
            if mc is not None:
                votes = mc.argmax(1).numpy()
                res["mc_dropout"] = {"passes": int(mc_passes), "seed": int(seed),
                                     "agreement": round(float((votes == top).mean()), 6),
                                     "mean_probability": round(float(mc[:, top].mean()), 6),
                                     "std_probability": round(float(mc[:, top].std(unbiased=False)), 6)}
            reasons = []
            if res["probability"] < refer_below:
                reasons.append(f"top-class probability {res['probability']:.3f} < {refer_below}")
            if res["mc_dropout"] and res["mc_dropout"]["agreement"] < refer_below:
                reasons.append(f"MC-dropout agreement {res['mc_dropout']['agreement']:.3f} < {refer_below}")
            res["refer_for_review"] = bool(reasons)
            res["refer_reasons"] = reasons
            results[i] = res
        return results


def load_predictor(checkpoint: str | Path, params_path: str | Path | None = "params.yaml",
                   device: str = "cpu") -> Predictor:
    """Load a genediag checkpoint and resolve how its inputs are preprocessed."""
    from genediag.models.checkpoint import load_checkpoint

    checkpoint = Path(checkpoint)
    try:
        model, meta = load_checkpoint(checkpoint, device=device)
    except (FileNotFoundError, ConfigError):
        raise
    except Exception as exc:  # torch.load / unpickling / state-dict mismatch: many exception types
        raise ModelSpecError(f"{checkpoint}: cannot load the model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); is it a genediag "
                             "model.pt? `dvc pull` or `dvc repro` restores it") from None
    spec = resolve_input_spec(meta, params_path)
    return Predictor(model, meta, spec, checkpoint, dropout_modules(model))


# ------------------------------------------------------------------------------------------------ output
def format_result(res: dict[str, Any]) -> str:
    """Human-readable block for one result (or a one-line error)."""
    if res.get("error"):
        return f"error: {res['error']}"
    flag = "YES (" + "; ".join(res["refer_reasons"]) + ")" if res["refer_for_review"] else "no"
    lines = [f"{res['path']}: {res['predicted']} (p={res['probability']:.4f})",
             f"  {'rank':>4}  {'class':<12} probability"]
    lines += [f"  {r:>4}  {c['class']:<12} {c['probability']:.4f}" for r, c in enumerate(res["ranked"], 1)]
    mc = res["mc_dropout"]
    if mc:
        lines.append(f"  MC dropout: {mc['passes']} passes (seed {mc['seed']}), agreement {mc['agreement']:.2f}, "
                     f"mean p={mc['mean_probability']:.4f} ± {mc['std_probability']:.4f}")
    else:
        lines.append("  MC dropout: n/a (the model has no dropout layers)")
    lines.append(f"  refer for review: {flag}")
    return "\n".join(lines)


def format_header(info: dict[str, Any]) -> str:
    trained = {True: "the synthetic cohort", False: info["training_source"], None: "unknown data"}[
        info["trained_on_synthetic"]]
    return (f"model {info['run'] or info['checkpoint']} ({info['task']}, {info['kind']}, "
            f"{len(info['classes'])} classes), trained on {trained}")
