"""The synthetic dysmorphology cohort (the face branch's embedded default; every result on it is *synthetic*).

Base photographs: real public-domain portraits that ship inside installed packages (see :data:`BASE_PORTRAITS`
for files and licences), each used as is and mirrored. On every base 29 landmarks were placed by hand on the
original pixels (eyes and their corners, brows, nasion, nasal bridge, nose, mouth, chin, jaw, cheeks, temples,
forehead) and checked against MTCNN's 5 points.

A *person* is a base plus a smooth thin-plate-spline (TPS) warp driven by those landmarks (an individual face
shape: eye spacing, face width and length, nose, mouth, brows, small asymmetries), a skin tone and a hair
tone. A *photo* of a person adds a pose (roll, slight yaw/pitch), scale, position, a small expression change,
illumination (directional light, brightness, gamma, colour cast), a new background, blur, noise and JPEG
compression, and keeps a wide margin around the head: faces are not aligned, detection has real work.

A *syndrome* is a documented pattern of facial-geometry change (:data:`PATTERNS`, named by the feature, never
after a real syndrome), a displacement of some landmarks in units of the inter-ocular distance (IOD), applied
to a person with an individual severity. Ten patterns plus ``healthy`` (no pattern) make the 11 classes, as in
the paper. An identity set (many people, several photos each, no pattern) stands in for CASIA-WebFace.

Everything is drawn from ``numpy.random.default_rng`` streams keyed by (seed, dataset, person, photo): the
cohort is identical for the same params on every machine (JPEG encoding by Pillow is deterministic).

Extra test-only people (``syndromes.test_subjects_per_class``, ``identities.test_people``; 0 = none and the output
unchanged byte for byte) are drawn from streams of their own, so adding them changes no other photo: stream key 6
(test subjects, ids ``ts<class><j>``) and 7 (test people, ids ``tp<j>``), their photos 16 and 17, where the main
cohort uses 1 and 2 (people), 3 (no-face picks), 4 and 5 (atlas), 11 and 12 (photos). A dataset with extra people
gets a last manifest column ``split``: "test" for them (whole people, fixed to the test split), "" for everyone
else (the split stage decides). Test subjects get ``photos_per_subject`` photos (no no-face photos), test people
``photos_per_person``.

Output (``out_root``): ``syndromes/manifest.csv`` and ``identities/manifest.csv`` with columns
``path,label,group_id,photo,base,severity,...`` (``path`` relative to the manifest, as ingest expects), the
photos under ``<dataset>/<label>/<person>_<k>.jpg``, and ``truth.csv`` per dataset (the generator's own record
of where the face is: eye centres, for checking detection).
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from PIL import Image

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ bases
LANDMARKS = ["eye_l", "eye_r", "eye_l_outer", "eye_l_inner", "eye_r_inner", "eye_r_outer", "brow_l", "brow_l_outer",
             "brow_r", "brow_r_outer", "nasion", "bridge_l", "bridge_r", "nose_tip", "subnasale", "ala_l", "ala_r",
             "mouth_l", "mouth_r", "lip_upper", "lip_lower", "chin", "jaw_l", "jaw_r", "cheek_l", "cheek_r",
             "temple_l", "temple_r", "forehead"]
# "_l" = the image's left side. Mirroring a base swaps _l and _r.

BASE_PORTRAITS: dict[str, dict[str, Any]] = {
    "astronaut": {
        "package": "skimage", "file": "data/astronaut.png",
        "credit": "Eileen Collins, NASA (scikit-image `skimage.data.astronaut`)",
        "licence": "public domain: 'No known copyright restrictions, released into the public domain' "
                   "(scikit-image documentation; NASA Great Images database)",
        # head ellipse (centre x, centre y, semi-axis x, semi-axis y) in IOD units around the eye midpoint
        "head": (0.05, -0.1, 1.95, 1.9),
        "landmarks": {
            "eye_l": (205.0, 101.7), "eye_r": (246.8, 103.7), "eye_l_outer": (193, 100), "eye_l_inner": (215, 102),
            "eye_r_inner": (236, 103.5), "eye_r_outer": (258, 103), "brow_l": (203, 89), "brow_l_outer": (188, 92),
            "brow_r": (248, 92), "brow_r_outer": (260, 95), "nasion": (225.5, 100), "bridge_l": (218, 112),
            "bridge_r": (233, 112), "nose_tip": (225, 127), "subnasale": (225, 133), "ala_l": (213, 130),
            "ala_r": (238, 131), "mouth_l": (201.7, 139.2), "mouth_r": (245.3, 141.9), "lip_upper": (224, 140),
            "lip_lower": (223, 153), "chin": (222, 178), "jaw_l": (195, 162), "jaw_r": (255, 162),
            "cheek_l": (183, 133), "cheek_r": (268, 134), "temple_l": (182, 100), "temple_r": (270, 102),
            "forehead": (225, 72)},
    },
    "grace_hopper": {
        "package": "matplotlib", "file": "mpl-data/sample_data/grace_hopper.jpg",
        "credit": "Commodore Grace M. Hopper, official U.S. Navy photograph (matplotlib sample data)",
        "licence": "public domain: a work of the U.S. federal government (U.S. Navy), shipped as matplotlib "
                   "sample data",
        "head": (0.0, -0.2, 1.6, 2.05),
        "landmarks": {
            "eye_l": (221.7, 192.2), "eye_r": (309.8, 186.1), "eye_l_outer": (196, 191), "eye_l_inner": (244, 192),
            "eye_r_inner": (285, 188), "eye_r_outer": (330, 186), "brow_l": (218, 172), "brow_l_outer": (192, 176),
            "brow_r": (310, 168), "brow_r_outer": (336, 172), "nasion": (265, 185), "bridge_l": (254, 212),
            "bridge_r": (278, 211), "nose_tip": (268, 244), "subnasale": (267, 256), "ala_l": (244, 247),
            "ala_r": (291, 245), "mouth_l": (232.7, 279.6), "mouth_r": (306.6, 275.9), "lip_upper": (268, 272),
            "lip_lower": (268, 290), "chin": (265, 333), "jaw_l": (208, 306), "jaw_r": (326, 305),
            "cheek_l": (189, 247), "cheek_r": (345, 246), "temple_l": (165, 190), "temple_r": (368, 186),
            "forehead": (265, 140)},
    },
}
# Looked at and not used: skimage's `camera` (CC0, but a profile face hidden behind a camera: no frontal
# geometry to warp) and `lfw_subset` (25×25 px, and the LFW photos carry no public-domain licence).

# ------------------------------------------------------------------------------------------- patterns
# Displacements in IOD units in a face frame (origin: eye midpoint; x: towards the image's right; y: down).
# "out" = away from the midline (−x on the _l side, +x on the _r side); applied × severity.
PATTERNS: dict[str, dict[str, Any]] = {
    "wide_set_eyes": {
        "feature": "hypertelorism-like: eyes, their corners and the brows moved apart (the temples follow)",
        "out": {"eye_l": .11, "eye_r": .11, "eye_l_outer": .11, "eye_r_outer": .11, "eye_l_inner": .10,
                "eye_r_inner": .10, "brow_l": .09, "brow_r": .09, "brow_l_outer": .08, "brow_r_outer": .08,
                "bridge_l": .04, "bridge_r": .04, "temple_l": .08, "temple_r": .08, "cheek_l": .03, "cheek_r": .03}},
    "close_set_eyes": {
        "feature": "hypotelorism-like: eyes, their corners and the brows moved towards the midline",
        "out": {"eye_l": -.10, "eye_r": -.10, "eye_l_outer": -.10, "eye_r_outer": -.10, "eye_l_inner": -.08,
                "eye_r_inner": -.08, "brow_l": -.08, "brow_r": -.08, "brow_l_outer": -.07, "brow_r_outer": -.07,
                "bridge_l": -.03, "bridge_r": -.03}},
    "upslanted_palpebral_fissures": {
        "feature": "outer eye corners raised, inner corners lowered (and the outer brows follow)",
        "dy": {"eye_l_outer": -.10, "eye_r_outer": -.10, "eye_l_inner": .06, "eye_r_inner": .06,
               "brow_l_outer": -.06, "brow_r_outer": -.06}},
    "downslanted_palpebral_fissures": {
        "feature": "outer eye corners lowered, inner corners raised (and the outer brows follow)",
        "dy": {"eye_l_outer": .10, "eye_r_outer": .10, "eye_l_inner": -.06, "eye_r_inner": -.06,
               "brow_l_outer": .07, "brow_r_outer": .07}},
    "long_philtrum": {
        "feature": "longer nose-to-lip distance: mouth and lips moved down, chin and jaw a little",
        "dy": {"lip_upper": .16, "mouth_l": .15, "mouth_r": .15, "lip_lower": .14, "chin": .10, "jaw_l": .05,
               "jaw_r": .05, "subnasale": -.02}},
    "small_jaw": {
        "feature": "micrognathia-like: chin raised, jaw narrowed and raised",
        "dy": {"chin": -.22, "jaw_l": -.10, "jaw_r": -.10, "lip_lower": -.05, "mouth_l": -.02, "mouth_r": -.02},
        "out": {"jaw_l": -.14, "jaw_r": -.14, "chin": 0.0}},
    "broad_nasal_bridge": {
        "feature": "wide nasal bridge and nose: bridge sides, inner eye corners and alae moved out",
        "out": {"bridge_l": .12, "bridge_r": .12, "eye_l_inner": .05, "eye_r_inner": .05, "ala_l": .08,
                "ala_r": .08}},
    "flat_midface": {
        "feature": "midface hypoplasia-like: short upturned nose, mouth closer to the eyes, flat cheeks",
        "dy": {"nose_tip": -.12, "subnasale": -.10, "ala_l": -.09, "ala_r": -.09, "lip_upper": -.07,
               "mouth_l": -.06, "mouth_r": -.06, "lip_lower": -.05},
        "out": {"cheek_l": -.07, "cheek_r": -.07, "ala_l": .03, "ala_r": .03}},
    "wide_mouth": {
        "feature": "macrostomia-like: mouth corners moved out",
        "out": {"mouth_l": .17, "mouth_r": .17}},
    "long_narrow_face": {
        "feature": "long lower face: chin lowered, jaw and cheeks narrowed",
        "dy": {"chin": .22, "jaw_l": .10, "jaw_r": .10, "lip_lower": .07, "mouth_l": .05, "mouth_r": .05,
               "lip_upper": .04},
        "out": {"jaw_l": -.10, "jaw_r": -.10, "cheek_l": -.07, "cheek_r": -.07}},
}
HEALTHY = "healthy"
CLASSES = [HEALTHY, *PATTERNS]

# depth of each landmark (0 = face outline … 1 = nose tip), for the small yaw/pitch changes of a photo
DEPTH = {"nose_tip": 1.0, "subnasale": .8, "ala_l": .75, "ala_r": .75, "nasion": .55, "bridge_l": .6, "bridge_r": .6,
         "lip_upper": .7, "lip_lower": .65, "mouth_l": .5, "mouth_r": .5, "chin": .55, "eye_l": .3, "eye_r": .3,
         "eye_l_inner": .35, "eye_r_inner": .35, "eye_l_outer": .2, "eye_r_outer": .2, "brow_l": .4, "brow_r": .4,
         "brow_l_outer": .25, "brow_r_outer": .25, "forehead": .35, "cheek_l": .2, "cheek_r": .2, "jaw_l": .1,
         "jaw_r": .1, "temple_l": 0.0, "temple_r": 0.0}

DEFAULTS: dict[str, Any] = {
    "seed": 2026,
    "syndromes": {"subjects_per_class": 16, "photos_per_subject": 2, "no_face_photos": 2,
                  "test_subjects_per_class": 0},   # extra subjects per class for the test split only (module doc)
    "identities": {"people": 60, "photos_per_person": 6,
                   "test_people": 0},              # extra people held out whole for verification (module doc)
    "canvas": [[240, 240], [224, 256], [256, 224]],   # photo sizes (W, H): detection batches same-size buckets
    "iod_px": [26.0, 42.0],          # inter-ocular distance in the photo, px
    "severity": [0.55, 1.15],        # individual pattern severity, uniform
    "pattern_gain": 2.0,             # multiplies every pattern's displacements (PATTERNS lists them at gain 1)
    "identity_sd": 1.0,              # scale of the person-to-person shape variation
    "roll_deg": 12.0,                # in-plane rotation, uniform ±
    "yaw": 0.10,                     # nose-tip shift for a turned head, IOD units, uniform ±
    "pitch": 0.06,
    "expression": 0.05,              # mouth-corner change between photos of one person, IOD units
    "skin_tone": {"L": [-30.0, 8.0], "a": [-4.0, 4.0], "b": [-4.0, 10.0]},  # CIELAB shift of the face, per person
    "hair_tone": {"L": [-35.0, 30.0], "a": [-4.0, 8.0], "b": [-12.0, 16.0]},  # CIELAB shift of hair/headwear
    "light": {"gradient": 0.45, "brightness": [0.75, 1.2], "gamma": [0.8, 1.25], "cast": 0.08},
    "blur_sigma": [0.0, 0.8],
    "noise_sigma": [1.0, 4.0],
    "jpeg_quality": [75, 95],
    "atlas_people": 2,               # rows of the pattern atlas figure
    "workers": 2,                    # processes; the output is byte-identical for any count
}


class CohortConfigError(ValueError):
    """A key of the generator's params is wrong; the message names it."""


def resolve_config(cfg: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise CohortConfigError(f"unknown key(s) {unknown}; allowed: {sorted(DEFAULTS)}")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for k, v in cfg.items():
        if isinstance(DEFAULTS[k], dict):
            if not isinstance(v, dict):
                raise CohortConfigError(f"{k}: expected a mapping like {DEFAULTS[k]}")
            bad = sorted(set(v) - set(DEFAULTS[k]))
            if bad:
                raise CohortConfigError(f"{k}: unknown key(s) {bad}; allowed: {sorted(DEFAULTS[k])}")
            out[k] = {**DEFAULTS[k], **v}
        else:
            out[k] = v
    syn, ids = out["syndromes"], out["identities"]
    if int(syn["subjects_per_class"]) < 3 or int(syn["photos_per_subject"]) < 1:
        raise CohortConfigError("syndromes: need subjects_per_class >= 3 (one per split) and photos_per_subject >= 1")
    if int(ids["people"]) < 4 or int(ids["photos_per_person"]) < 2:
        raise CohortConfigError("identities: need people >= 4 and photos_per_person >= 2 (verification pairs)")
    for section, key in (("syndromes", "test_subjects_per_class"), ("identities", "test_people")):
        v = out[section][key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < 0:
            raise CohortConfigError(f"{section}: {key} must be a non-negative integer, got {v!r}")
        out[section][key] = int(v)
    lo, hi = out["iod_px"]
    if not 8 <= lo <= hi:
        raise CohortConfigError(f"iod_px: expected [min, max] with 8 <= min <= max, got {out['iod_px']}")
    for w, h in out["canvas"]:
        if min(w, h) < 4 * hi:
            raise CohortConfigError(f"canvas {w}x{h} is too small for iod_px up to {hi} (need >= {4 * hi:g} px)")
    return out


def base_path(name: str) -> Path:
    """The installed file of a base portrait (found without importing the package)."""
    info = BASE_PORTRAITS[name]
    spec = importlib.util.find_spec(info["package"])
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"base portrait '{name}' ships with the Python package {info['package']}, which is "
                                f"not installed: pip install {'scikit-image' if info['package'] == 'skimage' else info['package']}")
    path = Path(list(spec.submodule_search_locations)[0]) / info["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: base portrait '{name}' missing from the installed {info['package']}")
    return path


@dataclass
class Base:
    name: str
    image: np.ndarray      # float32 RGB, resampled so that the IOD is `work_iod` px
    eye_mid: np.ndarray    # (2,)
    axes: np.ndarray       # 2×2: columns = face-frame x and y unit vectors (length = IOD) in image pixels
    norm: dict[str, np.ndarray]  # landmarks in face-frame (IOD) coordinates
    head: tuple[float, float, float, float]

    def __post_init__(self):
        self._blur: dict[float, np.ndarray] = {}

    def blurred(self, shrink: float) -> np.ndarray:
        """The image low-passed for sampling at 1/`shrink` of its scale (cached per 0.25 step of `shrink`)."""
        import cv2

        key = round(shrink * 4) / 4
        if key <= 1.2:
            return self.image
        if key not in self._blur:
            self._blur[key] = cv2.GaussianBlur(self.image, (0, 0), 0.45 * key)
        return self._blur[key]


WORK_IOD = 48.0


def load_bases(names: Sequence[str] = tuple(BASE_PORTRAITS)) -> list[Base]:
    """Every base portrait, as is and mirrored, resampled to a common IOD."""
    import cv2

    bases = []
    for name in names:
        info = BASE_PORTRAITS[name]
        img = np.asarray(Image.open(base_path(name)).convert("RGB"))
        lm = {k: np.asarray(v, dtype=np.float64) for k, v in info["landmarks"].items()}
        iod = float(np.linalg.norm(lm["eye_r"] - lm["eye_l"]))
        f = WORK_IOD / iod
        h, w = img.shape[:2]
        img = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
        lm = {k: v * f for k, v in lm.items()}
        for mirrored in (False, True):
            im, L = img, dict(lm)
            if mirrored:
                im = img[:, ::-1]
                W = img.shape[1]
                L = {_mirror_name(k): np.array([W - 1 - v[0], v[1]]) for k, v in lm.items()}
            bases.append(_make_base(f"{name}{'_mirrored' if mirrored else ''}", np.ascontiguousarray(im), L, info["head"]))
    return bases


def _mirror_name(name: str) -> str:
    parts = name.split("_")
    if len(parts) > 1 and parts[1] in ("l", "r"):
        parts[1] = "r" if parts[1] == "l" else "l"
    return "_".join(parts)


def _make_base(name: str, img: np.ndarray, lm: dict[str, np.ndarray], head) -> Base:
    missing = sorted(set(LANDMARKS) - set(lm))
    if missing:
        raise ValueError(f"base {name}: landmarks {missing} missing")
    mid = (lm["eye_l"] + lm["eye_r"]) / 2
    ex = lm["eye_r"] - lm["eye_l"]
    ey = np.array([-ex[1], ex[0]])
    axes = np.stack([ex, ey], 1)
    inv = np.linalg.inv(axes)
    norm = {k: inv @ (v - mid) for k, v in lm.items()}
    return Base(name, img.astype(np.float32), mid, axes, norm, tuple(head))


# ------------------------------------------------------------------------------------------------- TPS
def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 0.5 * r2 * np.log(r2)
    return np.nan_to_num(out)


def tps_fit(src: np.ndarray, dst: np.ndarray, reg: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin-plate spline f with f(src_i) = dst_i (2-D → 2-D); returns (src, weights, affine)."""
    n = len(src)
    d2 = ((src[:, None, :] - src[None, :, :]) ** 2).sum(-1)
    K = _tps_kernel(d2) + reg * np.eye(n)
    P = np.hstack([np.ones((n, 1)), src])
    A = np.zeros((n + 3, n + 3))
    A[:n, :n], A[:n, n:], A[n:, :n] = K, P, P.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = dst
    sol = np.linalg.solve(A, rhs)
    return src, sol[:n], sol[n:]


def tps_eval(model, pts: np.ndarray) -> np.ndarray:
    src, w, a = model
    d2 = (pts[:, None, 0] - src[None, :, 0]) ** 2 + (pts[:, None, 1] - src[None, :, 1]) ** 2
    return _tps_kernel(d2) @ w + np.hstack([np.ones((len(pts), 1)), pts]) @ a


# ring of fixed anchors around the face (IOD units): the warp fades out towards the hair and background
_ANCHORS = np.array([(3.0 * np.cos(t), 0.4 + 3.2 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 16, endpoint=False)])


# ------------------------------------------------------------------------------------- people, photos
def _side(name: str) -> float:
    """−1 for a landmark on the image's left, +1 on its right, 0 on the midline."""
    parts = name.split("_")
    return {"l": -1.0, "r": 1.0}.get(parts[1], 0.0) if len(parts) > 1 else 0.0


def pattern_displacement(pattern: str | None, severity: float, gain: float = 1.0) -> dict[str, np.ndarray]:
    """Landmark displacements (IOD units) of a pattern at a severity (× `gain`); {} for healthy."""
    if pattern in (None, HEALTHY):
        return {}
    if pattern not in PATTERNS:
        raise KeyError(f"unknown pattern '{pattern}'; known: {list(PATTERNS)}")
    spec = PATTERNS[pattern]
    out: dict[str, np.ndarray] = {}
    for k, v in spec.get("out", {}).items():
        out[k] = out.get(k, np.zeros(2)) + np.array([_side(k) * v, 0.0]) * severity * gain
    for k, v in spec.get("dy", {}).items():
        out[k] = out.get(k, np.zeros(2)) + np.array([0.0, v]) * severity * gain
    return out


def random_identity(rng: np.random.Generator, sd: float) -> dict[str, np.ndarray]:
    """A person's face shape: a few global proportions plus small per-landmark asymmetries (IOD units)."""
    g = lambda s: rng.normal(0.0, s * sd)  # noqa: E731
    eye_sp, face_w, face_l, nose_l, nose_w = g(.02), g(.05), g(.06), g(.04), g(.03)
    mouth_w, mouth_y, brow_y, jaw_w, eye_w = g(.04), g(.03), g(.04), g(.04), g(.02)
    d: dict[str, np.ndarray] = {k: np.zeros(2) for k in LANDMARKS}
    for k in LANDMARKS:
        s = _side(k)
        if k.startswith(("eye", "brow")):
            d[k][0] += s * eye_sp
        if k.endswith(("outer",)) and k.startswith("eye"):
            d[k][0] += s * eye_w
        if k.startswith(("cheek", "temple")):
            d[k][0] += s * face_w
        if k.startswith("jaw"):
            d[k][0] += s * (face_w + jaw_w)
        if k in ("chin", "jaw_l", "jaw_r"):
            d[k][1] += face_l
        if k in ("nose_tip", "subnasale", "ala_l", "ala_r"):
            d[k][1] += nose_l
        if k.startswith("ala"):
            d[k][0] += s * nose_w
        if k.startswith("mouth"):
            d[k][0] += s * mouth_w
        if k in ("mouth_l", "mouth_r", "lip_upper", "lip_lower"):
            d[k][1] += mouth_y + 0.5 * face_l
        if k.startswith("brow"):
            d[k][1] += brow_y
        d[k] += rng.normal(0.0, 0.012 * sd, 2)
    return d


@dataclass
class Person:
    pid: str
    base: int
    shape: dict[str, np.ndarray]     # identity displacements
    pattern: str
    severity: float
    tone: tuple[float, float, float]  # CIELAB shift of the face
    hair: tuple[float, float, float] = (0.0, 0.0, 0.0)  # CIELAB shift of the hair (or headwear)


def make_person(pid: str, pattern: str, rng: np.random.Generator, cfg: dict[str, Any], n_bases: int,
                base: int | None = None) -> Person:
    sev = 0.0 if pattern == HEALTHY else float(rng.uniform(*cfg["severity"]))
    st = cfg["skin_tone"]
    tone = (float(rng.uniform(*st["L"])), float(rng.uniform(*st["a"])), float(rng.uniform(*st["b"])))
    shape = random_identity(rng, cfg["identity_sd"])
    ht = cfg["hair_tone"]
    hair = (float(rng.uniform(*ht["L"])), float(rng.uniform(*ht["a"])), float(rng.uniform(*ht["b"])))
    return Person(pid, int(rng.integers(n_bases)) if base is None else base, shape, pattern, sev, tone, hair)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A plausible photo background: a two-colour gradient, soft blobs, sometimes a wall edge."""
    import cv2

    def colour() -> np.ndarray:  # muted: a grey level plus a little chroma, like walls and studio backdrops
        return np.clip(rng.uniform(40, 225) + rng.normal(0, 18, 3), 0, 255)

    c1, c2 = colour(), colour()
    t = rng.uniform(0, 2 * np.pi)
    xx, yy = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    p = ((xx - w / 2) * np.float32(np.cos(t)) + (yy - h / 2) * np.float32(np.sin(t))) / max(w, h) + 0.5
    bg = c1.astype(np.float32)[None, None] + (c2 - c1).astype(np.float32)[None, None] * p[..., None]
    noise = rng.normal(0, 1, (max(2, h // 48), max(2, w // 48), 1)).astype(np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    bg += noise * rng.uniform(3, 15)
    if rng.random() < 0.4:  # a door frame / wall edge
        x0 = int(rng.uniform(0.05, 0.95) * w)
        bg[:, x0:] = bg[:, x0:] * rng.uniform(0.6, 1.3)
    return np.clip(bg, 0, 255).astype(np.float32)


def _head(u: np.ndarray, base: Base) -> np.ndarray:
    cx, cy, ax, ay = base.head
    return ((u[..., 0] - cx) / ax) ** 2 + ((u[..., 1] - cy) / ay) ** 2


def _person_mask(u: np.ndarray, base: Base, chin_y: float) -> np.ndarray:
    """Soft head-and-shoulders mask from face-frame source coordinates u (…×2)."""
    m = np.clip((1.08 - _head(u, base)) / 0.16, 0, 1)
    y0 = chin_y + 0.25
    half = 0.9 + 1.3 * np.clip(u[..., 1] - y0, 0, None)
    torso = np.clip((half - np.abs(u[..., 0])) / 0.25, 0, 1) * np.clip((u[..., 1] - y0) / 0.2 + 1.0, 0, 1)
    return np.maximum(m, torso)


def _face_mask(u: np.ndarray) -> np.ndarray:
    e = (u[..., 0] / 1.25) ** 2 + ((u[..., 1] - 0.75) / 1.45) ** 2
    return np.clip((1.0 - e) / 0.3, 0, 1)


def render_photo(base: Base, person: Person, rng: np.random.Generator, cfg: dict[str, Any],
                 size: tuple[int, int], pose: dict[str, float] | None = None, no_face: bool = False) -> tuple[np.ndarray, dict]:
    """One unaligned RGB photo (uint8 H×W×3) of `person`; returns it with the truth (eye centres, IOD, roll)."""
    import cv2

    W, H = int(size[0]), int(size[1])
    bg = _background(rng, W, H)
    if no_face:
        img = bg
        truth = {"eye_l_x": np.nan, "eye_l_y": np.nan, "eye_r_x": np.nan, "eye_r_y": np.nan, "iod": np.nan, "roll": np.nan}
    else:
        pose = pose or {}
        roll = np.deg2rad(pose.get("roll", rng.uniform(-1, 1) * cfg["roll_deg"]))
        iod = pose.get("iod", rng.uniform(*cfg["iod_px"]))
        yaw, pitch = rng.uniform(-1, 1) * cfg["yaw"], rng.uniform(-1, 1) * cfg["pitch"]
        # target landmark positions in the face frame: base + identity + pattern + expression + yaw/pitch
        pat = pattern_displacement(person.pattern, person.severity, float(cfg["pattern_gain"]))
        expr = rng.normal(0, cfg["expression"])
        src, dst = [], []
        for k in LANDMARKS:
            s = base.norm[k]
            d = person.shape[k] + pat.get(k, np.zeros(2))
            if k.startswith("mouth"):
                d = d + np.array([_side(k) * expr, -abs(expr) * 0.5])
            d = d + DEPTH[k] * np.array([yaw, pitch])
            src.append(s)
            dst.append(s + d)
        src = np.vstack([np.array(src), _ANCHORS])
        dst = np.vstack([np.array(dst), _ANCHORS])
        back = tps_fit(dst, src)  # maps target face-frame coords → source face-frame coords
        # where the eye midpoint lands in the photo, with the whole head inside the frame
        eye_mid_t = (dst[LANDMARKS.index("eye_l")] + dst[LANDMARKS.index("eye_r")]) / 2
        cx = pose.get("cx", rng.uniform(0.38, 0.62) * W)
        cy = pose.get("cy", rng.uniform(0.36, 0.50) * H)
        c, s = np.cos(roll), np.sin(roll)
        R = np.array([[c, -s], [s, c]])
        step = 6
        gy, gx = np.mgrid[0:H + step:step, 0:W + step:step].astype(np.float64)
        q = np.stack([gx.ravel(), gy.ravel()], 1)
        u_t = ((q - [cx, cy]) @ R) / iod + eye_mid_t          # R^T (q − c) / iod, row-vector form
        u_s = tps_eval(back, u_t)
        p = base.eye_mid + u_s @ base.axes.T                 # base image pixels
        shape = gx.shape
        # bilinear interpolation of the coarse maps at every pixel (coarse node i sits at pixel i·step)
        fine_y, fine_x = np.mgrid[0:H, 0:W].astype(np.float32)
        fx, fy = fine_x / step, fine_y / step
        coarse = lambda v: cv2.remap(v.reshape(shape).astype(np.float32), fx, fy, cv2.INTER_LINEAR)  # noqa: E731
        mapx, mapy, ux, uy = coarse(p[:, 0]), coarse(p[:, 1]), coarse(u_s[:, 0]), coarse(u_s[:, 1])
        face = cv2.remap(base.blurred(WORK_IOD / iod), mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        u = np.stack([ux, uy], -1)
        # skin and hair tone: CIELAB shifts inside a soft face ellipse and the head outside it
        fm = _face_mask(u)
        chin_y = base.norm["chin"][1]
        hm = np.clip((1.08 - _head(u, base)) / 0.16, 0, 1) * (1 - fm) * np.clip((0.9 - u[..., 1]) / 0.3, 0, 1)
        shift = (fm[..., None] * np.float32(person.tone) + hm[..., None] * np.float32(person.hair))
        weight = np.maximum(fm, hm)
        ys, xs = np.nonzero(weight > 0)
        if len(ys):
            sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            lab = cv2.cvtColor(np.clip(face[sl], 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)
            lab += shift[sl] * np.float32([255 / 100, 1, 1])
            face[sl] = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB).astype(np.float32)
        # only where the base photo has pixels: beyond its border the background shows (no mirrored copies)
        bh, bw = base.image.shape[:2]
        inside = np.clip(np.minimum.reduce([mapx, bw - 1 - mapx, mapy, bh - 1 - mapy]) / 3.0 + 1.0, 0, 1)
        pm = (_person_mask(u, base, chin_y) * inside)[..., None]
        img = bg + pm * (face - bg)
        el = np.array([cx, cy]) + iod * (R @ (dst[LANDMARKS.index("eye_l")] - eye_mid_t))
        er = np.array([cx, cy]) + iod * (R @ (dst[LANDMARKS.index("eye_r")] - eye_mid_t))
        truth = {"eye_l_x": el[0], "eye_l_y": el[1], "eye_r_x": er[0], "eye_r_y": er[1], "iod": iod,
                 "roll": float(np.rad2deg(roll))}
    # illumination: directional gradient, brightness, gamma, colour cast
    lt = cfg["light"]
    t = rng.uniform(0, 2 * np.pi)
    xx, yy = np.arange(W, dtype=np.float32)[None, :], np.arange(H, dtype=np.float32)[:, None]
    k = np.float32(rng.uniform(-1, 1) * lt["gradient"] / max(W, H))
    grad = 1 + k * ((xx - W / 2) * np.float32(np.cos(t)) + (yy - H / 2) * np.float32(np.sin(t)))
    gain = (rng.uniform(*lt["brightness"]) * (1 + rng.uniform(-lt["cast"], lt["cast"], 3))).astype(np.float32)
    img = np.clip(img.astype(np.float32) * grad[..., None] * gain, 0, 255)
    img = cv2.LUT(img.astype(np.uint8), _gamma_lut(rng.uniform(*lt["gamma"]))).astype(np.float32)
    sigma = rng.uniform(*cfg["blur_sigma"])
    if sigma > 0.2:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(*cfg["noise_sigma"]))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), truth


def _gamma_lut(gamma: float) -> np.ndarray:
    return np.clip(np.round(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


# stream keys (the first key after the seed) of the test-only people: see the module doc
TEST_SUBJECT_STREAM, TEST_PERSON_STREAM = 6, 7
TEST_PREFIX = "t"  # test-only ids: "ts…" (syndrome subjects), "tp…" (identity people)


def _is_test(pid: str) -> bool:
    return pid.startswith(TEST_PREFIX)


def _has_test(cfg: dict[str, Any], dataset: str) -> bool:
    """Whether `dataset` has test-only people (then its manifest gets the `split` column)."""
    key = ("syndromes", "test_subjects_per_class") if dataset == "syndromes" else ("identities", "test_people")
    return int(cfg[key[0]][key[1]]) > 0


# ---------------------------------------------------------------------------------------------- cohort
def generate_face_cohort(out_root: str | Path, cfg: dict[str, Any], figure: str | Path | None = None) -> dict[str, Any]:
    """Write the syndrome and identity datasets (photos, manifests, truth) and an overview figure."""
    from tqdm import tqdm

    cfg = resolve_config(cfg)
    out_root = Path(out_root)
    bases = load_bases()
    seed = int(cfg["seed"])
    if out_root.exists():  # a fresh cohort: no stale photos from other params
        import shutil

        shutil.rmtree(out_root)
    from genediag.data.marker import write_synthetic_marker

    out_root.mkdir(parents=True, exist_ok=True)
    write_synthetic_marker(out_root, "genediag.faces.synthetic")
    summary: dict[str, Any] = {"seed": seed, "bases": [b.name for b in bases], "classes": CLASSES,
                               "licences": {k: v["licence"] for k, v in BASE_PORTRAITS.items()}}

    jobs: list[tuple[str, Person, int, bool]] = []  # (dataset, person, photo index, no_face)
    syn = cfg["syndromes"]
    n_sub, n_ph = int(syn["subjects_per_class"]), int(syn["photos_per_subject"])
    for ci, cls in enumerate(CLASSES):
        for j in range(n_sub):
            rng = _rng(seed, 1, ci, j)
            # bases round-robin within a class, so no class leans on one portrait
            person = make_person(f"s{ci:02d}{j:03d}", cls, rng, cfg, len(bases), base=(j + ci) % len(bases))
            jobs += [("syndromes", person, k, False) for k in range(n_ph)]
    n_blank = int(syn["no_face_photos"])
    if n_blank:
        pick = _rng(seed, 3).choice([i for i, jb in enumerate(jobs)], size=n_blank, replace=False)
        for i in sorted(pick):
            d, p, k, _ = jobs[i]
            jobs.append((d, p, n_ph + 1 + int(i), True))  # an extra photo of that subject, with no face in it
    ids = cfg["identities"]
    for j in range(int(ids["people"])):
        person = make_person(f"p{j:04d}", HEALTHY, _rng(seed, 2, j), cfg, len(bases), base=j % len(bases))
        jobs += [("identities", person, k, False) for k in range(int(ids["photos_per_person"]))]
    # test-only people last, on their own streams: the jobs above (and the no-face picks) are unchanged
    for ci, cls in enumerate(CLASSES):
        for j in range(int(syn["test_subjects_per_class"])):
            person = make_person(f"{TEST_PREFIX}s{ci:02d}{j:03d}", cls, _rng(seed, TEST_SUBJECT_STREAM, ci, j), cfg,
                                 len(bases), base=(j + ci) % len(bases))
            jobs += [("syndromes", person, k, False) for k in range(n_ph)]
    for j in range(int(ids["test_people"])):
        person = make_person(f"{TEST_PREFIX}p{j:04d}", HEALTHY, _rng(seed, TEST_PERSON_STREAM, j), cfg, len(bases),
                             base=j % len(bases))
        jobs += [("identities", person, k, False) for k in range(int(ids["photos_per_person"]))]

    rows: dict[str, list[dict[str, Any]]] = {"syndromes": [], "identities": []}
    workers = max(1, int(cfg["workers"]))
    chunks = [jobs[i : i + 32] for i in range(0, len(jobs), 32)]
    args = [(chunk, cfg, str(out_root)) for chunk in chunks]
    bar = tqdm(total=len(jobs), desc="synthetic faces", unit="photo", mininterval=2.0)
    if workers == 1:
        results = map(_render_jobs, args)
    else:
        import multiprocessing as mp

        pool = mp.get_context("spawn" if mp.get_start_method() != "fork" else "fork").Pool(workers)
        results = pool.imap(_render_jobs, args)
    for out in results:  # imap keeps the job order, so the manifests are identical for any worker count
        for dataset, row in out:
            rows[dataset].append(row)
        bar.update(len(out))
    bar.close()
    if workers > 1:
        pool.close()
        pool.join()
    for dataset, rs in rows.items():
        df = pd.DataFrame(rs)
        split = ["split"] if _has_test(cfg, dataset) else []
        df[["path", "label", "group_id", "photo", "base", "severity", "no_face", *split]].to_csv(
            out_root / dataset / "manifest.csv", index=False)
        df.to_csv(out_root / dataset / "truth.csv", index=False)
        summary[dataset] = {"photos": len(df), "people": int(df["group_id"].nunique()),
                            "labels": int(df["label"].nunique()), "no_face_photos": int(df["no_face"].sum())}
        if split:  # the numbers above count everyone; these the test-only people among them
            test = df[df["split"] == "test"]
            summary[dataset].update({"test_photos": len(test), "test_people": int(test["group_id"].nunique())})
            log.info("synthetic faces: %s: %d test-only photos of %d people (split 'test')", dataset, len(test),
                     test["group_id"].nunique())
    summary["patterns"] = {k: v["feature"] for k, v in PATTERNS.items()}
    (out_root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_root / "LICENSES.md").write_text(licence_text())
    if figure is not None:
        cohort_figure(bases, cfg, out_root, figure)
    log.info("synthetic faces: %d syndrome photos (%d subjects, %d classes), %d identity photos (%d people)",
             summary["syndromes"]["photos"], summary["syndromes"]["people"], len(CLASSES),
             summary["identities"]["photos"], summary["identities"]["people"])
    return summary


_BASES: list[Base] | None = None


def _render_jobs(arg) -> list[tuple[str, dict[str, Any]]]:
    """Render and write a chunk of photos (runs in a worker process); returns their manifest rows."""
    global _BASES
    jobs, cfg, out_root = arg
    if _BASES is None:
        _BASES = load_bases()
    bases, out_root, seed = _BASES, Path(out_root), int(cfg["seed"])
    sizes = [tuple(map(int, s)) for s in cfg["canvas"]]
    out = []
    for dataset, person, k, blank in jobs:
        test = _is_test(person.pid)
        if test:
            key = TEST_SUBJECT_STREAM if dataset == "syndromes" else TEST_PERSON_STREAM
        else:
            key = 1 if dataset == "syndromes" else 2
        rng = _rng(seed, 10 + key, int(person.pid[2:] if test else person.pid[1:]), k)
        size = sizes[int(rng.integers(len(sizes)))]
        img, truth = render_photo(bases[person.base], person, rng, cfg, size, no_face=blank)
        label = person.pattern if dataset == "syndromes" else person.pid
        rel = Path(label) / f"{person.pid}_{k}.jpg"
        path = out_root / dataset / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg(img, int(rng.integers(cfg["jpeg_quality"][0], cfg["jpeg_quality"][1] + 1))))
        out.append((dataset, {"path": rel.as_posix(), "label": label, "group_id": person.pid, "photo": k,
                              "base": bases[person.base].name, "severity": round(person.severity, 4),
                              "no_face": int(blank), "width": size[0], "height": size[1],
                              **{t: (round(float(v), 3) if v == v else "") for t, v in truth.items()},
                              **({"split": "test" if test else ""} if _has_test(cfg, dataset) else {})}))
    return out


def licence_text() -> str:
    lines = ["# Base portraits of the synthetic face cohort", "",
             "The synthetic photos are geometric and photometric transformations of these public-domain portraits,",
             "read from the installed packages that ship them (nothing is downloaded):", ""]
    for name, info in BASE_PORTRAITS.items():
        lines.append(f"- `{name}`: {info['credit']}; file `{info['package']}/{info['file']}`; {info['licence']}.")
    return "\n".join(lines) + "\n"


def atlas(bases: list[Base], cfg: dict[str, Any], people: int = 2, crop: int = 150) -> np.ndarray:
    """The same people (rows) with each class (columns) at severity 1, upright and centred: a pattern atlas."""
    cfg = {**resolve_config(cfg), "blur_sigma": [0.0, 0.0], "noise_sigma": [0.0, 0.0], "yaw": 0.0, "pitch": 0.0,
           "expression": 0.0, "light": {"gradient": 0.0, "brightness": [1.0, 1.0], "gamma": [1.0, 1.0], "cast": 0.0}}
    rows = []
    for r in range(people):
        base_i = (2 * r) % len(bases)
        ident = make_person("atlas", HEALTHY, _rng(int(cfg["seed"]), 4, r), cfg, len(bases), base=base_i)
        tiles = []
        for cls in CLASSES:
            p = Person(ident.pid, base_i, ident.shape, cls, 0.0 if cls == HEALTHY else 1.0, ident.tone, ident.hair)
            img, _ = render_photo(bases[base_i], p, _rng(int(cfg["seed"]), 5, r), cfg, (crop, int(crop * 1.2)),
                                  pose={"roll": 0.0, "iod": crop * 0.3, "cx": crop / 2, "cy": crop * 0.45})
            tiles.append(img)
        rows.append(np.concatenate(tiles, 1))
    return np.concatenate(rows, 0)


def cohort_figure(bases: list[Base], cfg: dict[str, Any], out_root: Path, path: str | Path) -> Path:
    """Pattern atlas (top) and a sheet of raw generated photos (bottom), labelled synthetic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at = atlas(bases, cfg, int(cfg["atlas_people"]))
    man = pd.read_csv(out_root / "syndromes" / "manifest.csv")
    picks = man[man["photo"] == 0].groupby("label", sort=False).head(1)
    picks = picks.set_index("label").loc[[c for c in CLASSES if c in set(picks["label"])]]
    fig = plt.figure(figsize=(15, 6.6))
    ax = fig.add_axes([0.01, 0.36, 0.98, 0.58])
    ax.imshow(at)
    tile = at.shape[1] / len(CLASSES)
    ax.set_xticks([tile * (i + 0.5) for i in range(len(CLASSES))], [c.replace("_", "\n") for c in CLASSES], fontsize=7)
    ax.set_yticks([])
    ax.set_title("Synthetic cohort: the same two people with each pattern at severity 1 (healthy = no pattern)",
                 fontsize=10)
    for i, (label, row) in enumerate(picks.iterrows()):
        a = fig.add_axes([0.01 + i * 0.0895, 0.02, 0.085, 0.28])
        a.imshow(Image.open(out_root / "syndromes" / row["path"]))
        a.set_title(label.replace("_", " ")[:22], fontsize=6)
        a.axis("off")
    fig.text(0.5, 0.31, "raw unaligned photos as written to disk (one subject per class; SYNTHETIC)", ha="center",
             fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
