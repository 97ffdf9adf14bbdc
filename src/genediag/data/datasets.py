"""Torch datasets over the ingest cache (``images.npy``, memory-mapped)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


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

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def in_chans(self) -> int:
        return 1 if self.images.ndim == 3 else self.images.shape[-1]

    def load(self, i: int) -> np.ndarray:
        """The uint8 image (H×W or H×W×3) for item i, resized to the input size, before augmentation."""
        img = np.asarray(self.images[self.indices[i]])
        if img.shape[0] != self.input_size:
            import cv2

            interp = cv2.INTER_AREA if img.shape[0] > self.input_size else cv2.INTER_LINEAR
            img = cv2.resize(img, (self.input_size, self.input_size), interpolation=interp)
        return img

    def __getitem__(self, i: int):
        img = self.load(i)
        if self.augment is not None:
            img = self.augment(image=img)["image"]
        x = torch.from_numpy(img.astype(np.float32)).div_(255.0)  # a copy: the cache is a read-only memmap
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
        if self.invert:
            x = 1.0 - x
        return x, int(self.targets[i])
