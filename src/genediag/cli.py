"""The ``genediag`` command (also ``python -m genediag``).

    genediag predict --run chromosomes24-dcnn data/synthetic/chromosomes/P0011/P0011-C1_01_1.png
    genediag predict --model models/<run>/model.pt --json IMAGE [IMAGE ...]
    genediag ingest --source my_crops/ --out /tmp/check [--dataset chromosomes | --kind chromosome_crops]
    genediag params check [params.yaml]
    genediag compare HEAD~1 HEAD [--html compare.html]     # what changed, and whether beyond noise

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
    p.add_argument("--top-k", type=int, default=3, help="classes to list per image (default: 3)")
    p.add_argument("--mc-passes", type=int, default=30,
                   help="MC-dropout forward passes, 0 to skip (default: 30; only models with dropout)")
    p.add_argument("--seed", type=int, default=0, help="seed of the MC-dropout masks (default: 0)")
    p.add_argument("--refer-below", type=_probability, default=0.8,
                   help="flag for review when the top probability or the MC-dropout agreement is below this "
                        "(default: 0.8)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--runtime", default="auto", choices=["auto", "onnx", "torch"],
                   help="auto (default): ONNX Runtime on the model.onnx beside the checkpoint when on the CPU")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--debug", action="store_true", help="show tracebacks and log messages")
    p.set_defaults(func=cmd_predict)

    q = sub.add_parser("ingest", help="check a dataset: decode, validate and cache it as the ingest stage would",
                       description="Run the ingest@<dataset> stage's function on a CSV manifest or a folder-per-class "
                                   "tree: writes OUT/manifest.csv, OUT/quarantine.csv (path, label, reason), "
                                   "OUT/images.npy and OUT/summary.json and prints the accounting.")
    q.add_argument("--source", required=True, help="a CSV manifest (path,label[,group_id[,cell_id]]) or a folder")
    q.add_argument("--out", required=True, type=Path, help="output folder")
    q.add_argument("--dataset", help="take the other settings from params.yaml datasets.<DATASET>")
    q.add_argument("--kind", default=None, help="chromosome_crops (default), karyograms, face_syndromes, "
                                                "face_identities (ignored with --dataset)")
    q.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file for --dataset")
    q.add_argument("--review", type=Path, default=Path("review"), help="folder of reviewer corrections")
    q.add_argument("--debug", action="store_true", help="show tracebacks and log messages")
    q.set_defaults(func=cmd_ingest)

    r = sub.add_parser("params", help="validate params.yaml against the schema")
    r.add_argument("action", choices=["check"])
    r.add_argument("path", nargs="?", type=Path, default=Path("params.yaml"))
    r.add_argument("--debug", action="store_true", help="show tracebacks")
    r.set_defaults(func=cmd_params)

    c = sub.add_parser("compare", help="params, metrics (with CIs and a beyond-noise verdict) and plots changed "
                                       "between two revisions",
                       description="Compare two git revisions of this repository: the params that changed, every "
                                   "headline metric that changed with both 95 %% CIs and a 'beyond noise' column (a "
                                   "paired bootstrap of both revisions' predictions, read through DVC, else "
                                   "non-overlapping CIs), and the plots that changed. Markdown on stdout.")
    c.add_argument("rev_a", metavar="REV_A", help="the base revision (e.g. main, HEAD~1)")
    c.add_argument("rev_b", metavar="REV_B", nargs="?", default=None,
                   help="the revision to compare (default: the working tree)")
    c.add_argument("--html", type=Path, help="also write an HTML page here")
    c.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: .)")
    c.add_argument("--bootstrap", type=int, default=None,
                   help="patient resamples of the paired bootstrap (default: params.yaml evidence.bootstrap)")
    c.add_argument("--debug", action="store_true", help="show tracebacks and log messages")
    c.set_defaults(func=cmd_compare)
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
    predictor = load_predictor(checkpoint, device=device, runtime=args.runtime)
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


def cmd_ingest(args: argparse.Namespace) -> int:
    from genediag.config import load_params, section
    from genediag.pipeline import ingest_dataset

    if args.dataset:
        cfg = dict(section(load_params(args.params), "datasets", args.dataset, source=str(args.params)))
        name = args.dataset
    else:
        cfg = {"kind": args.kind or "chromosome_crops"}
        name = args.out.name or "dataset"
    cfg["source"] = args.source
    summary = ingest_dataset(name, cfg, args.out, args.review, progress=not args.debug)
    print(f"{args.source}: {summary['input']} inputs = {summary['accepted']} accepted + {summary['quarantined']} "
          f"quarantined; {len(summary['classes'])} classes, {summary['groups']} groups "
          f"(grouped by {summary.get('group_by')}); cache {summary['image_shape']} {summary['mode']}")
    for reason, n in summary["quarantine_reasons"].items():
        print(f"  quarantined: {n:>6}  {reason}")
    if summary.get("warning"):
        print(f"warning: {summary['warning']}")
    print(f"written: {args.out}/manifest.csv, quarantine.csv, images.npy, summary.json")
    return EXIT_OK


def cmd_params(args: argparse.Namespace) -> int:
    from genediag.config import load_params
    from genediag.params_check import check_params

    counts = check_params(load_params(args.path), str(args.path))
    print(f"{args.path}: valid ({', '.join(f'{n} {k}' for k, n in counts.items())})")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from genediag import io as gio
    from genediag.reports.compare import compare, to_html, to_markdown

    result = compare(args.rev_a, args.rev_b, args.repo, n_resamples=args.bootstrap)
    print(to_markdown(result))
    if args.html:
        gio.write_text(args.html, to_html(result))
    return EXIT_OK


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
