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
        # He initialisation for the ReLU layers (PyTorch's default scales them down by ~1/sqrt(3) per layer: through
        # 3 convolutions and 3 hidden FC layers the signal starts ~20x too small and small tasks sat at chance for
        # tens of epochs, measured); the classifier keeps a small Xavier init
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if m is head[-1]:
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def mc_split(self):
        """(deterministic prefix, stochastic suffix): MC dropout runs the convolutions once per image."""
        return self.features, self.classifier


@register_model("pinnacle_dcnn")
def pinnacle_dcnn(num_classes: int, in_chans: int = 1, img_size: int = 64, **kwargs) -> nn.Module:
    return PinnacleDCNN(num_classes, in_chans, img_size, **kwargs)
