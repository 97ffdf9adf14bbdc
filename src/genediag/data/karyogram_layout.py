"""Compose a karyogram (the standard arrangement of a cell's chromosomes) from crops and labels.

Works on any grayscale chromosome crops on a light background (synthetic upright images, posed crops,
real segmented chromosomes) with true or predicted labels, so it can be reused by evaluation code.

Layout (ISCN-style): row 1: 1–5; row 2: 6–12 and X; row 3: 13–18; row 4: 19–22 and Y. The members
of one class stand side by side, bottom-aligned on a short line with the class name under it;
abnormal chromosomes go to their origin's slot, after the normal homologues (der(22) beside 22,
i(X)(q10) beside X); extra copies (trisomy) share the slot. All crops are scaled by one common factor
so that the tallest fits its row and every slot's members fit the slot's width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

from genediag.data.tasks import origin_of

KARYOGRAM_ROWS: list[list[str]] = [
    ["1", "2", "3", "4", "5"],
    ["6", "7", "8", "9", "10", "11", "12", "X"],
    ["13", "14", "15", "16", "17", "18"],
    ["19", "20", "21", "22", "Y"],
]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def tight_crop(img: np.ndarray, threshold: int = 225, pad: int = 1, clean: int = 246) -> np.ndarray:
    """Crop a grayscale chromosome image to its dark content (+pad); white background assumed.

    Background noise is whitened: pixels whose 3×3 mean is >= ``clean`` become 255.
    """
    g = to_gray(img)
    sm = cv2.GaussianBlur(g, (3, 3), 0) if min(g.shape) >= 3 else g
    ys, xs = np.nonzero(sm < threshold)
    if ys.size == 0:
        return g
    y0, y1 = max(0, ys.min() - pad), min(g.shape[0], ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(g.shape[1], xs.max() + 1 + pad)
    out = g[y0:y1, x0:x1].copy()
    out[sm[y0:y1, x0:x1] >= clean] = 255
    return out


def to_gray(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 3:
        if a.shape[2] == 4:
            a = cv2.cvtColor(a, cv2.COLOR_BGRA2GRAY)
        elif a.shape[2] == 3:
            a = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)
        else:
            a = a[..., 0]
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return a


def orient_vertical(img: np.ndarray, threshold: int = 225) -> np.ndarray:
    """Rotate a crop so that the long axis of its dark content is vertical (moments); p arm unknown."""
    g = to_gray(img)
    m = cv2.moments((g < threshold).astype(np.uint8), binaryImage=True)
    if m["m00"] < 3:
        return g
    mu20, mu02, mu11 = m["mu20"] / m["m00"], m["mu02"] / m["m00"], m["mu11"] / m["m00"]
    theta = 0.5 * math.degrees(math.atan2(2 * mu11, mu20 - mu02))  # major axis angle from x
    rot = theta - 90.0  # rotate so the major axis points along y
    if abs(rot) < 2.0 or abs(abs(rot) - 180.0) < 2.0:
        return g
    h, w = g.shape
    diag = int(math.ceil(math.hypot(h, w))) + 2
    big = np.full((diag, diag), 255, np.uint8)
    y0, x0 = (diag - h) // 2, (diag - w) // 2
    big[y0 : y0 + h, x0 : x0 + w] = g
    M = cv2.getRotationMatrix2D((diag / 2.0, diag / 2.0), rot, 1.0)
    return cv2.warpAffine(big, M, (diag, diag), flags=cv2.INTER_LINEAR, borderValue=255)


class SlotBox(NamedTuple):
    """Where :func:`compose_karyogram` drew one slot, in karyogram pixels: ``count`` chromosomes (normal members
    and abnormal ones of this origin) side by side in x0..x1, standing on the slot's line y1, the tallest reaching
    up to y0. An empty slot has ``count`` 0 and x0 == x1, y0 == y1 - 3."""

    slot: str
    count: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


def compose_karyogram(
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    size: tuple[int, int] = (640, 480),
    title: str | None = None,
    orient: bool = False,
    threshold: int = 225,
    return_boxes: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[SlotBox]]:
    """A uint8 H×W karyogram of ``images`` (any grayscale crops on white) placed by ``labels``.

    ``labels`` are "1".."22","X","Y" or abnormal type ids (placed at their origin's slot).
    ``size`` is (W, H). ``title`` (e.g. the ISCN string) is printed at the top. ``orient=True``
    first rotates each crop so that its long axis is vertical (for posed crops). ``return_boxes=True`` also
    returns one :class:`SlotBox` per slot (all 24, empty ones too): where its chromosomes were drawn.
    """
    if len(images) != len(labels):
        raise ValueError(f"compose_karyogram: {len(images)} images but {len(labels)} labels")
    W, H = int(size[0]), int(size[1])
    if W < 100 or H < 100:
        raise ValueError(f"karyogram size too small: {(W, H)}")

    # group by slot: normal members first, then abnormal ones, each in input order
    slots: dict[str, list[np.ndarray]] = {c: [] for row in KARYOGRAM_ROWS for c in row}
    order: dict[str, list[tuple[int, int, np.ndarray]]] = {c: [] for c in slots}
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        lab = str(lab)
        org = origin_of(lab)  # raises on unknown labels
        g = orient_vertical(img, threshold) if orient else to_gray(img)
        order[org].append((0 if lab == org else 1, i, tight_crop(g, threshold)))
    for c in slots:
        slots[c] = [im for _, _, im in sorted(order[c], key=lambda e: (e[0], e[1]))]

    # geometry
    fs_title = max(0.4, min(0.8, W / 1000.0))
    fs_label = max(0.3, min(0.6, W / 1500.0))
    title_h = int(round(30 * fs_title / 0.64)) if title else 6
    (_, lab_h), lab_base = cv2.getTextSize("22", _FONT, fs_label, 1)
    lab_space = lab_h + lab_base + 6  # below the line
    gap = max(2, W // 200)
    margin_x = max(4, W // 80)
    nrows = len(KARYOGRAM_ROWS)
    usable = H - title_h - 4 - nrows * (lab_space + 6)  # total height for chromosomes

    # rows get heights in proportion to their tallest member (at least 45% of the tallest row),
    # then one common scale s makes every row's tallest member fit and every slot fit its width
    tallest = [max((im.shape[0] for c in row for im in slots[c]), default=0) for row in KARYOGRAM_ROWS]
    ref = max(tallest) if max(tallest) > 0 else 1
    weights = [max(t / ref, 0.45) for t in tallest]
    avail = [usable * w_ / sum(weights) for w_ in weights]
    s = math.inf
    for r, row in enumerate(KARYOGRAM_ROWS):
        slot_w = (W - 2 * margin_x) / len(row)
        for c in row:
            ims = slots[c]
            if not ims:
                continue
            s = min(s, avail[r] / max(im.shape[0] for im in ims))
            total_w = sum(im.shape[1] for im in ims) + gap * (len(ims) - 1)
            s = min(s, (slot_w - 2 * gap) / max(total_w, 1))
    if not math.isfinite(s):
        s = 1.0
    s = min(s, 4.0)
    row_top = [title_h + 4.0]
    for r in range(nrows):
        row_top.append(row_top[-1] + avail[r] + lab_space + 6)

    out = np.full((H, W), 255, np.uint8)
    if title:
        (tw, th), _ = cv2.getTextSize(title, _FONT, fs_title, 1)
        cv2.putText(out, title, (max(2, (W - tw) // 2), 4 + th), _FONT, fs_title, 0, 1, cv2.LINE_AA)

    line_half = None
    boxes: list[SlotBox] = []
    for r, row in enumerate(KARYOGRAM_ROWS):
        slot_w = (W - 2 * margin_x) / len(row)
        y_line = int(round(row_top[r + 1] - lab_space))
        for j, c in enumerate(row):
            cx = margin_x + (j + 0.5) * slot_w
            scaled = []
            for im in slots[c]:
                h, w = im.shape
                nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
                interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
                scaled.append(cv2.resize(im, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else im)
            total_w = sum(im.shape[1] for im in scaled) + gap * max(0, len(scaled) - 1)
            x = int(round(cx - total_w / 2))
            top = y_line - 3 - max((im.shape[0] for im in scaled), default=0)
            boxes.append(SlotBox(c, len(scaled), x, top, x + total_w, y_line))
            for im in scaled:
                h, w = im.shape
                y0 = y_line - 3 - h
                ys0, xs0 = max(0, y0), max(0, x)
                ys1, xs1 = min(H, y0 + h), min(W, x + w)
                if ys1 > ys0 and xs1 > xs0:
                    sub = im[ys0 - y0 : ys1 - y0, xs0 - x : xs1 - x]
                    out[ys0:ys1, xs0:xs1] = np.minimum(out[ys0:ys1, xs0:xs1], sub)
                x += w + gap
            line_half = max(0.32 * slot_w, total_w / 2 + 2) if scaled else 0.32 * slot_w
            line_half = min(line_half, slot_w / 2 - 2)
            cv2.line(out, (int(cx - line_half), y_line), (int(cx + line_half), y_line), 0, 1, cv2.LINE_AA)
            (tw, _), _ = cv2.getTextSize(c, _FONT, fs_label, 1)
            cv2.putText(out, c, (int(cx - tw / 2), y_line + 3 + lab_h), _FONT, fs_label, 0, 1, cv2.LINE_AA)
    return (out, boxes) if return_boxes else out
