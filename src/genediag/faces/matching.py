"""GestaltMatcher-style matching (Hsieh et al., Nat. Genet. 2022): photos are points in an embedding space, the
embeddings of known patients' photos form a *gallery*, and a new photo is ranked against syndromes by cosine
distance to the gallery — so a syndrome seen in only a few photos, or added after the model was trained, can be
matched without retraining.

``method: nearest_neighbour``. Embeddings are L2-normalised; for a query photo and a syndrome:

- *nearest neighbour*: the largest cosine similarity to any gallery photo of the syndrome;
- *centroid*: the cosine similarity to the syndrome's centroid (the mean of its gallery photos' unit vectors).

Syndromes are ranked by similarity (ties: the class name), and top-k accuracy is the share of query photos whose
syndrome is among the first k. 95 % intervals: bootstrap over the query photos' people
(:func:`genediag.evaluation.uncertainty.bootstrap_ci`). Chance level for k of K syndromes is k / K.

Two protocols (:func:`match_metrics`):

- ``all``: gallery = every photo of the ``gallery_splits`` (train, val), queries = the test photos;
- ``leave_out``: syndromes held out of the embedding model's training (:data:`leave_out.syndromes`; a model whose
  classes include any of them gets no figure) — the gallery holds every gallery-split photo of the other
  syndromes and one photo each of ``gallery_people`` seeded people per held-out syndrome; queries are the held-out
  syndromes' test photos, ranked against all syndromes.

:func:`match_run` writes a run's figures (``metrics/faces/matching/<run>.json``) and the gallery ``genediag predict``
ranks a new photo against (``models/<run>/gallery.npz``: unit-length features, labels, people and photo paths;
plain arrays); every syndrome run's evaluation calls it, and stage ``faces_facenet`` for FaceNet's raw embeddings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from genediag import io as gio
from genediag.config import ConfigError

log = logging.getLogger(__name__)
METHOD = "nearest_neighbour"


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def class_similarities(queries: np.ndarray, gallery: np.ndarray, gallery_labels: Sequence[str],
                       classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(nearest-neighbour, centroid) cosine similarities, each Q×K over `classes` (a class without gallery photos
    gets −inf)."""
    q, g = unit(queries), unit(gallery)
    labels = np.asarray(gallery_labels).astype(str)
    sim = q @ g.T
    nn_sim = np.full((len(q), len(classes)), -np.inf)
    cen_sim = np.full((len(q), len(classes)), -np.inf)
    for k, c in enumerate(classes):
        m = labels == c
        if m.any():
            nn_sim[:, k] = sim[:, m].max(1)
            cen_sim[:, k] = q @ unit(g[m].mean(0, keepdims=True))[0]
    return nn_sim, cen_sim


def true_class_rank(similarity: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """0-based rank of each query's true class (column `truth[i]`) when classes are sorted by similarity,
    largest first; ties go against the true class (a tied class counts as ranked above it)."""
    s = np.asarray(similarity, dtype=np.float64)
    t = np.asarray(truth, dtype=np.int64)
    own = s[np.arange(len(s)), t]
    return ((s >= own[:, None]).sum(1) - 1).astype(np.int64)


def rank_classes(similarity: np.ndarray, classes: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """Per query, the first `k` (class, similarity) pairs, most similar first (ties: class name)."""
    out = []
    for row in np.asarray(similarity, dtype=np.float64):
        order = sorted(range(len(classes)), key=lambda j: (-row[j], str(classes[j])))
        out.append([(str(classes[j]), float(row[j])) for j in order[:k] if np.isfinite(row[j])])
    return out


def topk_table(ranks: np.ndarray, groups: np.ndarray, top_k: Sequence[int], n_classes: int,
               bootstrap: int, seed: int) -> dict[str, Any]:
    """Top-k accuracies of 0-based true-class ranks with their people-bootstrap 95 % intervals and chance levels."""
    from genediag.evaluation.uncertainty import bootstrap_ci

    ks = [int(k) for k in top_k]

    def fn(r):
        return {f"top{k}": float((r < k).mean()) for k in ks}

    point = fn(np.asarray(ranks))
    ci = bootstrap_ci(fn, groups, {"r": np.asarray(ranks)}, bootstrap, seed) if len(ranks) else {}
    return {**{k: round(v, 6) for k, v in point.items()}, "ci95": ci,
            "chance": {f"top{k}": round(min(k, n_classes) / n_classes, 6) for k in ks},
            "queries": int(len(ranks)), "query_people": int(len(set(np.asarray(groups).tolist())))}


def _protocol(feats, labels, groups, gallery_mask, query_mask, classes, top_k, bootstrap, seed) -> dict[str, Any]:
    index = {c: i for i, c in enumerate(classes)}
    truth = np.array([index[c] for c in labels[query_mask]], dtype=np.int64)
    nn_sim, cen_sim = class_similarities(feats[query_mask], feats[gallery_mask], labels[gallery_mask], classes)
    out = {"gallery_photos": int(gallery_mask.sum()), "gallery_people": int(len(set(groups[gallery_mask]))),
           "classes": len(classes)}
    for name, sim in (("nearest_neighbour", nn_sim), ("centroid", cen_sim)):
        out[name] = topk_table(true_class_rank(sim, truth), groups[query_mask], top_k, len(classes), bootstrap, seed)
    return out


def leave_out_gallery(labels: np.ndarray, groups: np.ndarray, in_gallery_split: np.ndarray, held: Sequence[str],
                      people: int, seed: int) -> np.ndarray:
    """Gallery mask of the leave-out protocol: every gallery-split photo of the other syndromes plus one photo (the
    first) of each of `people` seeded people per held-out syndrome."""
    rng = np.random.default_rng(seed)
    mask = in_gallery_split & ~np.isin(labels, list(held))
    for c in held:
        rows = np.flatnonzero(in_gallery_split & (labels == c))
        persons = sorted(set(groups[rows].tolist()))
        if len(persons) < people:
            raise ConfigError(f"matching.leave_out: '{c}' has {len(persons)} gallery people, fewer than "
                              f"gallery_people = {people}")
        for p in rng.choice(persons, size=people, replace=False):
            mask[rows[groups[rows] == p][0]] = True
    return mask


def match_metrics(feats: np.ndarray, table: pd.DataFrame, trained_classes: Sequence[str], cfg: dict[str, Any],
                  evidence: dict[str, Any]) -> dict[str, Any]:
    """Both protocols (module doc) for embeddings `feats` of the rows of `table` (label, split, group_id)."""
    labels = table["label"].to_numpy().astype(str)
    groups = table["group_id"].to_numpy().astype(str)
    split = table["split"].to_numpy().astype(str)
    in_gallery = np.isin(split, list(cfg["gallery_splits"]))
    test = split == "test"
    classes = sorted(set(labels[in_gallery]))
    if not test.any() or not in_gallery.any():
        raise ConfigError("matching needs gallery photos (splits %s) and test photos" % list(cfg["gallery_splits"]))
    unknown = sorted(set(labels[test]) - set(classes))
    if unknown:
        raise ConfigError(f"test photos of syndromes with no gallery photo: {unknown}")
    boot, seed = int(evidence["bootstrap"]), int(evidence["seed"])
    result = {"method": METHOD, "gallery_splits": list(cfg["gallery_splits"]), "top_k": list(cfg["top_k"]),
              "trained_classes": list(trained_classes),
              "all": _protocol(feats, labels, groups, in_gallery, test, classes, cfg["top_k"], boot, seed)}
    held = list(cfg["leave_out"]["syndromes"])
    if held:
        seen = sorted(set(held) & set(trained_classes))
        missing = sorted(set(held) - set(classes))
        if missing:
            raise ConfigError(f"matching.leave_out.syndromes: {missing} are not syndromes of the dataset ({classes})")
        lo = {"syndromes": held, "people_per_held_out_syndrome": int(cfg["leave_out"]["gallery_people"]),
              "seed": int(cfg["leave_out"]["seed"])}
        if seen:
            lo.update(applicable=False, reason=f"the embedding model was trained on {seen}")
        else:
            gallery = leave_out_gallery(labels, groups, in_gallery, held, lo["people_per_held_out_syndrome"],
                                        lo["seed"])
            query = test & np.isin(labels, held)
            lo.update(applicable=True, **_protocol(feats, labels, groups, gallery, query, classes, cfg["top_k"],
                                                   boot, seed))
            seen_q = test & ~np.isin(labels, held)
            lo["seen_queries"] = _protocol(feats, labels, groups, gallery, seen_q, classes, cfg["top_k"], boot, seed)
        result["leave_out"] = lo
    return result


def facenet_rows(cache: str | Path, split_csv: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """(FaceNet's 512-d embeddings, their rows of the split table) from the FaceNet cache's ``syndromes.npz``
    (``index``: the ingest-cache row), labelled rows only."""
    with np.load(cache, allow_pickle=False) as z:
        feats, index, sha = z["embedding"].astype(np.float32), z["index"].astype(np.int64), z["sha256"].astype(str)
    table = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    table["index"] = pd.to_numeric(table["index"]).astype(int)
    table = table.set_index("index")
    missing = sorted(set(index.tolist()) - set(table.index))
    if missing or len(index) != len(table):
        raise ConfigError(f"{cache}: its rows do not match {split_csv}; re-run faces_embed_facenet")
    rows = table.loc[index].reset_index()
    if not (rows["sha256"].to_numpy() == sha).all():
        raise ConfigError(f"{cache} was made from other photos than {split_csv} describes; re-run faces_embed_facenet")
    keep = (rows["label"] != "").to_numpy()
    return feats[keep], rows[keep].reset_index(drop=True)


def save_gallery(path: str | Path, feats: np.ndarray, rows: pd.DataFrame, splits: Sequence[str],
                 run: str) -> Path:
    """The run's gallery for ``genediag predict``: unit-length features of the `splits` photos with their label,
    person and path (no image)."""
    m = rows["split"].isin(list(splits)).to_numpy()
    arrays = {"features": unit(feats[m]).astype(np.float32), "label": rows["label"].to_numpy()[m].astype(str),
              "group_id": rows["group_id"].to_numpy()[m].astype(str), "path": rows["path"].to_numpy()[m].astype(str),
              "method": np.array(METHOD), "run": np.array(run)}
    return gio.write_with(path, lambda p: np.savez_compressed(p, **arrays), suffix=".npz")


def load_gallery(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def match_run(run: str, feats: np.ndarray, rows: pd.DataFrame, trained: Sequence[str], cfg: dict[str, Any],
              evidence: dict[str, Any], metrics_path: str | Path, gallery_path: str | Path,
              synthetic: bool | None = None) -> dict[str, Any]:
    """A run's nearest-neighbour metrics (both protocols; JSON at `metrics_path`) and its gallery (`gallery_path`)
    from the embeddings `feats` of the labelled photos `rows` (label, split, group_id, path); `trained`: the
    classes the embedding model was trained on."""
    result = {"run": run, "synthetic": synthetic, **match_metrics(feats, rows, trained, cfg, evidence)}
    gio.write_json(metrics_path, result)
    save_gallery(gallery_path, feats, rows, cfg["gallery_splits"], run)
    a = result["all"]["nearest_neighbour"]
    lo = result.get("leave_out", {})
    log.info("%s: %s top-%s %s, top-1 95 %% CI %s (%d test photos%s); leave-syndromes-out top-1 %s", run, METHOD,
             "/".join(str(k) for k in cfg["top_k"]), [a.get(f"top{k}") for k in cfg["top_k"]], a["ci95"].get("top1"),
             a["queries"], ", synthetic" if synthetic else "",
             lo.get("nearest_neighbour", {}).get("top1") if lo.get("applicable") else lo.get("reason", "none"))
    return result


def nearest_neighbour_matches(feats: np.ndarray, gallery: dict[str, np.ndarray], k: int = 5) -> list[dict[str, Any]]:
    """Per photo: syndromes ranked by the nearest gallery photo (cosine similarity, and the photo's path) and by
    centroid — what ``genediag predict`` adds for a run with a gallery."""
    classes = sorted(set(gallery["label"].tolist()))
    if np.asarray(feats).shape[1] != gallery["features"].shape[1]:
        raise ValueError(f"the gallery's features are {gallery['features'].shape[1]}-d, the model's "
                         f"{np.asarray(feats).shape[1]}-d: the gallery belongs to another model; re-run the run's "
                         "evaluation (dvc repro)")
    nn_sim, cen_sim = class_similarities(feats, gallery["features"], gallery["label"], classes)
    q, g = unit(feats), unit(gallery["features"])
    sim = q @ g.T
    out = []
    for i in range(len(q)):
        ranked = []
        for c, s in rank_classes(nn_sim[i:i + 1], classes, k)[0]:
            m = np.flatnonzero(gallery["label"] == c)
            j = m[int(np.argmax(sim[i, m]))]
            ranked.append({"class": c, "similarity": round(s, 6), "nearest_photo": str(gallery["path"][j])})
        out.append({"method": METHOD, "gallery_photos": int(len(g)), "ranked": ranked,
                    "centroid_ranked": [{"class": c, "similarity": round(s, 6)}
                                        for c, s in rank_classes(cen_sim[i:i + 1], classes, k)[0]]})
    return out
