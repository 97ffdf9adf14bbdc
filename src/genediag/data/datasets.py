"""Torch datasets over the ingest cache (``images.npy``, memory-mapped), and the tables that say which rows of it
a task trains, validates and tests on."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from genediag.config import ConfigError
from genediag.data.ingest import load_ingested
from genediag.data.tasks import task_targets

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def build_augmentation(spec: Sequence[dict[str, Any]] | None, seed: int | None = None) -> Callable | None:
    """Albumentations pipeline from params: a list of ``{name: Transform, **kwargs}`` (albumentations 2.x)."""
    if not spec:
        return None
    import os

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    steps = []
    for item in spec:
        item = dict(item)
        name = item.pop("name", None)
        if not name or not hasattr(A, name):
            raise ValueError(f"augment: unknown albumentations transform {name!r}")
        steps.append(getattr(A, name)(**item))
    return A.Compose(steps, seed=seed)


class CachedImageDataset(Dataset):
    """Rows `indices` of the image cache with integer `targets`.

    Returns float tensors C×S×S in [0, 1]; `invert` turns dark-on-white (chromosomes, karyograms) into
    bright-on-black so padding and background are zeros.
    """

    def __init__(self, images: np.ndarray, indices: Sequence[int], targets: Sequence[int], input_size: int,
                 invert: bool = False, augment: Callable | None = None):
        self.images = images
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.int64)
        if len(self.indices) != len(self.targets):
            raise ValueError("indices and targets differ in length")
        self.input_size = int(input_size)
        self.invert = invert
        self.augment = augment
        self._resized: np.ndarray | None = None
        if len(self.indices) and images.shape[1] != self.input_size:
            # resized once, not every epoch (the cache is at the dataset's size, the model may want another)
            self._resized = np.stack([self._resize(np.asarray(images[j])) for j in self.indices])

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def in_chans(self) -> int:
        return 1 if self.images.ndim == 3 else self.images.shape[-1]

    def _resize(self, img: np.ndarray) -> np.ndarray:
        import cv2

        interp = cv2.INTER_AREA if img.shape[0] > self.input_size else cv2.INTER_LINEAR
        return cv2.resize(img, (self.input_size, self.input_size), interpolation=interp)

    def load(self, i: int) -> np.ndarray:
        """The uint8 image (H×W or H×W×3) for item i, resized to the input size, before augmentation."""
        if self._resized is not None:
            return self._resized[i]
        return np.asarray(self.images[self.indices[i]])

    def __getitem__(self, i: int):
        img = self.load(i)
        if self.augment is not None:
            img = self.augment(image=img)["image"]
        x = torch.from_numpy(img.astype(np.float32)).div_(255.0)  # a copy: the cache is a read-only memmap
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
        if self.invert:
            x = 1.0 - x
        return x, int(self.targets[i])


# ------------------------------------------------------------------------------------------------- tables
def load_split_table(dataset_dir: str | Path, split_csv: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """(image cache, split table) of an ingested, split dataset; the two must describe the same rows."""
    manifest, images = load_ingested(dataset_dir)
    split_csv = Path(split_csv)
    if not split_csv.is_file():
        raise FileNotFoundError(f"{split_csv}: not split yet; run `dvc repro split@{Path(dataset_dir).name}`")
    table = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    table["index"] = pd.to_numeric(table["index"]).astype(int)
    if len(table) != len(manifest) or not (table["sha256"].to_numpy() == manifest["sha256"].to_numpy()).all():
        raise ConfigError(f"{split_csv} does not match {dataset_dir}/manifest.csv; re-run the split stage")
    return images, table


def load_split_data(dataset_dir: str | Path, split_csv: str | Path, classes: Any, need: Sequence[str] = SPLITS):
    """(images memmap, split table with a 'target' column, class names) for one task."""
    images, table = load_split_table(dataset_dir, split_csv)
    missing = [s for s in need if s not in set(table["split"])]
    if missing:
        raise ConfigError(f"{split_csv}: split(s) {missing} are empty; training needs train, val and test")
    names, targets = task_targets(table, classes)
    return images, table.assign(target=targets), names


def cap_per_class(table: pd.DataFrame, cap: int | None, seed: int, split: str = "train") -> pd.DataFrame:
    """Keep at most `cap` rows per class of `split` (train or val): a seeded random subsample per target. Rows of
    other splits and rows outside the task are untouched, the kept rows keep their order; ``cap=None`` keeps
    everything. The test split is never capped."""
    if cap is None:
        return table
    if split not in ("train", "val"):
        raise ValueError(f"only the train and val splits can be capped, not {split!r}")
    in_split = (table["split"] == split) & (table["target"] >= 0)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(cap)] + ([] if split == "train" else [1])))
    drop = []
    for target in sorted(table.loc[in_split, "target"].unique()):
        rows = table.index[in_split & (table["target"] == target)].to_numpy()
        if len(rows) > cap:
            keep = rng.choice(len(rows), size=cap, replace=False)
            drop.extend(np.delete(rows, keep).tolist())
    if drop:
        log.info("caps.%s=%d: using %d of %d %s items", split, cap, int(in_split.sum()) - len(drop),
                 int(in_split.sum()), split)
    return table.drop(index=drop)


def split_datasets(images: np.ndarray, table: pd.DataFrame, input_size: int, invert: bool = False,
                   augment: Sequence[dict] | None = None, seed: int = 0,
                   splits: Sequence[str] = SPLITS) -> dict[str, CachedImageDataset]:
    """One dataset per split over the rows with a target (augmentation on the train split only)."""
    aug = build_augmentation(augment, seed=seed)
    out = {}
    for s in splits:
        rows = table[(table["split"] == s) & (table["target"] >= 0)]
        out[s] = CachedImageDataset(images, rows["index"].to_numpy(), rows["target"].to_numpy(), input_size,
                                    invert=invert, augment=aug if s == "train" else None)
    return out
