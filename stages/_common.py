"""Shared argv/params handling for the thin stage scripts (each script reads only its own section)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# OpenMP threads that spin while they wait collapse when another process holds a core (measured: EfficientNet-Lite0
# training 5.5 s/batch with 2 spinning threads beside one busy process, 0.27 s passive); set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from genediag.config import ConfigError, load_params, section, setup_logging  # noqa: E402

SYNTHETIC_ROOT = Path("data/synthetic")


def parser(description: str, name_help: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    if name_help:
        p.add_argument("name", help=name_help)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


def stage_section(args: argparse.Namespace, *keys: str):
    return section(load_params(args.params), *keys, source=args.params)


def is_synthetic(source: str | os.PathLike) -> bool:
    """True when a dataset source is the embedded synthetic cohort (so results get labelled synthetic)."""
    try:
        Path(source).resolve().relative_to(SYNTHETIC_ROOT.resolve())
        return True
    except ValueError:
        return False


def run(main) -> None:
    """Run a stage's main(); known user errors print one clear line instead of a traceback."""
    setup_logging()
    try:
        main()
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
