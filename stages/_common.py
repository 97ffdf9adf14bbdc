"""What every stage script shares: argv parsing (inputs and outputs are on the command line, as dvc.yaml shows
them), reading its own params section, logging, and one clear error line instead of a traceback for user errors
(bad params, missing inputs, unusable data, a full disk)."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# OpenMP threads that spin while they wait collapse when another process holds a core (measured: EfficientNet-Lite0
# training 5.5 s/batch with 2 spinning threads beside one busy process, 0.27 s passive); set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from genediag.config import ConfigError, load_params, section, setup_logging  # noqa: E402


def parser(description: str, *args: tuple[str, str]) -> argparse.ArgumentParser:
    """A parser with positional arguments ``(name, help)`` and ``--params``."""
    p = argparse.ArgumentParser(description=description)
    for name, help_text in args:
        p.add_argument(name, help=help_text)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


def params_of(args: argparse.Namespace, *keys: str):
    """``params[k1][k2]...`` of the stage's params file; a missing key is an error naming the dotted key."""
    return section(load_params(args.params), *keys, source=args.params)


def run(main) -> None:
    """Run a stage's main(); known user errors print one line naming the file or key instead of a traceback."""
    setup_logging()
    try:
        main()
    except (ConfigError, FileNotFoundError, OSError, ValueError) as exc:
        if os.environ.get("GENEDIAG_DEBUG"):
            raise
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        sys.exit(2)
