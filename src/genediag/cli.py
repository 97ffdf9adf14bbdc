"""The ``genediag`` command (also ``python -m genediag``).

    genediag predict --run chromosomes24-dcnn data/synthetic/chromosomes/P000/c0_chr21a.png
    genediag predict --model models/<run>/model.pt --json IMAGE [IMAGE ...]

User errors (a missing model, an unreadable image, params that do not fit the model) print one line starting
with ``error:`` on stderr and exit non-zero; ``--debug`` shows the traceback instead.
Exit codes: 0 every image predicted; 1 some image(s) could not be used; 2 the model or the options are unusable.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_BAD_INPUT, EXIT_ERROR = 0, 1, 2


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genediag", description="genediag command line tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("predict", help="classify images with a trained model",
                       description="Classify image files with a trained genediag model: ranked classes with "
                                   "probabilities, MC-dropout confidence and a refer-for-review flag.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, help="a checkpoint, e.g. models/chromosomes24-dcnn/model.pt")
    which.add_argument("--run", help="a run name of params.yaml train:, i.e. --model MODELS_DIR/RUN/model.pt")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image file(s) to classify")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="where --run looks (default: models)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"),
                   help="params.yaml to read ingest settings from when the checkpoint lacks them "
                        "(default: params.yaml)")
    p.add_argument("--top-k", type=int, default=3, help="classes to list per image (default: 3)")
    p.add_argument("--mc-passes", type=int, default=30,
                   help="MC-dropout forward passes, 0 to skip (default: 30; only models with dropout)")
    p.add_argument("--seed", type=int, default=0, help="seed of the MC-dropout masks (default: 0)")
    p.add_argument("--refer-below", type=_probability, default=0.8,
                   help="flag for review when the top probability or the MC-dropout agreement is below this "
                        "(default: 0.8)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--debug", action="store_true", help="show tracebacks and log messages")
    p.set_defaults(func=cmd_predict)
    return parser


def cmd_predict(args: argparse.Namespace) -> int:
    from genediag.config import select_device
    from genediag.predict import format_header, format_result, load_predictor

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    if args.mc_passes < 0:
        raise ValueError(f"--mc-passes must be 0 or more, got {args.mc_passes}")
    checkpoint = args.model if args.model is not None else args.models_dir / args.run / "model.pt"
    device = str(select_device(args.device))
    predictor = load_predictor(checkpoint, params_path=args.params, device=device)
    results = predictor.predict(args.images, top_k=args.top_k, mc_passes=args.mc_passes, seed=args.seed,
                                refer_below=args.refer_below)
    failed = [r for r in results if r.get("error")]
    info = predictor.describe()
    if args.json:
        print(json.dumps({"model": info, "refer_below": args.refer_below, "results": results}, indent=2))
    elif len(failed) < len(results):
        print(format_header(info))
        for res in results:
            if not res.get("error"):
                print(format_result(res))
    for res in failed:
        print(f"error: {res['error']}", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
        return args.func(args)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    warnings.simplefilter("ignore")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:  # FileNotFoundError, ConfigError, ModelSpecError, bad option values
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001  a bug, still no traceback for the user
        print(f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(rerun with --debug for the traceback and report it)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
