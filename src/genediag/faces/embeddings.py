"""FaceNet's forward pass, run once per photo (stage ``faces_embed_facenet``) and cached for everything after it.

The converted FaceNet (CASIA-WebFace, :mod:`genediag.faces.facenet`) is the dearest network of the face branch on a
CPU (≈10–20 aligned 160×160 crops per second), and every use of it here keeps its first layers fixed, so each
photo goes through them once:

- ``syndromes.npz``: every photo of the syndrome dataset (``index`` = its row in the ingest cache, ``sha256``), the
  output of ``repeat_3`` (1792×3×3, what a ``last_block`` run trains on) and FaceNet's L2-normalised 512-d
  embedding (what a ``frozen`` run and the raw nearest-neighbour matching use);
- ``identities.npz``: the held-out people of the identity dataset (split ``test``), the embedding of each photo
  and of its mirror image side by side (1024-d), for LFW-protocol verification as the stage-1 models get it;
- ``probes.npz``: the out-of-distribution probes of the evaluation (:mod:`genediag.evaluation.probes`) prepared as
  face crops, their ``repeat_3`` outputs and the SHA-1 of each model input, so a head's OOD check reuses them.

Arrays only (``np.load(allow_pickle=False)``). :class:`CachedPrefix` serves the cached outputs back by row or by
input content, computing any input it has not seen.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from genediag import io as gio
from genediag.config import ConfigError

log = logging.getLogger(__name__)
PROBES_PER_KIND = 10      # OOD probes per kind (the evaluation's own check uses 50: 160 FaceNet passes saved)


def input_digest(x: torch.Tensor) -> str:
    """SHA-1 of one model input (float32 C×H×W) — the key of a cached prefix output."""
    return hashlib.sha1(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32).tobytes()).hexdigest()


def load_facenet_body(weights: str | Path):
    """The FaceNet classifier model (:mod:`genediag.models.facenet`) with the converted weights, in eval mode and
    channels-last memory (1.1–1.4× faster on a CPU; the same embeddings to 1e-7)."""
    from genediag.models import create_model

    model = create_model("facenet", num_classes=1, in_chans=3, img_size=160, pretrained=str(weights)).eval()
    return model.to(memory_format=torch.channels_last)


@torch.no_grad()
def facenet_outputs(model, dataset, batch_size: int = 32, flip: bool = False,
                    stem: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """(``repeat_3`` outputs N×1792×3×3 or None, embeddings N×512 — with `flip`, N×1024: the photo's and its
    mirror image's) of a dataset of 160×160 crops in [0, 1], in order."""
    stems, embs = [], []
    for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x = x.contiguous(memory_format=torch.channels_last)
        z = model.stem(x)
        e = model.top(z)
        if flip:
            mirror = torch.flip(x, dims=[3]).contiguous(memory_format=torch.channels_last)
            e = torch.cat([e, model.facenet_embedding(mirror)], 1)
        if stem:
            stems.append(z.float().contiguous())
        embs.append(e.float())
    return (torch.cat(stems).numpy() if stem and stems else None), torch.cat(embs).numpy()


def _check_crops(images: np.ndarray, dataset_dir: Path) -> None:
    if images.ndim != 4 or images.shape[1:] != (160, 160, 3):
        raise ConfigError(f"{dataset_dir}: FaceNet takes 160×160 RGB crops, the cache holds {images.shape[1:]}; align "
                          "the photos onto the facenet template (faces.realign.<name>: {template: facenet})")


def facenet_cache(weights: str | Path, syndromes_dir: str | Path, identities_dir: str | Path,
                  identities_split: str | Path, out_dir: str | Path, batch_size: int = 32,
                  probe_seed: int = 0) -> dict[str, Any]:
    """Write the three caches (module doc) into `out_dir`; returns counts and the photos per second."""
    from genediag.data.datasets import CachedImageDataset, load_split_table
    from genediag.data.ingest import ingest_summary, load_ingested
    from genediag.evaluation.probes import prepare_probe, probe_images
    from genediag.faces.evaluate import held_out_people
    from genediag.training.run import input_spec

    out_dir, syndromes_dir, identities_dir = Path(out_dir), Path(syndromes_dir), Path(identities_dir)
    model = load_facenet_body(weights)
    t0, n = time.perf_counter(), 0

    manifest, images = load_ingested(syndromes_dir)
    _check_crops(images, syndromes_dir)
    ds = CachedImageDataset(images, np.arange(len(images)), np.zeros(len(images), np.int64), 160)
    stem, emb = facenet_outputs(model, ds, batch_size)
    n += len(ds)
    gio.write_with(out_dir / "syndromes.npz", lambda p: np.savez(
        p, index=manifest["index"].to_numpy(np.int64), sha256=manifest["sha256"].to_numpy().astype(str),
        repeat_3=stem.astype(np.float32), embedding=emb.astype(np.float32)), suffix=".npz")

    id_images, table = load_split_table(identities_dir, identities_split)
    _check_crops(id_images, identities_dir)
    held = held_out_people(table, identities_split)
    ds = CachedImageDataset(id_images, held["index"].to_numpy(), np.zeros(len(held), np.int64), 160)
    _, emb2 = facenet_outputs(model, ds, batch_size, flip=True, stem=False)
    n += 2 * len(ds)
    gio.write_with(out_dir / "identities.npz", lambda p: np.savez(
        p, index=held["index"].to_numpy(np.int64), sha256=held["sha256"].to_numpy().astype(str),
        group_id=held["group_id"].to_numpy().astype(str), embedding=emb2.astype(np.float32)), suffix=".npz")

    spec = input_spec(ingest_summary(syndromes_dir), {"input_size": 160, "invert": False}, 3)
    kinds, crops = [], []
    for kind, pics in probe_images("RGB", PROBES_PER_KIND, probe_seed).items():
        kinds += [kind] * len(pics)
        crops += [prepare_probe(img, spec) for img in pics]
    crops = np.stack(crops)
    ds = CachedImageDataset(crops, np.arange(len(crops)), np.zeros(len(crops), np.int64), 160)
    pstem, _ = facenet_outputs(model, ds, batch_size)
    n += len(ds)
    digests = np.array([input_digest(ds[i][0]) for i in range(len(ds))])
    gio.write_with(out_dir / "probes.npz", lambda p: np.savez(
        p, kind=np.array(kinds), digest=digests, repeat_3=pstem.astype(np.float32), seed=np.int64(probe_seed),
        per_kind=np.int64(PROBES_PER_KIND)), suffix=".npz")
    seconds = time.perf_counter() - t0
    info = {"syndrome_photos": len(manifest), "held_out_identity_photos": len(held), "probes": len(crops),
            "forward_passes": n, "seconds": round(seconds, 1), "images_per_second": round(n / seconds, 2),
            "threads": torch.get_num_threads()}
    log.info("FaceNet cache: %d syndrome photos, %d held-out identity photos (+ mirrors), %d probes: %d forward "
             "passes in %.1f s (%.1f/s, %d threads)", info["syndrome_photos"], info["held_out_identity_photos"],
             info["probes"], n, seconds, info["images_per_second"], info["threads"])
    return info


def load_cache(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class CachedPrefix:
    """A frozen prefix's outputs served from a cache: by ingest-cache row (:meth:`rows`) or by model input
    (:meth:`__call__`, keyed by :func:`input_digest`; inputs not in the cache go through `prefix`)."""

    def __init__(self, prefix: torch.nn.Module, by_row: dict[int, np.ndarray] | None = None,
                 by_digest: dict[str, np.ndarray] | None = None):
        self.prefix, self.by_row, self.by_digest = prefix, by_row or {}, by_digest or {}
        self.computed = 0

    def rows(self, index: np.ndarray) -> torch.Tensor:
        missing = [int(i) for i in index if int(i) not in self.by_row]
        if missing:
            raise ConfigError(f"the FaceNet cache has no row(s) {missing[:5]} of the dataset; re-run "
                              "faces_embed_facenet")
        return torch.from_numpy(np.stack([self.by_row[int(i)] for i in index]))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out: list[torch.Tensor | None] = []
        todo = []
        for i in range(len(x)):
            hit = self.by_digest.get(input_digest(x[i]))
            out.append(None if hit is None else torch.from_numpy(hit))
            if hit is None:
                todo.append(i)
        if todo:
            self.prefix.eval()
            fresh = self.prefix(x[todo]).float()
            self.computed += len(todo)
            for k, i in enumerate(todo):
                out[i] = fresh[k]
        return torch.stack(out)
