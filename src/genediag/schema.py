"""One schema for ``params.yaml``: the type, range and default of every key, in one place.

A section is checked by :func:`validate`, which returns the value with defaults filled in and raises a
:class:`~genediag.config.ConfigError` naming the dotted key, what was expected and what was found, e.g.
``params.yaml: chromosomes.runs.chromosomes24-dcnn.fit.epochs: expected an integer >= 1, got 'six' (str)``.
Unknown keys are errors too (a typo is not a silently ignored setting). ``python -m genediag params check``
validates the whole file; every stage validates what it reads before it starts.

Specs are small objects: ``Int(min=1)``, ``Float(0, 1)``, ``Bool()``, ``Str(choices=...)``, ``List(Int())``,
``Map({...})`` (fixed keys, each with a default unless listed in ``required``), ``Dict(value_spec)`` (free keys:
runs, datasets), ``OneOf(a, b)``, ``Nullable(spec)`` and ``Anything()``. ``Map`` values of ``None`` default to the
spec's own default; :data:`REQUIRED` marks a key without a default.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from genediag.config import ConfigError

REQUIRED = object()   # a Map field without a default


def _shown(value: Any) -> str:
    text = repr(value)
    return (text if len(text) < 60 else text[:57] + "...") + f" ({type(value).__name__})"


def _fail(where: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {_shown(value)}")


class Spec:
    default: Any = REQUIRED
    doc: str = ""

    def check(self, value: Any, where: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class Anything(Spec):
    default: Any = None
    doc: str = ""

    def check(self, value, where):
        return copy.deepcopy(value)

    def describe(self):
        return "any value"


@dataclass
class Int(Spec):
    min: int | None = None
    max: int | None = None
    default: Any = REQUIRED
    doc: str = ""

    def describe(self):
        if self.min is not None and self.max is not None:
            return f"an integer in [{self.min}, {self.max}]"
        if self.min is not None:
            return f"an integer >= {self.min}"
        return "an integer"

    def check(self, value, where):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise _fail(where, self.describe(), value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise _fail(where, self.describe(), value)
        return value


@dataclass
class Float(Spec):
    min: float | None = None
    max: float | None = None
    default: Any = REQUIRED
    doc: str = ""
    open_min: bool = False   # min itself not allowed

    def describe(self):
        lo = "(" if self.open_min else "["
        if self.min is not None and self.max is not None:
            return f"a number in {lo}{self.min}, {self.max}]"
        if self.min is not None:
            return f"a number {'>' if self.open_min else '>='} {self.min}"
        return "a number"

    def check(self, value, where):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise _fail(where, self.describe(), value)
        value = float(value)
        low_bad = self.min is not None and (value <= self.min if self.open_min else value < self.min)
        if low_bad or (self.max is not None and value > self.max):
            raise _fail(where, self.describe(), value)
        return value


@dataclass
class Bool(Spec):
    default: Any = REQUIRED
    doc: str = ""

    def describe(self):
        return "true or false"

    def check(self, value, where):
        if not isinstance(value, bool):
            raise _fail(where, self.describe(), value)
        return value


@dataclass
class Str(Spec):
    choices: Sequence[str] | None = None
    default: Any = REQUIRED
    doc: str = ""

    def describe(self):
        return f"one of {list(self.choices)}" if self.choices else "a string"

    def check(self, value, where):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not self.choices:
            value = str(value)   # a label written 5 in YAML is the string "5"
        if not isinstance(value, str) or (self.choices and value not in self.choices):
            raise _fail(where, self.describe(), value)
        return value


@dataclass
class List(Spec):
    item: Spec = field(default_factory=Anything)
    min_len: int = 0
    length: int | None = None
    default: Any = REQUIRED
    doc: str = ""

    def describe(self):
        n = f" of {self.length}" if self.length is not None else (f" of at least {self.min_len}" if self.min_len else "")
        return f"a list{n} ({self.item.describe()} each)"

    def check(self, value, where):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list) or len(value) < self.min_len or (
                self.length is not None and len(value) != self.length):
            raise _fail(where, self.describe(), value)
        return [self.item.check(v, f"{where}[{i}]") for i, v in enumerate(value)]


@dataclass
class Map(Spec):
    fields: Mapping[str, Spec] = field(default_factory=dict)
    default: Any = None          # None: {} with every field's default
    doc: str = ""
    extra: Spec | None = None    # spec of keys not in `fields` (None: unknown keys are errors)

    def describe(self):
        return "a mapping"

    def check(self, value, where):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise _fail(where, "a mapping with keys " + str(sorted(self.fields)), value)
        unknown = sorted(set(map(str, value)) - set(self.fields))
        if unknown and self.extra is None:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(self.fields)}")
        out: dict[str, Any] = {}
        for key, spec in self.fields.items():
            if key in value:
                out[key] = spec.check(value[key], f"{where}.{key}")
            elif spec.default is REQUIRED:
                raise ConfigError(f"{where}: missing '{key}' ({spec.doc or spec.describe()})")
            else:
                out[key] = _default(spec, f"{where}.{key}")
        for key in unknown:
            out[key] = self.extra.check(value[key], f"{where}.{key}")
        return out


def _default(spec: Spec, where: str) -> Any:
    if isinstance(spec, Map) and spec.default is None:
        return spec.check({}, where)
    return copy.deepcopy(spec.default)


@dataclass
class Dict(Spec):
    """Free keys (run names, dataset names), every value checked by `value`."""
    value: Spec = field(default_factory=Anything)
    default: Any = field(default_factory=dict)
    doc: str = ""
    key_check: Callable[[str], str | None] | None = None   # returns an error text for a bad key

    def describe(self):
        return "a mapping of names"

    def check(self, value, where):
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise _fail(where, self.describe(), value)
        out = {}
        for k, v in value.items():
            k = str(k)
            problem = self.key_check(k) if self.key_check else None
            if problem:
                raise ConfigError(f"{where}.{k}: {problem}")
            out[k] = self.value.check(v, f"{where}.{k}")
        return out


@dataclass
class OneOf(Spec):
    options: Sequence[Spec] = ()
    default: Any = REQUIRED
    doc: str = ""

    def describe(self):
        return " or ".join(o.describe() for o in self.options)

    def check(self, value, where):
        errors = []
        for option in self.options:
            try:
                return option.check(value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        # a mapping that fits a Map option's shape gets that option's precise message (names the inner key)
        if isinstance(value, Mapping):
            maps = [o for o in self.options if isinstance(o, Map)]
            if len(maps) == 1:
                maps[0].check(value, where)
        raise _fail(where, self.describe(), value)


@dataclass
class Nullable(Spec):
    inner: Spec = field(default_factory=Anything)
    default: Any = None
    doc: str = ""

    def describe(self):
        return f"null or {self.inner.describe()}"

    def check(self, value, where):
        return None if value is None else self.inner.check(value, where)


def validate(value: Any, spec: Spec, where: str) -> Any:
    """`value` checked against `spec`, with defaults filled in (a new object; the input is not changed)."""
    return spec.check(value, where)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: `over` merged into `base`, mappings key by key, anything else replaced.

    A mapping in `over` whose ``name`` differs from `base`'s (a different optimiser, loss, …) replaces it
    instead of merging: options of one loss make no sense for another."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping) and value.get("name", old.get("name")) == old.get("name"):
            out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ============================================================================================ the sections
# Small shared pieces
def _share(default=REQUIRED, doc=""):
    return Float(0.0, 1.0, default=default, doc=doc)


POSITIVE = dict(min=0.0, open_min=True)
SEED = Int(0, default=0, doc="random seed")

# ------------------------------------------------------------------------------------------------ datasets
KINDS = ("chromosome_crops", "karyograms", "face_syndromes", "face_identities")
FACE_KINDS = ("face_syndromes", "face_identities")

INGEST = Map({
    "mode": Str(("L", "RGB"), default="L", doc="L (grey) or RGB"),
    "size": Int(8, 4096, default=64, doc="side of the square cache images, px (face kinds: the aligned crop)"),
    "resize": Str(("pad", "stretch", "preserve"), default="pad"),
    "scale": Nullable(Float(**POSITIVE), doc="resize: preserve: cache px per source px"),
    "pad_value": Int(0, 255, default=255),
    "min_side": Int(1, default=8),
    "max_side": Int(1, default=20000),
    "max_pixels": Int(1, default=100_000_000, doc="decoded pixels per image (decompression-bomb guard)"),
    "max_bytes": Int(1, default=256 * 2**20, doc="file size cap, bytes"),
    "frame": Nullable(Int(0), doc="frame of multi-page/animated files to use (null: refuse them)"),
})
COLUMNS = Map({"path": Str(default="path"), "label": Str(default="label"), "group": Str(default="group_id"),
               "cell": Str(default="cell_id"), "split": Str(default="split")})
SPLIT = Map({
    "method": Str(("groups", "nested", "hold_out_people"), default="groups",
                  doc="groups: one stratified group split; nested: test first, then val from the rest; "
                      "hold_out_people: whole people to test, each other person's photos to train/val"),
    "ratios": Dict(_share(), default={"train": 0.8, "val": 0.1, "test": 0.1}),
    "seed": SEED,
    "stratify_on": OneOf((Str(), List(Str(), min_len=1)), default="label"),
    "trials": Int(0, default=200),
    "near_duplicates": Bool(default=True, doc="find near-copies (a few pixels changed) and keep them in one split"),
    "near_duplicate_min_content": Int(1, default=60, doc="foreground pixels an image needs to be compared"),
})
DETECT = Map({
    "min_face_size": Int(12, default=40),
    "thresholds": List(_share(), length=3, default=[0.6, 0.7, 0.7]),
    "factor": Float(0.1, 0.99, default=0.709),
    "review_below": _share(default=0.97),
    "second_face_ratio": _share(default=0.5, doc="a second face counts when its box area and probability are at "
                                                  "least this share of the kept face's"),
    "rotations": List(Int(), default=[90, 270, 180], doc="retry angles for a photo with no face"),
    "queued_in_training": OneOf((Str(("auto",)), Bool()), default="auto",
                                doc="auto: synthetic data trains on queued photos, real data only once accepted"),
    "max_side": Nullable(Int(32), default=640),
    "device": Str(default="cpu"),
    "contact_sheet_max": Int(0, default=60),
})
ALIGN = Map({
    "template": Str(("sphereface", "arcface", "facenet"), default="sphereface"),
    "scale": Float(0.1, 4.0, default=1.0),
    "border": Str(("constant", "replicate", "reflect"), default="constant"),
    "detect": Bool(default=True, doc="false: the photos are already aligned crops (resized, not detected)"),
})
DATASET = Map({
    "kind": Str(KINDS),
    "source": Str(doc="a CSV manifest or a folder-per-class tree"),
    "synthetic": OneOf((Str(("auto",)), Bool()), default="auto"),
    "labels": Nullable(OneOf((Str(), List(Str(), min_len=1), Dict(Nullable(Str())))),
                       doc="allow-list (named set or list) or mapping source label → task label (null drops)"),
    "columns": COLUMNS,
    "group_by": Str(("auto", "column", "folder", "label", "file"), default="auto"),
    "allow_outside_root": Bool(default=False),
    "ingest": INGEST,
    "split": SPLIT,
    "faces": Map({"detect": DETECT, "align": ALIGN}),
})
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "chromosome_crops": {"ingest": {"mode": "L", "size": 64, "resize": "pad", "pad_value": 255}},
    "karyograms": {"ingest": {"mode": "L", "size": 416, "resize": "stretch", "min_side": 64}},
    "face_syndromes": {"ingest": {"mode": "RGB", "min_side": 48, "pad_value": 0},
                       "split": {"method": "nested", "ratios": {"train": 0.81, "val": 0.09, "test": 0.1}}},
    "face_identities": {"ingest": {"mode": "RGB", "min_side": 48, "pad_value": 0}, "group_by": "label",
                        "split": {"method": "hold_out_people", "ratios": {"train": 0.664, "val": 0.136, "test": 0.2}}},
}


def resolve_dataset(name: str, cfg: Mapping[str, Any], where: str = "params.yaml: datasets") -> dict[str, Any]:
    """``datasets.<name>`` with the defaults of its kind, then the schema's, filled in."""
    where = f"{where}.{name}"
    if not isinstance(cfg, Mapping):
        raise _fail(where, "a mapping (kind, source, ...)", cfg)
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind: expected one of {list(KINDS)}, got {kind!r}")
    out = validate(deep_merge(KIND_DEFAULTS[kind], cfg), DATASET, where)
    ratios = out["split"]["ratios"]
    if abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ConfigError(f"{where}.split.ratios: must add up to 1, they add up to {sum(ratios.values()):g}")
    if out["ingest"]["resize"] == "preserve" and not out["ingest"]["scale"]:
        raise ConfigError(f"{where}.ingest.scale: resize: preserve needs the scale (cache px per source px)")
    return out


# ------------------------------------------------------------------------------------------------ training
OPTIMIZER = Map({
    "name": Str(("adam", "adamw", "sgd"), default="adam"),
    "lr": Float(**POSITIVE, default=1e-3),
    "weight_decay": Float(0.0, default=0.0),
    "momentum": Nullable(_share()),
    "nesterov": Nullable(Bool()),
    "betas": Nullable(List(_share(), length=2)),
})
SCHEDULER = Map({
    "name": Str(("none", "constant", "onecycle", "cosine", "step"), default="none"),
    "max_lr": Nullable(Float(**POSITIVE)),
    "pct_start": Nullable(_share()),
    "step_size": Nullable(Int(1)),
    "gamma": Nullable(Float(**POSITIVE)),
})
LOSS = Map({
    "name": Str(default="cross_entropy", doc="a registered loss: cross_entropy, bce, bce_multilabel, a_softmax"),
    "label_smoothing": Nullable(Float(0.0, 1.0)),
    "weight": Nullable(OneOf((Str(("balanced",)), List(Float(0.0), min_len=1)))),
    "pos_weight": Nullable(Float(**POSITIVE)),
    "margin": Nullable(Int(1)),
    "lambda_base": Nullable(Float(0.0)),
    "lambda_gamma": Nullable(Float(0.0)),
    "lambda_power": Nullable(Float(0.0)),
    "lambda_min": Nullable(Float(0.0)),
})
FIT = Map({
    "epochs": Int(1, default=10),
    "batch_size": Int(1, default=64),
    "optimizer": OPTIMIZER,
    "scheduler": SCHEDULER,
    "loss": LOSS,
    "early_stopping": Map({"patience": Int(0, default=5), "min_delta": Float(0.0, default=0.0),
                           "monitor": Str(("val_loss", "val_accuracy"), default="val_loss")}),
    "restore_best": Bool(default=True, doc="false: keep the last epoch's weights"),
    "seed": SEED,
    "device": Str(default="auto", doc="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps"),
    "amp": Bool(default=True, doc="mixed precision (CUDA only)"),
    "channels_last": Bool(default=True),
    "num_workers": Int(0, default=0),
    "eval_batch_size": Int(1, default=256),
    "threads": Int(0, default=0, doc="torch threads (0: torch's default, one per core)"),
    "resume": Bool(default=True, doc="continue a killed run from its last finished epoch"),
})
AUGMENT = List(Map({"name": Str()}, extra=Anything()), default=[])
CLASSES = OneOf((Str(), List(Str(), min_len=2), Dict(OneOf((Str(), List(Str(), min_len=1))))))
RUN = Map({
    "family": Str(doc="the family whose defaults this run starts from"),
    "task": Str(doc="what is learned, e.g. chromosomes24, binary-del5p, karyograms"),
    "model": Str(doc="the model's short name in reports"),
    "classes": CLASSES,
    "arch": Map({"name": Str()}, extra=Anything()),
    "input_size": Int(8, 4096),
    "invert": Bool(default=False, doc="dark-on-white → bright-on-black (padding and background become 0)"),
    "caps": Map({"train": Nullable(Int(1)), "val": Nullable(Int(1))},
                doc="seeded per-class subsample of train/val (a synthetic-default shortcut; null = all)"),
    "augment": AUGMENT,
    "cache_features": Bool(default=False),
    "warmup": Nullable(Map({"epochs": Int(1, default=10), "lr": Float(**POSITIVE, default=1e-3)})),
    "recalibrate_bn": Bool(default=False),
    "calibrate": Bool(default=True, doc="fit a softmax temperature on the validation split"),
    "seeds": Int(1, 10, default=1, doc="models trained with seeds fit.seed, +1, ...; the first is the headline"),
    "seed_workers": Int(0, default=0, doc="0: seeds train side by side, one process each, up to two per core "
                                          "(CPU); 1: one after the other; N: at most N processes"),
    "ood_quantile": _share(default=0.99, doc="OOD threshold: this quantile of the validation split's scores"),
    "fit": FIT,
})


FACE_RUN = Map({**RUN.fields,
                 "task": Str(default="faces"),
                 "classes": OneOf((Str(), List(Str(), min_len=2), Dict(OneOf((Str(), List(Str(), min_len=1))))),
                                  default="all"),
                 "input_size": Nullable(Int(8), doc="set from the aligned crops"),
                 "init": Nullable(Str(), doc="(stage 2) the stage-1 run whose weights start this one")})


REALIGN = Map({
    "source": Str(doc="an ingested face dataset (a datasets entry)"),
    "photos": Str(doc="the source's photo folder (read again; a dependency of the stage)"),
    "template": Str(("sphereface", "arcface", "facenet")),
    "scale": Float(0.1, 4.0, default=1.0),
    "border": Nullable(Str(("constant", "replicate", "reflect")), doc="null: the source's"),
})
FACENET = Map({
    "identities": Str(doc="the identity dataset aligned for FaceNet (faces.align.template: facenet)"),
    "syndromes": Str(doc="the syndrome dataset aligned for FaceNet: the FaceNet-init runs (faces.heads) learn from it"),
    "batch_size": Int(1, default=32, doc="photos per forward pass of the embedding cache"),
})
MATCHING = Map({
    "method": Str(("nearest_neighbour",), default="nearest_neighbour"),
    "top_k": List(Int(1), min_len=1, default=[1, 5, 10]),
    "gallery_splits": List(Str(("train", "val")), min_len=1, default=["train", "val"],
                           doc="whose photos form the gallery (test photos are the queries)"),
    "leave_out": Map({
        "syndromes": List(Str(), default=[], doc="held out of the embedding model's training (its classes must "
                                                 "not include them; a run trained on them gets no leave-out figure)"),
        "gallery_people": Int(1, default=3, doc="people per held-out syndrome in the gallery, one photo each"),
        "seed": SEED,
    }),
})


def resolve_run(branch: str, run: str, section: Mapping[str, Any], where: str = "params.yaml",
                runs_key: str = "runs", spec: Map = RUN) -> dict[str, Any]:
    """A run of a branch (``<branch>.<runs_key>.<run>``) merged over its family (``<branch>.families.<family>``)."""
    runs, families = section.get(runs_key) or {}, section.get("families") or {}
    where = f"{where}: {branch}.{runs_key}.{run}"
    if run not in runs:
        raise ConfigError(f"{where}: no such run (runs: {sorted(runs)})")
    entry = runs[run] or {}
    family = entry.get("family")
    if family not in families:
        raise ConfigError(f"{where}.family: expected one of {sorted(families)}, got {family!r}")
    return validate(deep_merge(families[family] or {}, entry), spec, where)


# ------------------------------------------------------------------------------------------------ the rest
EVIDENCE = Map({
    "bootstrap": Int(50, default=1000, doc="patient-level bootstrap resamples for the 95 % intervals"),
    "seed": SEED,
    "ece_bins": Int(2, default=15),
    "refer_below": _share(default=0.8, doc="refer a case whose calibrated top probability is below this"),
    "mc_passes": Int(0, default=20, doc="MC-dropout passes for the referral curves (0: skip)"),
    "mc_items": Int(1, default=300, doc="test items (seeded subsample) the MC-dropout referral curve uses"),
    "runtime": Str(("onnx", "torch"), default="onnx", doc="onnx: the exported model.onnx in ONNX Runtime (CPU); torch"),
    "threads": Int(0, default=0, doc="inference threads (0: the runtime's default, one per core)"),
})
CROSS_EVALUATION = Map({
    "run": Str(doc="a trained run (models/<run>)"),
    "branch": Str(("chromosomes", "karyograms", "faces"), doc="the branch the run belongs to"),
    "dataset": Str(doc="the datasets entry whose test split it is scored on"),
    "protocol": Str(("classify", "verify"), default="classify",
                    doc="classify: the run's evaluation on that split; verify: face verification on its people"),
})
BENCHMARK = Map({
    "samples": Int(1, default=1000), "batch_size": Int(1, default=256), "warmup": Int(0, default=10),
    "threads": Int(0, default=0), "device": Str(default="cpu"), "split": Str(("train", "val", "test"), default="test"),
})

# ------------------------------------------------------------------------------------------------ karyograms
KARYOGRAM_AUGMENT = Map({
    "brightness": Float(0.0, 0.99, default=0.25, doc="factor drawn from [1 − b, 1 + b]"),
    "noise_fraction": _share(default=0.05, doc="share of pixels that get noise, drawn from [0, f]"),
    "noise_sigma": Float(0.0, default=40.0),
    "blur_prob": _share(default=0.5),
    "blur_sigma": List(Float(**POSITIVE), length=2, default=[0.3, 1.2]),
})
BALANCE = Map({
    "source": Str(doc="an ingested and split dataset"),
    "target_ratio": Float(0.0, 1.0, open_min=True, default=1.0, doc="minority / majority after balancing"),
    "majority_factor": Float(1.0, default=1.0),
    "blank_top": Float(0.0, 0.49, default=0.0, doc="share of rows blanked at the top of every image"),
    "augment": KARYOGRAM_AUGMENT,
    "seed": SEED,
})
BASE_FIT = Map({"epochs": Int(1, default=1), "batch_size": Int(1, default=64), "lr": Float(**POSITIVE, default=1e-3),
                "pct_start": _share(default=0.2), "seed": SEED, "device": Str(default="auto"),
                "threads": Int(0, default=0)})
BASE = Map({
    "enabled": Bool(default=True, doc="false (real data): no synthetic pretraining; the stage writes a placeholder "
                                      "that a run loading it rejects with a clear error"),
    "backbone": Str(("vgg16", "inception_v3")),
    "input_size": Int(32, 1024, doc="= the input_size of the runs that load the base"),
    "crops": Str(doc="the crop source manifest whose cells the karyograms are recomposed from"),
    "patients": Str(default="karyograms", doc="the dataset whose split says which patients are train and val"),
    "karyogram_size": List(Int(16), length=2, default=[640, 480]),
    "title": Str(default="46,XX"),
    "blank_top": Float(0.0, 0.49, default=0.065),
    "resize": Int(32, default=416, doc="= the karyogram dataset's ingest size"),
    "invert": Bool(default=True),
    "patch": Int(8, default=32),
    "jitter": Float(0.0, default=2.0),
    "label_radius": Float(0.0, default=0.3),
    "max_changes": Int(0, default=3),
    "karyograms": Map({"train": Int(1, default=1000), "val": Int(1, default=200)}),
    "max_patches": Map({"train": Int(1, default=6000), "val": Int(1, default=2000)}),
    "crop_size": Int(16, default=64, doc="crops are decoded and fitted to this square first"),
    "workers": Int(1, default=2),
    "seed": SEED,
    "fit": BASE_FIT,
})
HPSEARCH = Map({
    "run": Str(doc="the karyograms.runs entry to tune"),
    "trials": Int(1, default=3), "epochs": Int(1, default=1), "max_train_items": Nullable(Int(2)),
    "lr": List(Float(**POSITIVE), length=2, default=[1e-5, 1e-2]), "batch_size": List(Int(1), min_len=1, default=[8, 16, 32]),
    "seed": SEED,
})
MC_DROPOUT = Map({
    "run": Str(), "passes": Int(1, default=100), "threshold": Float(0.0, 1.0, open_min=True, default=0.8),
    "seed": SEED, "split": Str(("val", "test"), default="test"), "batch_size": Int(1, default=32),
    "chunk": Int(1, default=4096),
})

# ------------------------------------------------------------------------------------------------ karyotyping
KARYOTYPING = Map({
    "model_run": Str(doc="a chromosomes run whose classes include 1–22, X, Y; or best (highest validation "
                         "accuracy among candidate_runs)"),
    "candidate_runs": List(Str(), default=[]),
    "splits": OneOf((Str(("all",)), List(Str(("train", "val", "test")), min_len=1)), default=["test"]),
    "hypotheses": Anything(default="standard", doc="standard, {standard: {group: weight}}, {ISCN: weight} or a list"),
    "nofit_quantile": Nullable(_share(), default=0.01,
                               doc="refer a cell whose per-crop log-likelihood is below this quantile of the "
                                   "validation cells' (null: never)"),
    "min_prob": Float(0.0, 0.5, open_min=True, default=1.0e-6),
    "extra_penalty": Float(**POSITIVE, default=8.0),
    "missing_penalty": Float(**POSITIVE, default=8.0),
    "low_confidence": _share(default=0.5),
    "karyogram_size": List(Int(16), length=2, default=[640, 480]),
    "example_cell": Str(default="auto"),
    "batch_size": Int(1, default=256),
})

# ------------------------------------------------------------------------------------------------ the file
REPORTS = Map({
    "chromosomes": Map({"tasks": List(Str(), default=[])}),
    "karyograms": Map({"runs": List(Str(), default=[])}),
    "faces": Map({"pretrain": List(Str(), default=[]), "finetune": List(Str(), default=[]),
                  "heads": List(Str(), default=[]), "facenet": Nullable(Str(), default=None),
                  "presets": List(Str(), default=[]),
                  "matching": List(Str(), default=[]), "embedding_runs": Dict(Str(), default={}),
                  "paired": List(List(Str(), length=2), default=[])}),
    "html": Map({"title": Str(default="genediag results"), "embed_images": Bool(default=False)}),
})
