"""The one way genediag turns a file into pixels: ingest, ``genediag predict`` and face detection all call
:func:`load_image`, so a file gives the same array everywhere.

Reading (:func:`read_file`): regular files only (a FIFO, a device such as ``/dev/zero``, a folder or a socket is
refused before it is opened, so nothing blocks or fills memory), symbolic links are not followed, and files over
``max_bytes`` are refused.

Decoding (:func:`decode_image`), in this order:
1. only PNG, JPEG, TIFF, BMP, GIF and WebP are opened (no PostScript/EPS: Pillow hands those to Ghostscript);
2. size limits before any pixel is decoded: ``max_pixels`` (decompression bombs), ``max_side`` and ``min_side``;
3. a multi-page or animated file is refused unless ``frame`` names the frame to use;
4. the EXIF orientation is applied (a phone photo stored sideways comes out upright);
5. mode: 16- and 32-bit integer and float images are scaled linearly from their own minimum and maximum to
   0..255 (one rule everywhere; NaN or infinite values are refused); palette images are expanded; transparent
   pixels are composited on white; then converted to ``L`` (grey) or ``RGB``;
6. a constant image (every pixel equal: blank, black, a failed capture) is refused.

Each refusal is a :class:`DecodeError` whose ``reason`` is a short sentence for a quarantine row or an error line;
it never reveals anything about files outside what the caller was allowed to read.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class DecodeError(ValueError):
    """A file is not a usable image; ``reason`` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """What a usable image file is (``datasets.<name>.ingest`` sets these; a checkpoint records them)."""

    min_side: int = 8
    max_side: int = 20000
    max_pixels: int = 100_000_000      # decoded pixels (width × height); Pillow warns from 89 M
    max_bytes: int = 256 * 2**20      # file size
    frame: int | None = None           # the frame of a multi-page/animated file to use; None refuses them

    @classmethod
    def from_config(cls, cfg: dict) -> "Limits":
        return cls(**{k: cfg[k] for k in ("min_side", "max_side", "max_pixels", "max_bytes", "frame") if k in cfg})


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def read_file(path: str | os.PathLike, max_bytes: int = Limits.max_bytes) -> bytes:
    """The bytes of a regular file, read without following a symbolic link and without blocking."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except OSError as exc:
        raise DecodeError(f"cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError(f"{_kind(st.st_mode)}, not an image file")
    if st.st_size > max_bytes:
        raise DecodeError(f"file too large ({st.st_size / 2**20:.1f} MB > {max_bytes / 2**20:.0f} MB)")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DecodeError(f"cannot read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())   # the file that was opened, not the one looked at (no swap in between)
        if not stat.S_ISREG(st.st_mode):
            raise DecodeError(f"{_kind(st.st_mode)}, not an image file")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DecodeError(f"file too large (> {max_bytes / 2**20:.0f} MB)")
    return data


def _to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float pixels scaled from their own [min, max] to [0, 255]; non-finite values refused."""
    arr = np.asarray(img, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise DecodeError(f"non-finite pixel values ({int((~np.isfinite(arr)).sum())} NaN/inf pixels)")
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        raise DecodeError(f"constant image (every pixel = {lo:g}): blank or failed capture")
    return Image.fromarray(np.round((arr - lo) / (hi - lo) * 255.0).astype(np.uint8), "L")


def decode_image(data: bytes, mode: str = "L", limits: Limits = Limits()) -> np.ndarray:
    """Decode image bytes into a uint8 array (H×W for ``L``, H×W×3 for ``RGB``), as the module doc describes."""
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if len(data) == 0:
        raise DecodeError("empty file (0 bytes)")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = img.size
            if w * h > limits.max_pixels:
                raise DecodeError(f"too many pixels ({w}x{h} > {limits.max_pixels:,}): a decompression bomb or a "
                                  "scan at too high a resolution")
            if max(w, h) > limits.max_side:
                raise DecodeError(f"too large ({w}x{h} > {limits.max_side} px)")
            if min(w, h) < limits.min_side:
                raise DecodeError(f"too small ({w}x{h} < {limits.min_side} px)")
            frames = int(getattr(img, "n_frames", 1) or 1)
            if frames > 1 and limits.frame is None:
                raise DecodeError(f"multi-page or animated image ({frames} frames); set the dataset's "
                                  "ingest.frame to the frame to use")
            if limits.frame is not None:
                if not 0 <= limits.frame < frames:
                    raise DecodeError(f"frame {limits.frame} requested but the file has {frames}")
                img.seek(limits.frame)
            img.load()
            img = ImageOps.exif_transpose(img)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not an image (unrecognised format; PNG, JPEG, TIFF, BMP, GIF and WebP are read)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DecodeError("too many pixels: a decompression bomb") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise DecodeError(f"cannot decode: {exc}") from None
    if img.mode in HIGH_DEPTH_MODES:
        img = _to_8bit(img)
    elif img.mode in ("RGBA", "LA", "P", "PA", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    arr = np.asarray(img.convert(mode))
    if arr.max() == arr.min():
        raise DecodeError(f"constant image (every pixel = {int(arr.flat[0])}): blank or failed capture")
    return np.ascontiguousarray(arr)


def load_image(path: str | os.PathLike, mode: str = "L", limits: Limits = Limits()) -> tuple[np.ndarray, bytes]:
    """(pixels, file bytes) of an image file: :func:`read_file` then :func:`decode_image`."""
    data = read_file(path, limits.max_bytes)
    return decode_image(data, mode, limits), data


def fit_square(arr: np.ndarray, size: int, resize: str, pad_value: int, scale: float | None = None) -> np.ndarray:
    """Resize to size×size.

    - ``pad``: keep the aspect ratio, scale the longer side to `size`, pad with `pad_value` (centred);
    - ``stretch``: plain resize (aspect ratio not kept);
    - ``preserve``: keep the size relation between images: scale by the fixed factor `scale` (canvas px per source
      px), pad to the canvas, and shrink only an image that would not fit (logged by the caller as clipped). A
      chromosome's length is then visible in the crop.
    """
    import cv2

    h, w = arr.shape[:2]
    if resize == "stretch":
        interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR
        return cv2.resize(arr, (size, size), interpolation=interp)
    if resize == "preserve":
        if not scale or scale <= 0:
            raise ValueError("resize: preserve needs a positive scale")
        f = min(float(scale), size / max(h, w))
    else:
        f = size / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    small = cv2.resize(arr, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else arr
    out = np.full((size, size) + arr.shape[2:], pad_value, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = small
    return out
