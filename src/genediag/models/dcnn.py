"""The Karyotyping-Pinnacle DCNN: 3 × (3×3 conv + ReLU + 2×2 max-pool) with 32/64/64 filters, flatten,
then 4 fully connected layers (3 hidden + the classifier), trained with softmax cross-entropy."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from genediag.models.factory import register_model


class PinnacleDCNN(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 1, img_size: int = 64,
                 channels: Sequence[int] = (32, 64, 64), fc: Sequence[int] = (256, 128, 64), dropout: float = 0.3):
        super().__init__()
        if len(channels) != 3 or len(fc) != 3:
            raise ValueError(f"PinnacleDCNN has 3 conv and 3 hidden FC layers; got channels={channels}, fc={fc}")
        if img_size < 8:
            raise ValueError(f"img_size {img_size} is too small for three 2×2 poolings")
        layers: list[nn.Module] = []
        prev = in_chans
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            prev = ch
        self.features = nn.Sequential(*layers)
        side = img_size // 8
        dims = [prev * side * side, *fc]
        head: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims[:-1], dims[1:]):
            head += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        head.append(nn.Linear(dims[-1], num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("pinnacle_dcnn")
def pinnacle_dcnn(num_classes: int, in_chans: int = 1, img_size: int = 64, **kwargs) -> nn.Module:
    return PinnacleDCNN(num_classes, in_chans, img_size, **kwargs)
