"""Peak memory of face ingest (MTCNN detection + alignment, ``ingest@<face dataset>``) against the number of photos.

    python benchmarks/face_detection_memory.py [--photos 500 2500] [--out benchmarks/face_detection_memory.json]

Photos: a small synthetic cohort (:func:`genediag.faces.synthetic.generate_face_cohort`, the syndrome set: 33
subjects × 2 photos, ~240 px) resized to MIXED sizes — every photo its own width and height, the long side drawn
uniformly from ``--long-side`` (default 240–2400 px), the aspect ratio jittered ±10 % — and written as JPEG
(quality 90) into a temporary folder (deleted at the end; never in git). The first N photos of one such set of
max(--photos) are ingested for each N, so the larger run holds the smaller one's photos plus more; photo 0 is the
largest of all (long side = the maximum, aspect +10 % both ways), so every run holds the photo with the largest
working set and a difference of peaks is what accumulates with the number of photos.

Each N is ingested in a fresh child process (``pipeline.ingest_dataset`` with kind ``face_syndromes``, the
default face settings of params.yaml: detect max_side 640, min_face_size 40; synthetic, so queued photos train),
which reports
- ``peak_rss_mb``: ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the process's peak resident memory;
- ``baseline_rss_mb``: the peak after importing torch / facenet-pytorch and building MTCNN, before the first photo
  (what the process costs with no photo in it);
- ``rss_mb_during``: the resident memory sampled every 0.25 s while photos are processed (min, max, and the
  samples at 25/50/75/100 % of the run), so growth with the photo count would show;
- ``tracemalloc_peak_mb`` (with --tracemalloc): the peak of memory allocated through Python's allocators
  (numpy arrays included; torch's own allocator is not traced). Off by default: it slows the run several-fold.

Goal (the speed issue): peak ≤ 1.5 GB for 2,500 photos, and independent of the number of photos (500 vs 2,500).
Photos are decoded, detected and released one at a time (genediag.faces.prepare, genediag.data.ingest), and the
freed heap is handed back to the system every ``TRIM_EVERY`` photos (glibc ``malloc_trim``; ``malloc_trims`` in
the JSON: how often and how long it took), so the peak should be the baseline plus one photo's working set. The
1-minute load average is recorded beside the times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's genediag, not another installed one
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

GOAL_PEAK_MB = 1536.0   # 1.5 GB


def loadavg() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def rss_mb() -> float:
    """Current resident set size of this process (MB), from /proc/self/statm."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KB on Linux


# ------------------------------------------------------------------------------------------------ photos
def make_photos(folder: Path, n: int, long_side: tuple[int, int], seed: int) -> dict:
    """`n` JPEG photos of mixed sizes in `folder` (label folders + manifest.csv); returns a description."""
    import numpy as np
    from PIL import Image

    from genediag.faces.synthetic import generate_face_cohort

    pool_dir = folder / "pool"
    generate_face_cohort(pool_dir, {"seed": seed, "workers": 2,
                                    "syndromes": {"subjects_per_class": 3, "photos_per_subject": 2,
                                                  "no_face_photos": 0, "test_subjects_per_class": 0},
                                    "identities": {"people": 4, "photos_per_person": 2, "test_people": 0}})
    import csv

    with open(pool_dir / "syndromes" / "manifest.csv", newline="") as f:
        pool = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    photos = folder / "photos"
    rows, sizes = [], []
    for i in range(n):
        src = pool[i % len(pool)]
        img = Image.open(pool_dir / "syndromes" / src["path"]).convert("RGB")
        w0, h0 = img.size
        side = int(rng.integers(long_side[0], long_side[1] + 1))
        jw, jh = rng.uniform(0.9, 1.1, size=2)
        if i == 0:   # the largest photo first: every run (the first N photos) holds it, so peaks compare
            side, jw, jh = long_side[1], 1.1, 1.1
        f = side / max(w0, h0)
        w = max(64, round(w0 * f * jw))
        h = max(64, round(h0 * f * jh))
        out = photos / src["label"] / f"{i:05d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        img.resize((w, h), Image.BICUBIC).save(out, format="JPEG", quality=90)
        rows.append({"path": str(out.relative_to(photos)), "label": src["label"],
                     "group_id": f"{src['group_id']}-{i // len(pool)}"})
        sizes.append((w, h))
    with open(photos / "manifest.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["path", "label", "group_id"])
        wr.writeheader()
        wr.writerows(rows)
    px = [w * h for w, h in sizes]
    return {"photos": n, "pool_photos": len(pool), "distinct_sizes": len(set(sizes)),
            "long_side_px": list(long_side), "megapixels_max": round(max(px) / 1e6, 2),
            "megapixels_mean": round(sum(px) / len(px) / 1e6, 2),
            "decoded_rgb_mb_if_all_held": round(sum(px) * 3 / 2**20, 1),
            "jpeg_mb_on_disk": round(sum(p.stat().st_size for p in photos.rglob("*.jpg")) / 2**20, 1)}


def subset_manifest(photos: Path, n: int) -> Path:
    """A CSV beside ``photos/manifest.csv`` with its first `n` photos (paths relative to the folder, as ingest
    reads them): the source of one run."""
    lines = (photos / "manifest.csv").read_text().splitlines()
    out = photos / f"manifest-{n}.csv"
    out.write_text("\n".join(lines[: n + 1]) + "\n")
    return out


# ------------------------------------------------------------------------------------------------ child
def child(source: Path, out_dir: Path, tracemalloc_on: bool) -> dict:
    """Ingest `source` as a face dataset in this (fresh) process; return its memory figures."""
    import tracemalloc

    import torch  # noqa: F401  (the baseline includes it, as in the stage)

    from genediag.faces.detect import build_mtcnn
    from genediag.pipeline import ingest_dataset
    from genediag.schema import resolve_dataset

    import genediag.faces.prepare as prepare

    trims: list[float] = []
    release = prepare.release_free_memory

    def timed_release() -> bool:   # the periodic malloc_trim of the face preparer, timed
        t = time.perf_counter()
        done = release()
        trims.append(time.perf_counter() - t)
        return done

    prepare.release_free_memory = timed_release
    cfg = {"kind": "face_syndromes", "source": str(source), "synthetic": True,
           "faces": {"detect": {"min_face_size": 40, "review_below": 0.97, "max_side": 640},
                     "align": {"template": "sphereface", "scale": 0.5}}}
    build_mtcnn(resolve_dataset("bench", cfg)["faces"]["detect"])   # warm: the baseline includes MTCNN's weights
    baseline = peak_rss_mb()
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            samples.append((time.monotonic() - t0, rss_mb()))
            stop.wait(0.25)

    if tracemalloc_on:
        tracemalloc.start()
    th = threading.Thread(target=sample, daemon=True)
    load = loadavg()
    t0 = time.perf_counter()
    th.start()
    summary = ingest_dataset("bench", cfg, out_dir, review_root=out_dir / "review", progress=False)
    seconds = time.perf_counter() - t0
    stop.set()
    th.join()
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if tracemalloc_on else None
    vals = [v for _, v in samples]

    def at(q: float) -> float | None:
        return round(vals[min(len(vals) - 1, int(q * (len(vals) - 1)))], 1) if vals else None

    return {
        "photos": summary["input"], "accepted": summary["accepted"], "quarantined": summary["quarantined"],
        "faces": {k: summary["faces"][k] for k in ("face_found", "review_queue", "status")},
        "seconds": round(seconds, 1), "photos_per_second": round(summary["input"] / seconds, 2),
        "loadavg_before": load, "loadavg_after": loadavg(),
        "baseline_rss_mb": round(baseline, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_mb_during": {"min": round(min(vals), 1) if vals else None, "max": round(max(vals), 1) if vals else None,
                          "at_25_50_75_100_percent": [at(q) for q in (0.25, 0.5, 0.75, 1.0)],
                          "samples": len(vals)},
        "tracemalloc_peak_mb": None if traced is None else round(traced, 1),
        "malloc_trims": {"every_photos": prepare.TRIM_EVERY, "calls": len(trims),
                         "glibc": prepare._TRIM is not None, "seconds_total": round(sum(trims), 3),
                         "ms_max": round(1000 * max(trims), 2) if trims else None},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, nargs="+", default=[500, 2500])
    ap.add_argument("--long-side", type=int, nargs=2, default=[240, 2400], metavar=("MIN", "MAX"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations (slow)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "face_detection_memory.json")
    ap.add_argument("--child", nargs=2, metavar=("SOURCE", "OUT_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]), args.tracemalloc)))
        return 0

    import torch

    from genediag.evaluation.benchmark import machine_info

    start = loadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="genediag-facemem-") as work:
        work = Path(work)
        t0 = time.perf_counter()
        print(f"generating {max(args.photos)} photos of mixed sizes in {work} (load {start}) …", flush=True)
        photos_info = make_photos(work, max(args.photos), tuple(args.long_side), args.seed)
        photos_info["generate_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"  {photos_info}", flush=True)
        for n in sorted(args.photos):
            src = subset_manifest(work / "photos", n)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(src), str(work / f"ingested-{n}")]
            if args.tracemalloc:
                cmd.append("--tracemalloc")
            print(f"ingesting {n} photos in a fresh process (load {loadavg()}) …", flush=True)
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                sys.stderr.write(res.stderr)
                raise SystemExit(f"the child process for {n} photos failed (exit {res.returncode})")
            run = json.loads(res.stdout.strip().splitlines()[-1])
            run["photos_requested"] = n
            runs.append(run)
            print(f"  {n} photos: peak RSS {run['peak_rss_mb']} MB (baseline {run['baseline_rss_mb']} MB), "
                  f"{run['seconds']} s, load {run['loadavg_before']} → {run['loadavg_after']}", flush=True)
    peaks = {r["photos_requested"]: r["peak_rss_mb"] for r in runs}
    lo, hi = min(peaks), max(peaks)
    report = {
        "what": "peak resident memory of face ingest (MTCNN detect + align, pipeline.ingest_dataset, kind "
                "face_syndromes) for N photos of mixed sizes, each N in a fresh process",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": start, "loadavg_end": loadavg(),
        "photos": photos_info,
        "runs": runs,
        "peak_growth_mb": round(peaks[hi] - peaks[lo], 1),
        "goals": {
            f"peak ≤ {GOAL_PEAK_MB:g} MB at {hi} photos": peaks[hi] <= GOAL_PEAK_MB,
            # "independent of the number of photos": the larger run's peak within 5 % (or 50 MB) of the smaller's
            f"peak at {hi} photos within max(5 %, 50 MB) of the peak at {lo}":
                peaks[hi] - peaks[lo] <= max(0.05 * peaks[lo], 50.0),
        },
        "machine": machine_info(torch.device("cpu")),
        "settings": {"photos": args.photos, "long_side": args.long_side, "seed": args.seed,
                     "tracemalloc": args.tracemalloc},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    for what, ok in report["goals"].items():
        print(f"  [{'x' if ok else ' '}] {what}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
