"""The DeepGestalt-style baseline network: the CASIA-WebFace net of Yi et al. (2014), which DeepGestalt
(Gurovich et al., Nat. Med. 2019) pretrained on face identities and then fine-tuned with a new softmax head on
syndromes. Ten 3×3 convolutions in five pairs (32-64, 64-128, 96-192, 128-256, 160-320 filters at full width),
max pooling after the first four pairs, average pooling after the last, dropout, and a fully connected softmax
classifier. ``width`` multiplies every filter count so the default run can be small. (DeepGestalt also
ensembles crops of facial regions; this baseline uses the whole aligned face.)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from genediag.models.seresnet import make_head, xavier_init
from genediag.models.factory import register_model

CASIA_FILTERS = ((32, 64), (64, 128), (96, 192), (128, 256), (160, 320))


class CasiaNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, width: float = 1.0, dropout: float = 0.4,
                 head: str = "linear"):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_chans
        for i, pair in enumerate(CASIA_FILTERS):
            for f in pair:
                c = max(4, int(round(f * width)))
                layers += [nn.Conv2d(prev, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                prev = c
            if i < len(CASIA_FILTERS) - 1:
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.embedding_dim = prev
        self.dropout = nn.Dropout(dropout)
        self.head_kind = head
        self.head = make_head(head, prev, num_classes)
        xavier_init(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.5
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)

    def forward(self, x: torch.Tensor):
        return self.head(self.dropout(self.embed(x)))

    def mc_split(self):
        """(deterministic prefix, stochastic suffix): MC dropout runs the convolutions once per image."""
        return self.embed, lambda f: self.head(self.dropout(f))


@register_model("casia_net")
def casia_net(num_classes: int, in_chans: int = 3, img_size: int = 112, width: float = 1.0, dropout: float = 0.4,
              head: str = "linear", **kwargs) -> nn.Module:
    if kwargs:
        raise ValueError(f"casia_net: unknown arch option(s) {sorted(kwargs)} (width, dropout, head)")
    return CasiaNet(num_classes, in_chans, width, dropout, head)
