"""Render a band sequence as a G-banded metaphase chromosome (dark bands on white, uint8, 1 channel).

Model (all vectorised numpy + cv2):

* Along the axis ``t`` (pixels, pter at 0) each segment gets ``bp × px_per_bp`` pixels, where
  ``px_per_bp = canvas × chr1_frac × condensation × (1 + N(0, length_jitter)) / len(chr1)``; gvar
  segments are stretched/shrunk by U(gvar_scale) (heterochromatin polymorphism).
* Two sister chromatids: two parallel tubes at ±sep/2 with half-width ``cw(t)``; each tube has a
  rounded cross profile and half-elliptic caps at both ends; they join at the centromere, where both
  width and separation shrink (primary constriction); a faint groove runs between them.
* Band darkness from the stain (``band_levels``), with per-band jitter, Gaussian-softened edges and a
  fine chromatin texture. ``stalk`` is pale and narrow; for the acrocentrics (a stalk at the p end)
  the segments distal to it are drawn as round satellites with probability ``satellite_prob``,
  otherwise the stalk and satellite are not visible and the chromosome starts at p11.2.
* The straight image is bent (smooth low-frequency lateral displacement of the centreline), rotated
  by U(±rotation_deg), centred on a ``canvas``×``canvas`` square, then contrast/brightness change,
  Gaussian blur and Gaussian noise are applied. The same instance straight, p arm up, tight-cropped,
  is returned as ``upright``.

Pixel sizes (widths, blur, pads) are given for a 128-px canvas and scale with ``canvas``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from genediag.data.cytobands import STAINS, chromosome_length

DEFAULT_RENDER_PARAMS: dict[str, Any] = {
    "canvas": 128,  # output square size (px)
    # --- geometry -------------------------------------------------------------------------
    "chr1_frac": 0.8,  # length of chr1 / canvas at condensation 1.0
    "condensation": 1.0,  # per-cell length factor (the cohort draws it per cell)
    "length_jitter": 0.03,  # per-chromosome relative s.d. of the length (differential condensation)
    "width_frac": 0.075,  # full width (both chromatids) / canvas
    "cell_width": 1.0,  # per-cell width factor (the cohort draws it per cell)
    "width_jitter": 0.06,  # per-chromosome relative s.d. of the width
    "outline_jitter": 0.05,  # relative amplitude of the smooth along-axis wobble of chromatid width
    "chromatid_overlap": 0.3,  # overlap of the two chromatid tubes (0 = touching, 1 = coincident)
    "chromatid_groove": 0.22,  # darkness removed along the groove between the chromatids (0..1)
    "chromatid_splay": 0.25,  # extra separation of the chromatids towards the telomeres
    "centromere_waist": 0.62,  # chromatid width factor at the centromere
    "centromere_join": 0.25,  # chromatid separation factor at the centromere
    "centromere_sigma": 0.9,  # length scale of the constriction, in chromatid half-widths
    "cap_frac": 1.0,  # length of the rounded end cap, in chromatid half-widths
    "gvar_scale": [0.6, 1.6],  # per-gvar-segment length factor range (heteromorphism)
    "stalk_width": 0.28,  # stalk width relative to the chromatid width
    "satellite_prob": 0.6,  # probability that satellites (and stalks) of 13/14/15/21/22 are visible
    "satellite_size": 0.65,  # satellite radius relative to the chromatid half-width
    "bend": 0.07,  # max lateral displacement of the centreline, as a fraction of the length
    "rotation_deg": 20.0,  # rotation drawn from U(-rotation_deg, rotation_deg)
    "margin": 4.0,  # minimum free border of the canvas (px at canvas 128)
    "upright_pad": 3.0,  # border around the tight upright image (px at canvas 128)
    "supersample": 3,  # supersampling factor for anti-aliasing
    # --- bands ----------------------------------------------------------------------------
    "band_levels": {  # darkness 0..1 per stain
        "gneg": 0.16,
        "gpos25": 0.42,
        "gpos50": 0.6,
        "gpos75": 0.77,
        "gpos100": 0.93,
        "acen": 0.45,
        "gvar": 0.85,
        "stalk": 0.18,
    },
    "band_jitter": 0.04,  # s.d. of the per-band darkness jitter
    "band_softness": 0.7,  # Gaussian s.d. of the band edges (px at canvas 128)
    "texture": 0.08,  # amplitude of the fine chromatin texture (relative)
    "profile_power": 0.45,  # cross-section darkness profile (1 - r^2)^p; lower = flatter
    # --- photometry -----------------------------------------------------------------------
    "background": 255,  # background grey level
    "ink": 235.0,  # grey-level drop of a fully dark band at full thickness
    "contrast": [0.8, 1.1],  # factor on the ink, per chromosome
    "brightness": [-15.0, 10.0],  # grey-level offset of the chromosome (not the background)
    "blur_sigma": [0.35, 0.9],  # Gaussian blur s.d. (px at canvas 128)
    "noise_sigma": [1.5, 5.0],  # Gaussian noise s.d. (grey levels)
}

_RANGE_KEYS = ("gvar_scale", "contrast", "brightness", "blur_sigma", "noise_sigma")
_REF_CANVAS = 128.0


@dataclass
class RenderedChromosome:
    """``crop``: posed image on the square canvas; ``upright``: straight, p arm up, tight-cropped.

    ``length_px`` is the visible length pter→qter and ``centromere_px`` the distance from the
    visible p end to the centromere, both in pixels along the axis, as drawn in ``upright``
    (the chromosome occupies rows ``top_px .. top_px + length_px`` there).
    """

    crop: np.ndarray
    upright: np.ndarray
    length_px: float
    centromere_px: float
    top_px: float
    angle_deg: float
    satellites: bool


def merge_render_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """DEFAULT_RENDER_PARAMS updated with ``params``; unknown keys raise ValueError naming them."""
    out = dict(DEFAULT_RENDER_PARAMS)
    out["band_levels"] = dict(DEFAULT_RENDER_PARAMS["band_levels"])
    for key, value in (params or {}).items():
        if key not in DEFAULT_RENDER_PARAMS:
            raise ValueError(f"unknown render param {key!r}; allowed: {sorted(DEFAULT_RENDER_PARAMS)}")
        if key == "band_levels":
            if not isinstance(value, dict):
                raise ValueError("render param 'band_levels' must be a mapping stain -> darkness")
            for stain, level in value.items():
                if stain not in STAINS:
                    raise ValueError(f"unknown stain {stain!r} in render param 'band_levels'; allowed: {list(STAINS)}")
                out["band_levels"][stain] = float(level)
        elif key in _RANGE_KEYS:
            if not (isinstance(value, (list, tuple)) and len(value) == 2):
                raise ValueError(f"render param {key!r} must be a [low, high] pair, got {value!r}")
            out[key] = [float(value[0]), float(value[1])]
        else:
            out[key] = copy.deepcopy(value)
    if int(out["canvas"]) < 16:
        raise ValueError(f"render param 'canvas' must be >= 16, got {out['canvas']!r}")
    return out


def _u(rng: np.random.Generator, lohi) -> float:
    lo, hi = lohi
    return float(lo) if hi <= lo else float(rng.uniform(lo, hi))


@lru_cache(maxsize=1)
def _chr1_bp() -> int:
    return chromosome_length("1")


def _smooth_noise(rng: np.random.Generator, n: int, corr: float) -> np.ndarray:
    """Zero-mean unit-ish 1D noise of length n with correlation length ``corr`` samples."""
    k = max(2, int(math.ceil(n / max(corr, 1.0))) + 2)
    knots = rng.standard_normal(k)
    return np.interp(np.linspace(0, k - 1, n), np.arange(k), knots)


def _gauss1d(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.05:
        return x
    r = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    xp = np.pad(x, r, mode="edge")
    return np.convolve(xp, k, mode="valid")


def render_chromosome(segments, rng: np.random.Generator, params: dict[str, Any] | None = None) -> RenderedChromosome:
    """Render one chromosome instance from its band ``segments`` (pter→qter); see module doc."""
    p = merge_render_params(params)
    C = int(p["canvas"])
    sc = C / _REF_CANVAS  # scale of the pixel-valued knobs
    ss = max(1, int(p["supersample"]))
    segs = list(segments)
    if not segs:
        raise ValueError("render_chromosome: empty segment list")

    # ---------------- per-instance random draws (fixed order => reproducible) ----------------
    length_f = max(0.5, 1.0 + p["length_jitter"] * rng.standard_normal())
    width_f = max(0.5, 1.0 + p["width_jitter"] * rng.standard_normal())
    gvar_f = [(_u(rng, p["gvar_scale"]) if s.stain == "gvar" else 1.0) for s in segs]
    tone_j = rng.standard_normal(len(segs)) * p["band_jitter"]
    sat_draw = rng.uniform()
    angle = _u(rng, (-p["rotation_deg"], p["rotation_deg"]))
    bend_a1, bend_a2, bend_phi = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, 2 * math.pi)
    contrast = _u(rng, p["contrast"])
    brightness = _u(rng, p["brightness"])
    blur = _u(rng, p["blur_sigma"]) * sc
    noise = _u(rng, p["noise_sigma"])
    splay_amt = rng.uniform(0.5, 1.0)
    seed_tex = int(rng.integers(0, 2**31 - 1))

    # ---------------- geometry along the axis ----------------
    px_per_bp = C * p["chr1_frac"] * p["condensation"] * length_f / _chr1_bp()
    W = C * p["width_frac"] * p["cell_width"] * width_f  # full width, both chromatids
    ov = float(np.clip(p["chromatid_overlap"], 0.0, 0.95))
    cw = W / (2.0 * (2.0 - ov))  # chromatid half-width
    sep0 = 2.0 * cw * (1.0 - ov)  # distance between chromatid axes

    stalk_idx = [i for i, s in enumerate(segs) if s.stain == "stalk"]
    # satellites: the segments distal to a stalk at the p end (acrocentric short arms)
    first_stalk = stalk_idx[0] if (stalk_idx and stalk_idx[0] <= 2) else -1
    sat_end = -1  # index of the last stalk segment of that p-end run
    if first_stalk >= 0:
        sat_end = first_stalk
        while sat_end + 1 < len(segs) and segs[sat_end + 1].stain == "stalk":
            sat_end += 1
    satellites = first_stalk >= 0 and sat_draw < p["satellite_prob"]

    def seg_lengths(ppb: float, chw: float, scale: float) -> np.ndarray:
        ln = np.array([(s.end - s.start) * ppb * g for s, g in zip(segs, gvar_f, strict=True)], dtype=np.float64)
        if first_stalk >= 0:
            if satellites:
                want = 2.0 * p["satellite_size"] * chw  # a satellite is at least a round blob
                have = ln[:first_stalk].sum()
                if first_stalk > 0 and have < want:
                    ln[:first_stalk] *= want / max(have, 1e-6)
                ln[first_stalk : sat_end + 1] = np.maximum(ln[first_stalk : sat_end + 1], 1.2 * sc * scale)
            else:
                ln[: sat_end + 1] = 0.0
        return ln

    def fit_scale() -> float:
        """Largest k <= 1 such that the bent, rotated chromosome fits inside the canvas margin."""
        L = float(seg_lengths(px_per_bp, cw, 1.0).sum())
        tt = np.linspace(0.0, L, 64)
        off = _bend_offset(tt, L, p["bend"], bend_a1, bend_a2, bend_phi)
        hw = (W / 2.0) * (1 + p["chromatid_splay"]) + 1.0
        xs = np.concatenate([off - hw, off + hw])
        ys = np.concatenate([tt - L / 2.0, tt - L / 2.0])
        th = math.radians(angle)
        u = xs * math.cos(th) - ys * math.sin(th)
        v = xs * math.sin(th) + ys * math.cos(th)
        avail = C - 2.0 * p["margin"] * sc
        return min(1.0, avail / max(u.max() - u.min(), v.max() - v.min(), 1e-6))

    k = fit_scale()
    if k < 1.0:  # only for extreme draws (e.g. chr1 with a long 1qh at condensation 1.0)
        px_per_bp, W, cw, sep0 = px_per_bp * k, W * k, cw * k, sep0 * k
    lens = seg_lengths(px_per_bp, cw, k)
    L = float(lens.sum())
    bounds = np.concatenate([[0.0], np.cumsum(lens)])

    # visible start (satellites absent => starts after the stalk)
    t0 = bounds[sat_end + 1] if (first_stalk >= 0 and not satellites) else 0.0
    body0 = bounds[sat_end + 1] if first_stalk >= 0 else 0.0  # start of the main body (caps here)
    # centromere: first acen run
    acen = [i for i, s in enumerate(segs) if s.stain == "acen"]
    if acen:
        run = [acen[0]]
        for i in acen[1:]:
            if i == run[-1] + 1:
                run.append(i)
            else:
                break
        c_lo, c_hi = bounds[run[0]], bounds[run[-1] + 1]
        tc = 0.5 * (c_lo + c_hi)
        acen_len = c_hi - c_lo
    else:
        tc, acen_len = None, 0.0

    # ---------------- straight-frame supersampled rasters ----------------
    pad = 2.0 * sc + 2.0
    maxhw = sep0 / 2.0 * (1 + p["chromatid_splay"]) + cw * (1 + 2 * p["outline_jitter"])
    Hs = int(math.ceil(L - t0 + 2 * pad))
    Ws = int(math.ceil(2 * maxhw + 2 * pad))
    n_t, n_x = Hs * ss, Ws * ss
    t = (np.arange(n_t) + 0.5) / ss - pad + t0  # axis coordinate of each supersampled row
    x = (np.arange(n_x) + 0.5) / ss - Ws / 2.0  # across coordinate (0 = axis)

    idx = np.clip(np.searchsorted(bounds, t, side="right") - 1, 0, len(segs) - 1)
    stains = [s.stain for s in segs]
    levels = np.array([p["band_levels"][st] for st in stains]) + tone_j
    levels = np.clip(levels, 0.03, 1.0)
    inside = (t >= 0) & (t <= L)
    tone = np.where(inside, levels[idx], 0.0)
    tone = _gauss1d(tone, p["band_softness"] * sc * ss)

    # chromatid half-width profile
    cwt = np.full(n_t, cw)
    cwt *= 1.0 + p["outline_jitter"] * np.clip(_smooth_noise(rng, n_t, 6.0 * cw * ss), -2.0, 2.0)
    is_stalk = np.isin(idx, [i for i, st in enumerate(stains) if st == "stalk"]) & inside
    # rounded caps of the main body
    cap = max(p["cap_frac"] * cw, 0.5)
    d0 = np.clip((t - body0) / cap, 0.0, 1.0)
    d1 = np.clip((L - t) / cap, 0.0, 1.0)
    capf = np.sqrt(1.0 - (1.0 - d0) ** 2) * np.sqrt(1.0 - (1.0 - d1) ** 2)
    body = inside & (t >= body0)
    cwt = np.where(body, cwt * capf, 0.0)
    sep = np.full(n_t, sep0)
    if tc is not None:
        sig = max(0.5 * acen_len, p["centromere_sigma"] * cw)
        g = np.exp(-0.5 * ((t - tc) / sig) ** 2)
        cwt *= 1.0 - (1.0 - p["centromere_waist"]) * g
        sep *= 1.0 - (1.0 - p["centromere_join"]) * g
        ref = tc
    else:
        ref = (t0 + L) / 2.0
    # sister chromatids splay apart towards the telomeres: 0 at the centromere, 1 at each end
    arm = np.where(t < ref, max(ref - t0, 1.0), max(L - ref, 1.0))
    dist = np.clip(np.abs(t - ref) / arm, 0.0, 1.0)
    sep *= 1.0 + p["chromatid_splay"] * splay_amt * dist**2
    if satellites:
        # stalk: thin and pale; satellites: round blobs (one per chromatid) distal to the stalk
        cwt = np.where(is_stalk, np.maximum(cwt, cw * p["stalk_width"]), cwt)
        s_hi = bounds[first_stalk]
        if s_hi > 0:
            in_sat = inside & (t < s_hi)
            u = np.clip(1.0 - ((t - s_hi / 2.0) / (s_hi / 2.0)) ** 2, 0.0, 1.0)
            cwt = np.where(in_sat, p["satellite_size"] * cw * np.sqrt(u), cwt)

    # cross-sections of the two chromatids
    prof = np.float32(p["profile_power"])
    f32 = np.float32
    inv_cw = (1.0 / np.maximum(cwt, 1e-6)).astype(f32)[:, None]
    half = (sep / 2.0).astype(f32)[:, None]
    xf = x.astype(f32)[None, :]
    r1 = (xf - half) * inv_cw
    r2 = (xf + half) * inv_cw
    rho1 = np.power(np.clip(1.0 - r1 * r1, 0.0, 1.0), prof)
    rho2 = np.power(np.clip(1.0 - r2 * r2, 0.0, 1.0), prof)
    dens = 1.0 - (1.0 - rho1) * (1.0 - rho2)
    groove_w = max(0.35 * cw, 0.6)
    gx = np.exp(-0.5 * (x / groove_w) ** 2).astype(f32)[None, :]
    gt = (p["chromatid_groove"] * np.clip(sep / sep0, 0.0, 1.0) ** 2).astype(f32)[:, None]
    dens *= 1.0 - gx * gt
    tone_eff = np.where(cwt > 1e-6, tone, 0.0).astype(f32)[:, None]
    D = np.clip(dens * tone_eff, 0.0, 1.0)
    if ss > 1:
        D = cv2.resize(D, (Ws, Hs), interpolation=cv2.INTER_AREA)
    # fine chromatin texture (multiplicative, correlated over ~1 px)
    trng = np.random.default_rng(seed_tex)
    if p["texture"] > 0:
        tex = trng.standard_normal((Hs, Ws), dtype=np.float32)
        tex = cv2.GaussianBlur(tex, (0, 0), sigmaX=0.7 * sc, sigmaY=1.0 * sc)
        tex *= 1.0 / max(float(tex.std()), 1e-6)
        D = np.clip(D * (1.0 + p["texture"] * tex), 0.0, 1.0)

    # ---------------- pose: bend + rotate + centre on the canvas ----------------
    Lv = L - t0  # visible length
    th = math.radians(angle)
    cos, sin = math.cos(th), math.sin(th)
    tt = np.linspace(t0, L, 64)
    off = _bend_offset(tt, L, p["bend"], bend_a1, bend_a2, bend_phi)
    hw = maxhw
    xs = np.concatenate([off - hw, off + hw])
    ys = np.concatenate([tt - (t0 + L) / 2.0] * 2)
    uu = xs * cos - ys * sin
    vv = xs * sin + ys * cos
    shift_u = C / 2.0 - (uu.min() + uu.max()) / 2.0
    shift_v = C / 2.0 - (vv.min() + vv.max()) / 2.0
    # inverse-map only the canvas pixels inside the chromosome's bounding box (+ a border)
    bpad = 2.0 + 2.0 * sc
    u0 = int(max(0, math.floor(uu.min() + shift_u - bpad)))
    u1 = int(min(C, math.ceil(uu.max() + shift_u + bpad)))
    v0 = int(max(0, math.floor(vv.min() + shift_v - bpad)))
    v1 = int(min(C, math.ceil(vv.max() + shift_v + bpad)))
    a = (np.arange(u0, u1, dtype=np.float32) + 0.5 - shift_u)[None, :]
    b = (np.arange(v0, v1, dtype=np.float32) + 0.5 - shift_v)[:, None]
    xb = a * cos + b * sin  # inverse rotation
    yb = -a * sin + b * cos
    tq = yb + (t0 + L) / 2.0
    xq = xb - _bend_offset(tq, L, p["bend"], bend_a1, bend_a2, bend_phi)
    map_x = (xq + (Ws / 2.0 - 0.5)).astype(np.float32)
    map_y = (tq + (pad - t0 - 0.5)).astype(np.float32)
    Dp = np.zeros((C, C), np.float32)
    Dp[v0:v1, u0:u1] = cv2.remap(
        D, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0
    )

    crop = _photometry(Dp, p, contrast, brightness, blur, noise, trng)

    # ---------------- upright tight image ----------------
    up_pad = p["upright_pad"] * sc
    cols = np.where(D.max(axis=0) > 0.01)[0]
    c_lo = max(0, int(cols.min() - up_pad)) if cols.size else 0
    c_hi = min(Ws, int(cols.max() + 1 + up_pad)) if cols.size else Ws
    r_top = pad - up_pad  # rows of the visible chromosome start at pad
    r_lo = max(0, int(math.floor(r_top)))
    r_hi = min(Hs, int(math.ceil(pad + Lv + up_pad)))
    Du = D[r_lo:r_hi, c_lo:c_hi]
    upright = _photometry(Du, p, contrast, brightness, blur, noise, trng)
    top_px = pad - r_lo
    cen_px = (tc - t0) if tc is not None else float("nan")
    return RenderedChromosome(
        crop=crop,
        upright=upright,
        length_px=float(Lv),
        centromere_px=float(cen_px),
        top_px=float(top_px),
        angle_deg=float(angle),
        satellites=bool(satellites),
    )


def _bend_offset(t: np.ndarray, L: float, bend: float, a1: float, a2: float, phi: float) -> np.ndarray:
    """Smooth lateral displacement of the centreline: an arc plus one low-frequency wave."""
    if bend <= 0 or L <= 0:
        return np.zeros_like(np.asarray(t))
    u = np.clip(np.asarray(t) * (1.0 / L), 0.0, 1.0)
    arc = 4.0 * u * (1.0 - u) - 2.0 / 3.0
    wave = 0.5 * np.sin(2 * math.pi * u + phi)
    return (L * bend) * (a1 * arc + a2 * wave)


def _photometry(
    D: np.ndarray, p: dict, contrast: float, brightness: float, blur: float, noise: float, rng
) -> np.ndarray:
    D = D.astype(np.float32)
    # brightness shifts the chromosome, not the (white) background
    img = float(p["background"]) - float(p["ink"]) * contrast * D + brightness * np.clip(D * 8.0, 0.0, 1.0)
    if blur > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=blur, sigmaY=blur)
    if noise > 0:
        img = img + rng.standard_normal(img.shape).astype(np.float32) * noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
