"""CPU time of a no-op ``dvc repro`` (every stage up to date): what a reviewer pays to learn nothing changed.

    python benchmarks/noop_repro.py [--repeats 5] [--out benchmarks/noop_repro.json]

Runs ``dvc repro`` (and ``dvc status``) in this repository `--repeats` times after one warm-up, and records for
each run the child process's user + system CPU seconds (``resource.getrusage(RUSAGE_CHILDREN)``) and wall seconds,
plus the machine's load average. It refuses to record when the pipeline is not up to date (a real repro is not a
no-op). Goal (issue 18): ≤ 1 CPU-s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {res.stderr.strip()[-500:]}")
    return cpu, wall, res.stdout + res.stderr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "noop_repro.json")
    args = p.parse_args()
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
    _, _, first = timed([dvc, "repro"])   # warm-up (page cache, dvc's own caches)
    if "Running stage" in first:
        raise SystemExit("dvc repro ran stages: the pipeline was not up to date, so this is not a no-op; "
                         "run it again once `dvc status` is clean")
    out = {"load_average_before": os.getloadavg(), "commands": {}}
    for name, cmd in (("repro", [dvc, "repro"]), ("status", [dvc, "status"])):
        runs = [timed(cmd)[:2] for _ in range(args.repeats)]
        cpu, wall = [r[0] for r in runs], [r[1] for r in runs]
        out["commands"][name] = {"cpu_seconds": [round(c, 3) for c in cpu], "cpu_median": round(statistics.median(cpu), 3),
                                 "wall_seconds": [round(w, 3) for w in wall],
                                 "wall_median": round(statistics.median(wall), 3)}
    out["load_average_after"] = os.getloadavg()
    out["goal_cpu_seconds"] = 1.0
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for name, r in out["commands"].items():
        print(f"dvc {name:6s}: CPU {r['cpu_median']:.2f} s (median of {args.repeats}), wall {r['wall_median']:.2f} s")


if __name__ == "__main__":
    main()
