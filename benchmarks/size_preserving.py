"""Does keeping a chromosome's size in its crop help? Tight crops, resized two ways, the same DCNN run on each.

    python benchmarks/size_preserving.py [--out benchmarks/size_preserving.json]

The synthetic cohort's crops are 128-px canvases drawn at one scale per cell, so the default ``resize: pad``
(longest side → 64 px) already keeps their relative sizes. Real karyotyping software exports *tight* crops (the
chromosome's bounding box), where ``pad`` blows every chromosome up to the full canvas and a 21 looks as long as a
1. This experiment makes that case from the synthetic cohort: every crop of ``data/synthetic/chromosomes`` cut to
its bounding box (written to a temporary folder, with the same manifest), then ingested

- ``pad``: longest side to 64 px (size lost), and
- ``preserve``: one scale for the dataset (``ingest.scale`` = 64 / the longest crop side; sizes kept);

and the default ``chromosomes24-dcnn`` run (params.yaml, seeded, with its caps) trained and evaluated on each, on
the same patients' splits. Accuracy and macro F1 with patient-bootstrap intervals and the paired difference
(same test crops) go to the JSON file. Needs ``dvc repro generate`` first; ~10 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402


def tight_crops(src: Path, dest: Path) -> int:
    """Every crop cut to the bounding box of its dark pixels (the chromosome), same manifest."""
    manifest = pd.read_csv(src / "manifest.csv", dtype=str, keep_default_na=False)
    longest = 0
    for rel in manifest["path"]:
        img = np.asarray(Image.open(src / rel).convert("L"))
        ys, xs = np.nonzero(img < 250)
        box = img[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1] if len(ys) else img
        longest = max(longest, max(box.shape))
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(box).save(dest / rel)
    manifest.to_csv(dest / "manifest.csv", index=False)
    return longest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "size_preserving.json")
    p.add_argument("--run", default="chromosomes24-dcnn")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from genediag.config import load_params
    from genediag.data.split import split_dataset
    from genediag.evaluation.evaluate import evaluate_run
    from genediag.evaluation.uncertainty import paired_bootstrap
    from genediag.evaluation.metrics import headline_metrics
    from genediag.pipeline import ingest_dataset
    from genediag.schema import EVIDENCE, resolve_dataset, resolve_run, validate
    from genediag.training.run import train_run

    params = load_params(ROOT / "params.yaml")
    evidence = validate(params.get("evidence") or {}, EVIDENCE, "evidence")
    base = dict(params["datasets"]["chromosomes"])
    cfg = resolve_run("chromosomes", args.run, params["chromosomes"])
    size = int(base.get("ingest", {}).get("size", 64))
    t0 = time.time()
    out: dict = {"run": args.run, "synthetic": True, "size": size, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="size-preserving-") as tmp:
        tmp = Path(tmp)
        longest = tight_crops(ROOT / "data" / "synthetic" / "chromosomes", tmp / "tight")
        out["longest_tight_crop_px"] = longest
        preds = {}
        for variant, ingest in (("pad", {"size": size, "resize": "pad"}),
                                ("preserve", {"size": size, "resize": "preserve", "scale": size / longest})):
            ds = {**base, "source": str(tmp / "tight"), "synthetic": True, "ingest": {**base.get("ingest", {}),
                                                                                      **ingest}}
            data, split_csv = tmp / variant / "data", tmp / variant / "split.csv"
            summary = ingest_dataset("chromosomes", ds, data, tmp / "review", progress=False)
            split_dataset(data, split_csv, resolve_dataset("chromosomes", ds)["split"])
            train_run(args.run, cfg, data, split_csv, tmp / variant / "model", None, resume_root=None)
            m = evaluate_run(tmp / variant / "model", data, split_csv, tmp / variant / "metrics.json",
                             tmp / variant / "plots", tmp / variant / "eval", evidence)
            preds[variant] = pd.read_csv(tmp / variant / "eval" / "predictions.csv", dtype=str,
                                         keep_default_na=False)
            out["variants"][variant] = {"ingest": ingest, "accepted": summary["accepted"], "n": m["n"],
                                        "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ci95": m["ci95"]}
        a, b = preds["pad"], preds["preserve"].set_index("path").loc[preds["pad"]["path"]].reset_index()
        names = [c[2:] for c in a.columns if c.startswith("p_")]
        idx = {n: i for i, n in enumerate(names)}

        def inputs(df):
            return {"y": df["target"].map(idx).to_numpy(), "pred": df["predicted"].map(idx).to_numpy(),
                    "probs": df[[f"p_{n}" for n in names]].to_numpy(float)}

        paired = paired_bootstrap(lambda y, pred, probs: {k: headline_metrics(y, pred, probs, names)[k]
                                                          for k in ("accuracy", "macro_f1")},
                                  a["group_id"].to_numpy(), inputs(a), inputs(b), int(evidence["bootstrap"]),
                                  int(evidence["seed"]))
        out["preserve_minus_pad"] = paired
    out["seconds"] = round(time.time() - t0, 1)
    out["load_average"] = os.getloadavg()
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for v, r in out["variants"].items():
        print(f"{v:9s} accuracy {r['accuracy']:.4f} {r['ci95']['accuracy']}  macro F1 {r['macro_f1']:.4f}")
    d = out["preserve_minus_pad"]["accuracy"]
    print(f"preserve - pad: accuracy {d['diff']:+.4f} {d['ci95']} "
          f"({'distinguishable' if d['distinguishable'] else 'not distinguishable'}); {out['seconds']} s")


if __name__ == "__main__":
    main()
