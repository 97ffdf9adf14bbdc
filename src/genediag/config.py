"""Reading `params.yaml` and the small conventions every stage shares (logging, seeding, devices)."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import yaml

log = logging.getLogger("genediag")


class ConfigError(ValueError):
    """A params.yaml section is missing or malformed; the message names the file and the key."""


def load_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run from the repository root or pass --params PATH")
    with path.open() as fh:
        params = yaml.safe_load(fh) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(params).__name__}")
    return params


def section(params: dict[str, Any], *keys: str, source: str = "params.yaml") -> Any:
    """Return params[k1][k2]...; a missing key is an error naming the dotted key."""
    node: Any = params
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            dotted = ".".join(keys[: i + 1])
            have = ", ".join(sorted(node)) if isinstance(node, dict) else type(node).__name__
            raise ConfigError(f"{source}: missing key '{dotted}' (found: {have})")
        node = node[key]
    return node


def check_keys(cfg: dict[str, Any], allowed: set[str], where: str) -> None:
    """Reject unknown keys so a typo in params.yaml is an error, not a silently ignored setting."""
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def setup_logging(level: str | int = "INFO") -> None:
    logging.basicConfig(
        level=os.environ.get("GENEDIAG_LOG", level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; on CPU this makes a stage bit-for-bit repeatable."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def select_device(preference: str = "auto"):
    """'auto' picks CUDA, then Apple MPS, then CPU; an explicit device that is absent is an error."""
    import torch

    if preference == "auto":
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{preference}' requested but CUDA is not available; set device: auto or cpu")
    return device


def write_yaml(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        yaml.safe_dump(obj, fh, sort_keys=False)
