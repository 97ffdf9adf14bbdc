"""Predict with a trained model: ranked classes, calibrated probabilities, MC-dropout agreement, an
out-of-distribution check and a refer-for-review flag with its reasons.

Everything comes from the checkpoint (``models/<run>/model.pt``, :mod:`genediag.models.checkpoint`): how a file is
decoded (the one decode function, :func:`genediag.data.decode.load_image`, with the dataset's limits and mode),
fitted into the training cache (pad/stretch/preserve, or detection and alignment for a face photo), blanked,
inverted and resized; the softmax temperature; the OOD detector. No ``params.yaml`` is read, so a prediction
cannot drift from how the model was trained.

Kinds: ``chromosome_crop``, ``karyogram`` (square cache as ingest built it, plus the derived dataset's top blanking)
and ``face`` (MTCNN on the photo, the most confident face aligned onto the training template; no face, or several
comparable faces, is a refer reason, not an error). A face run with a ``gallery.npz`` beside its checkpoint (written
by its evaluation, :mod:`genediag.faces.matching`) also ranks syndromes by the nearest gallery photo and by class
centroid (cosine similarity of the penultimate features): ``nearest_neighbour`` in the result.

A case is referred when any of these holds: the input fails a check (blank, non-finite), it is out of distribution
(Mahalanobis score above the model's threshold), the calibrated top probability or the MC-dropout agreement is
below ``refer_below``, or (faces) the detection is doubtful. An unusable file (unreadable, not an image) is an
error for that file only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from genediag.data.decode import DecodeError, Limits, fit_square, load_image
from genediag.models.inference import dropout_modules, input_problem, input_thumbnails, mc_dropout_votes, \
    ood_score, scores_and_features, softmax

log = logging.getLogger(__name__)
IMAGE_HINT = "pass a readable image file (PNG, JPEG, TIFF, BMP, GIF, WebP)"


class InputImageError(ValueError):
    """One input file cannot be used (unreadable, not an image, …); the message says why."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def _face_crop(image: np.ndarray, spec: dict[str, Any], state: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The aligned face crop of a photo as training saw it, and the detection's refer reasons."""
    from genediag.faces.align import align_face
    from genediag.faces.detect import build_mtcnn, detect_one
    from genediag.faces.prepare import comparable_faces

    faces = spec["faces"]
    det_cfg, align = faces["detect"], faces["align"]
    if not align.get("detect", True):
        import cv2

        h, w = spec["crop_shape"][:2]
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), []
    if "mtcnn" not in state:
        state["mtcnn"] = build_mtcnn(det_cfg)
    det = detect_one(state["mtcnn"], image, det_cfg["max_side"])
    if det["box"] is None:
        return None, [f"no face found (min_face_size {det_cfg['min_face_size']} px)"]
    reasons = []
    if det["prob"] < det_cfg["review_below"]:
        reasons.append(f"low face probability {det['prob']:.3f} < {det_cfg['review_below']}")
    n = comparable_faces(det, det_cfg["second_face_ratio"])
    if n > 1:
        reasons.append(f"{n} comparable faces; the most confident was classified")
    return align_face(image, det["points"], align["template"], align["scale"], align["border"]), reasons


#: decode refusals of a readable image that predict reports as a referral (no class), not as an error
REFERRED_INPUTS = ("constant image", "non-finite pixel values")


def prepare_file(path: Path, spec: dict[str, Any], state: dict[str, Any]) -> tuple[np.ndarray | None, list[str]]:
    """A file in the model's cache representation (what ingest stored for training) and refer reasons from
    preparing it; an unusable file raises :class:`InputImageError`."""
    cache = spec["cache"]
    try:
        image, _ = load_image(path, cache["mode"], Limits.from_config(cache))
    except DecodeError as exc:
        if exc.reason.startswith(REFERRED_INPUTS):   # a readable image with nothing to classify: referred, no class
            return None, [f"input check: {exc.reason}"]
        raise InputImageError(path, f"{exc.reason}; {IMAGE_HINT}") from None
    if spec["kind"] == "face":
        return _face_crop(image, spec, state)
    arr = fit_square(image, int(cache["size"]), cache["resize"], int(cache["pad_value"]), cache.get("scale"))
    rows = int(round(float(spec.get("blank_top") or 0.0) * arr.shape[0]))
    if rows:
        arr = arr.copy()
        arr[:rows] = 255
    return arr, []


@dataclass
class Predictor:
    model: nn.Module
    meta: dict[str, Any]
    checkpoint: Path
    dropouts: list[nn.Module] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    runner: Any = None   # what computes the scores: ONNX Runtime on model.onnx, or the torch model
    gallery: dict[str, np.ndarray] | None = None   # gallery.npz beside the checkpoint: nearest-neighbour matches

    @property
    def spec(self) -> dict[str, Any]:
        return self.meta["input"]

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def describe(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "run": self.meta.get("run"), "task": self.meta.get("task"),
                "dataset": self.meta.get("dataset"), "kind": self.spec["kind"], "classes": self.class_names,
                "input_size": int(self.spec["size"]), "cache": self.spec.get("cache"),
                "temperature": self.meta.get("temperature", 1.0), "trained_on_synthetic": self.meta.get("synthetic"),
                "has_dropout": bool(self.dropouts), "ood_threshold": (self.meta.get("ood") or {}).get("threshold"),
                "runtime": "torch" if self.runner is None or isinstance(self.runner, nn.Module) else "onnx",
                "gallery": None if self.gallery is None else {
                    "photos": int(len(self.gallery["label"])), "classes": int(len(set(self.gallery["label"].tolist()))),
                    "method": str(self.gallery.get("method", "nearest_neighbour"))}}

    def predict(self, paths: Sequence[str | Path], top_k: int = 3, mc_passes: int = 30, seed: int = 0,
                refer_below: float = 0.8) -> list[dict[str, Any]]:
        """One result per path, in order: a ranked prediction or {"path", "error"}."""
        from genediag.data.datasets import CachedImageDataset

        results: list[dict[str, Any]] = []
        prepared, reasons = [], []
        for p in paths:
            try:
                arr, why = prepare_file(Path(p), self.spec, self.state)
            except InputImageError as exc:
                results.append({"path": str(p), "error": str(exc)})
                prepared.append(None)
                reasons.append([])
                continue
            results.append({"path": str(p)})
            prepared.append(arr)
            reasons.append(why)
        good = [i for i, a in enumerate(prepared) if a is not None]
        for i, a in enumerate(prepared):
            if a is None and not results[i].get("error"):   # a photo without a usable face: referred, no class
                results[i] = {"path": str(paths[i]), "kind": self.spec["kind"], "predicted": None,
                              "refer_for_review": True, "refer_reasons": reasons[i], "ranked": [],
                              "mc_dropout": None, "ood_score": None}
        if not good:
            return results
        images = np.stack([prepared[i] for i in good])
        ds = CachedImageDataset(images, np.arange(len(images)), np.zeros(len(images), np.int64),
                                int(self.spec["size"]), invert=bool(self.spec["invert"]))
        ood = self.meta.get("ood")
        with torch.no_grad():
            scores, feats = scores_and_features(self.runner or self.model, ds,
                                                features=bool(ood) or self.gallery is not None)
        temperature = float(self.meta.get("temperature", 1.0))
        probs = softmax(scores, temperature)
        ood_scores = ood_score(feats, input_thumbnails(ds), ood) if ood else None
        names = self.class_names
        k = max(1, min(int(top_k), len(names)))
        x_all = torch.stack([ds[j][0] for j in range(len(ds))])
        votes = mc_dropout_votes(self.model, x_all, mc_passes, seed, temperature) if mc_passes > 0 else None
        matches = None
        if self.gallery is not None:
            from genediag.faces.matching import nearest_neighbour_matches

            matches = nearest_neighbour_matches(feats, self.gallery, k)
        for j, i in enumerate(good):
            p = probs[j]
            order = np.argsort(-p, kind="stable")
            top = int(order[0])
            res: dict[str, Any] = {
                "path": str(paths[i]), "kind": self.spec["kind"], "predicted": names[top],
                "probability": round(float(p[top]), 6),
                "ranked": [{"class": names[c], "probability": round(float(p[c]), 6)} for c in order[:k]],
                "mc_dropout": None, "ood_score": None if ood_scores is None else round(float(ood_scores[j]), 4),
            }
            if matches is not None:
                res["nearest_neighbour"] = matches[j]
            why = list(reasons[i])
            problem = input_problem(ds[j][0])
            if problem:
                why.append(f"input check: {problem}")
            if ood_scores is not None and ood_scores[j] > 1.0:
                why.append(f"out of distribution (score {ood_scores[j]:.3g} > 1): unlike the training images")
            if votes is not None:
                agree = float((votes[:, j].argmax(1) == top).mean())
                res["mc_dropout"] = {"passes": int(mc_passes), "seed": int(seed), "agreement": round(agree, 6),
                                     "mean_probability": round(float(votes[:, j, top].mean()), 6),
                                     "std_probability": round(float(votes[:, j, top].std()), 6)}
                if agree < refer_below:
                    why.append(f"MC-dropout agreement {agree:.3f} < {refer_below}")
            if res["probability"] < refer_below:
                why.append(f"top-class probability {res['probability']:.3f} < {refer_below}")
            res["refer_for_review"] = bool(why)
            res["refer_reasons"] = why
            results[i] = res
        return results


def load_predictor(checkpoint: str | Path, device: str = "cpu", runtime: str = "auto") -> Predictor:
    """Load a genediag checkpoint (tensors and plain values only: nothing in it can run code). ``runtime``:
    ``onnx`` (the exported ``model.onnx`` beside it in ONNX Runtime), ``torch``, or ``auto`` (onnx on the CPU when
    the file is there). MC dropout always runs in torch (dropout is off in the exported graph)."""
    from genediag.models.checkpoint import load_checkpoint

    checkpoint = Path(checkpoint)
    model, meta = load_checkpoint(checkpoint, device=device)
    onnx_path = checkpoint.with_suffix(".onnx")
    runner = None
    if runtime == "onnx" and not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no exported model beside {checkpoint}; use --runtime torch")
    if runtime == "onnx" or (runtime == "auto" and device == "cpu" and onnx_path.is_file()):
        from genediag.models.export import OnnxClassifier

        runner = OnnxClassifier(onnx_path)
    gallery = None
    gallery_path = checkpoint.with_name("gallery.npz")
    if gallery_path.is_file():
        from genediag.faces.matching import load_gallery

        gallery = load_gallery(gallery_path)   # plain arrays: np.load(allow_pickle=False)
        if gallery["features"].ndim != 2 or len(gallery["features"]) != len(gallery["label"]):
            raise ValueError(f"{gallery_path}: not a gallery (features N×D and N labels)")
    return Predictor(model, meta, checkpoint, dropout_modules(model), runner=runner, gallery=gallery)


# ------------------------------------------------------------------------------------------------ output
def format_result(res: dict[str, Any]) -> str:
    """Human-readable block for one result (or a one-line error)."""
    if res.get("error"):
        return f"error: {res['error']}"
    flag = "YES (" + "; ".join(res["refer_reasons"]) + ")" if res["refer_for_review"] else "no"
    if res.get("predicted") is None:
        return f"{res['path']}: no prediction\n  refer for review: {flag}"
    lines = [f"{res['path']}: {res['predicted']} (p={res['probability']:.4f})",
             f"  {'rank':>4}  {'class':<14} probability"]
    lines += [f"  {r:>4}  {c['class']:<14} {c['probability']:.4f}" for r, c in enumerate(res["ranked"], 1)]
    mc = res["mc_dropout"]
    if mc:
        lines.append(f"  MC dropout: {mc['passes']} passes (seed {mc['seed']}), agreement {mc['agreement']:.2f}, "
                     f"mean p={mc['mean_probability']:.4f} ± {mc['std_probability']:.4f}")
    else:
        lines.append("  MC dropout: n/a (the model has no dropout layers, or --mc-passes 0)")
    if res.get("ood_score") is not None:
        lines.append(f"  out-of-distribution score: {res['ood_score']:.4g}")
    nn_ = res.get("nearest_neighbour")
    if nn_:
        lines.append(f"  nearest neighbours ({nn_['gallery_photos']} gallery photos, cosine similarity):")
        lines += [f"  {r:>4}  {c['class']:<14} {c['similarity']:.4f}  nearest: {c['nearest_photo']}"
                  for r, c in enumerate(nn_["ranked"], 1)]
    lines.append(f"  refer for review: {flag}")
    return "\n".join(lines)


def format_header(info: dict[str, Any]) -> str:
    trained = {True: "the synthetic cohort", False: f"dataset {info['dataset']}", None: "unknown data"}[
        info["trained_on_synthetic"]]
    return (f"model {info['run'] or info['checkpoint']} ({info['task']}, {info['kind']}, "
            f"{len(info['classes'])} classes, temperature {info['temperature']:.3f}), trained on {trained}")
