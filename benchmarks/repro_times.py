"""Per-stage wall time of a ``dvc repro``: runs the command, passes its output through unchanged, and times every
stage from DVC's own log lines → ``benchmarks/repro.json`` and a table at the end.

    python benchmarks/repro_times.py [--out benchmarks/repro.json] [-- dvc repro [args ...]]

(``make repro`` runs it around ``dvc repro``.) It only watches: the command, its arguments and what DVC computes
are unchanged; the exit code is the command's. A stage starts at DVC's "Running stage 'x':" (ran), "Stage 'x' is
cached - skipping run, checking out outputs" (restored from the run-cache) or "Stage 'x' didn't change, skipping"
(skipped), and ends at the next of these lines or at the end of the run; "Updating lock file" ends a stage that ran
(what follows it until the next stage's line is DVC's own work, counted as ``other_seconds``); a skipped stage
spans from the previous of these lines to its own (DVC checks, then says it is skipping) — for the first stage
that includes DVC's start-up. Per stage: wall seconds,
CPU seconds (on Linux: the CPU time of the processes DVC waited for, plus DVC's own, read from /proc/<pid>/stat at
each boundary, so CPU ÷ wall ≈ cores kept busy) and the 1-minute load average when it started (another process
on the machine slows every stage: read the timings with it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[1]

#: DVC 3's log lines (dvc/stage/run.py, dvc/stage/cache.py, dvc/stage/__init__.py, dvc/dvcfile.py)
EVENTS = (
    (re.compile(r"^Running stage '(?P<stage>[^']+)':"), "ran"),
    (re.compile(r"^Stage '(?P<stage>[^']+)' is cached - skipping run"), "cached"),
    (re.compile(r"^Stage '(?P<stage>[^']+)' didn't change, skipping"), "skipped"),
    (re.compile(r"^Updating lock file '"), "lock"),
)


@dataclass
class Stage:
    stage: str
    status: str                 # ran | cached | skipped
    start: float                # seconds since the command started
    end: float | None = None
    cpu_start: float | None = None
    cpu_end: float | None = None
    load_1min: float | None = None

    @property
    def wall(self) -> float | None:
        return None if self.end is None else round(self.end - self.start, 3)

    @property
    def cpu(self) -> float | None:
        if self.cpu_start is None or self.cpu_end is None:
            return None
        return round(self.cpu_end - self.cpu_start, 2)


def classify(line: str) -> tuple[str, str | None] | None:
    """(event, stage) of a DVC log line, or None for any other line."""
    text = line.strip()
    for pattern, event in EVENTS:
        m = pattern.match(text)
        if m:
            return event, m.groupdict().get("stage")
    return None


def stage_times(events: Iterable[tuple[float, str, str | None, float | None, float | None]],
                end_time: float, end_cpu: float | None = None, start_cpu: float | None = None) -> list[Stage]:
    """Stages from timed events (t, event, stage, cpu seconds so far, load 1 min) in the order they came.

    DVC prints "didn't change, skipping" after checking a stage, so a skipped stage spans from the previous line
    of these to its own; "Running stage" and "is cached" come before the work (the command, the checkout), so
    those stages span from their line to the next one."""
    stages: list[Stage] = []
    current: Stage | None = None
    prev_t, prev_cpu = 0.0, start_cpu
    for t, event, name, cpu, load in events:
        if current is not None and current.end is None:
            current.end, current.cpu_end = t, cpu
        if event == "skipped":
            current = Stage(name or "?", event, prev_t, t, prev_cpu, cpu, load)
            stages.append(current)
        elif event != "lock":
            current = Stage(name or "?", event, t, cpu_start=cpu, load_1min=load)
            stages.append(current)
        prev_t, prev_cpu = t, cpu
    if current is not None and current.end is None:
        current.end, current.cpu_end = end_time, end_cpu
    return stages


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of `pid` and of the children it has waited for (utime + stime + cutime + cstime), Linux only."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    ticks = sum(int(v) for v in fields[11:15])   # fields 14-17 of stat(5): utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def load1() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def run_and_time(cmd: list[str], out=None) -> tuple[int, list[Stage], dict]:
    """Run `cmd` (stdout and stderr merged, passed through to `out` as they come); return (exit code, stages,
    totals)."""
    out = out or sys.stdout.buffer
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}   # the log lines arrive when they are written
    t0 = time.monotonic()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    ru0 = _children_cpu()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    events: list[tuple[float, str, str | None, float | None, float | None]] = []
    last_cpu: float | None = None
    pending = b""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        now = time.monotonic() - t0
        out.write(chunk)
        out.flush()
        pending += chunk
        *lines, pending = re.split(rb"[\r\n]", pending)
        for raw in lines:
            hit = classify(raw.decode("utf-8", "replace"))
            if hit:
                cpu = proc_cpu_seconds(proc.pid)
                last_cpu = cpu if cpu is not None else last_cpu
                events.append((now, hit[0], hit[1], cpu, load1()))
    if pending:
        hit = classify(pending.decode("utf-8", "replace"))
        if hit:
            events.append((time.monotonic() - t0, hit[0], hit[1], proc_cpu_seconds(proc.pid), load1()))
    end_cpu = proc_cpu_seconds(proc.pid)   # before the wait reaps it (a zombie's /proc entry is still there)
    code = proc.wait()
    total = time.monotonic() - t0
    ru1 = _children_cpu()
    stages = stage_times(events, total, end_cpu if end_cpu is not None else last_cpu, start_cpu=0.0)
    totals = {
        "command": cmd, "exit_code": code, "wall_seconds": round(total, 3),
        "cpu_seconds": round(ru1 - ru0, 2),   # the command and everything it waited for (getrusage, children)
        "loadavg_start": [round(v, 2) for v in load_start] if load_start else None,
        "loadavg_end": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    return code, stages, totals


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def report(stages: list[Stage], totals: dict) -> dict:
    rows = [{"stage": s.stage, "status": s.status, "wall_seconds": s.wall, "cpu_seconds": s.cpu,
             "load_1min_at_start": s.load_1min} for s in stages]
    accounted = sum(r["wall_seconds"] or 0.0 for r in rows)
    by_status: dict[str, dict[str, float]] = {}
    for r in rows:
        b = by_status.setdefault(r["status"], {"stages": 0, "wall_seconds": 0.0})
        b["stages"] += 1
        b["wall_seconds"] = round(b["wall_seconds"] + (r["wall_seconds"] or 0.0), 2)
    return {
        "what": "wall time of every stage of one `dvc repro` (benchmarks/repro_times.py); machine-dependent",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **totals,
        "stages_wall_seconds": round(accounted, 2),
        "other_seconds": round(totals["wall_seconds"] - accounted, 2),   # DVC between stages (after a lock update)
        "by_status": by_status,
        "stages": rows,
    }


def table(rep: dict) -> str:
    lines = [f"{'stage':<46} {'status':<8} {'wall s':>8} {'cpu s':>8} {'cpu/wall':>8} {'load':>5}"]
    lines.append("-" * len(lines[0]))
    for r in rep["stages"]:
        wall, cpu = r["wall_seconds"], r["cpu_seconds"]
        ratio = f"{cpu / wall:.2f}" if cpu is not None and wall else ""
        lines.append(f"{r['stage']:<46} {r['status']:<8} {wall if wall is not None else '':>8} "
                     f"{cpu if cpu is not None else '':>8} {ratio:>8} {r['load_1min_at_start'] or '':>5}")
    lines.append("-" * len(lines[0]))
    ratio = rep["cpu_seconds"] / rep["wall_seconds"] if rep["wall_seconds"] else 0.0
    lines.append(f"{'total (' + ' '.join(rep['command'][-2:]) + ')':<46} {'':<8} {rep['wall_seconds']:>8} "
                 f"{rep['cpu_seconds']:>8} {ratio:>8.2f}")
    counts = ", ".join(f"{k} {v['stages']} ({v['wall_seconds']} s)" for k, v in rep["by_status"].items())
    lines.append(f"stages: {counts}; DVC between stages {rep['other_seconds']} s; load average "
                 f"{rep['loadavg_start']} at the start, {rep['loadavg_end']} at the end")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "repro.json")
    args = ap.parse_args(argv)
    if not cmd:
        dvc = Path(sys.executable).with_name("dvc")
        cmd = [str(dvc) if dvc.exists() else "dvc", "repro"]
    code, stages, totals = run_and_time(cmd)
    rep = report(stages, totals)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(rep, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    print("\n" + table(rep) + f"\nwritten {args.out}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
