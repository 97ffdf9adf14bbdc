"""Record a run made once with a preset (not part of the default pipeline) so the report can show it:
metrics/faces/presets/<run>.json = its test metrics, its nearest-neighbour matching, its seed spread, paired
comparisons on the same test photos with the default runs named, and the measured wall time of its stage.

    python -m genediag.presets apply presets/faces_facenet_variants.yaml
    /usr/bin/time -f %e -o /tmp/<run>.seconds dvc repro -s faces_head@<run>
    python scripts/record_preset_run.py <run> presets/faces_facenet_variants.yaml --seconds /tmp/<run>.seconds \
        --paired-with faces-facenet-softmax faces-softmax
    git checkout params.yaml   # back to the default

Everything recorded is read from the files the stage wrote (metrics/faces/<run>*.json, metrics/faces/matching/,
evaluation/faces/<run>/predictions.csv); the paired bootstrap is the report's (genediag.reports.paired)."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("preset")
    p.add_argument("--seconds", nargs="*", default=[],
                   help="file(s) holding the measured wall time of the run's stage(s) (/usr/bin/time -f %%e), summed")
    p.add_argument("--paired-with", nargs="*", default=[], help="default runs to compare with (B = this run)")
    p.add_argument("--metrics", default="metrics/faces")
    p.add_argument("--evaluation", default="evaluation/faces")
    p.add_argument("--bootstrap", type=int, default=1000)
    args = p.parse_args()
    from genediag.reports.paired import compare_pair, load_predictions

    mdir = Path(args.metrics)
    read = lambda name: json.loads((mdir / name).read_text()) if (mdir / name).is_file() else None  # noqa: E731
    metrics = read(f"{args.run}.json")
    if metrics is None:
        raise SystemExit(f"error: {mdir}/{args.run}.json: run the preset's stage first")
    mine = load_predictions(args.evaluation, args.run)
    paired = {}
    for other in args.paired_with:
        theirs = load_predictions(args.evaluation, other)
        res = compare_pair(theirs, mine, ["accuracy"], args.bootstrap, 0) if theirs is not None else None
        paired[other] = res["accuracy"] if res else None
    record = {"run": args.run, "preset": args.preset, "recorded": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, shared with other jobs",
              "stage_wall_seconds": round(sum(float(Path(f).read_text().split()[-1]) for f in args.seconds), 2)
              if args.seconds else None,
              "metrics": metrics, "seeds": read(f"{args.run}.seeds.json"),
              "matching": read(f"matching/{args.run}.json"), "paired_accuracy": paired}
    out = mdir / "presets" / f"{args.run}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{out}: top-1 {metrics['top1']} {metrics['ci95'].get('accuracy')}, "
          f"{len([v for v in paired.values() if v])} paired comparison(s)")


if __name__ == "__main__":
    main()
