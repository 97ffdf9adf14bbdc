"""Writing outputs safely: every file a stage writes goes to a temporary file beside it and is renamed into place,
so a killed stage or a full disk never leaves a truncated ``model.pt``, cache or CSV behind; a failed write is one
:class:`OutputError` line naming the path and the cause (no traceback, no bus error)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

HINTS = {
    errno.ENOSPC: "the disk is full: free space (e.g. `dvc gc`, remove old experiments) and run again",
    errno.EDQUOT: "the disk quota is exceeded: free space and run again",
    errno.EROFS: "the file system is read-only: run from a writable checkout",
    errno.EACCES: "permission denied: make the folder writable",
    errno.EPERM: "permission denied: make the folder writable",
}


class OutputError(OSError):
    """An output could not be written; the message names the file and what to do (``errno`` is the cause's)."""

    def __str__(self) -> str:
        return self.args[0]


def output_error(path: str | os.PathLike, exc: OSError) -> OutputError:
    hint = HINTS.get(exc.errno or -1, exc.strerror or str(exc))
    err = OutputError(f"{path}: cannot write ({exc.strerror or exc}); {hint}")
    err.errno = exc.errno
    return err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder; rename it to `path` when the block succeeds, delete it otherwise.

    `suffix` keeps an extension on the temporary name (``np.save`` appends ``.npy`` to names without one)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise output_error(path, exc) from None
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes the file 0600; give it the mode a plain open() would (0666 − umask)
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OutputError):
            raise
        raise output_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def write_with(path: str | os.PathLike, writer: Callable[[Path], Any], suffix: str = "") -> Path:
    """Call ``writer(tmp_path)`` (e.g. ``lambda p: df.to_csv(p, index=False)``) and move the result into place."""
    with atomic_path(path, suffix) as tmp:
        writer(tmp)
    return Path(path)


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` through memory: the zip records are named ``archive/…`` whatever the (temporary) file is
    called, so the same object gives the same bytes every time (DVC hashes them)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_bytes(path, buf.getvalue())


def save_npy(path: str | os.PathLike, array) -> Path:
    import numpy as np

    return write_with(path, lambda tmp: np.save(tmp, array), suffix=".npy")


def reserve(path: str | os.PathLike, nbytes: int) -> None:
    """Allocate `nbytes` for `path` up front (``posix_fallocate``), so a memory-mapped write can never hit a full
    disk halfway (which kills the process with SIGBUS instead of raising)."""
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            if hasattr(os, "posix_fallocate") and nbytes > 0:
                os.posix_fallocate(fd, 0, nbytes)
        finally:
            os.close(fd)
    except OSError as exc:
        raise output_error(path, exc) from None
