"""SE-ResNet64 for faces: a stem convolution, four stages of squeeze-and-excitation basic residual blocks
(5, 9, 12 and 5 blocks: 2 × 31 = 62 convolutions), global average pooling and the classifier:
1 + 62 + 1 = 64 weighted layers (1×1 projection shortcuts are not counted, as in ResNet). Xavier init for the
convolutions and fully connected layers; the last batch norm of each residual branch starts at zero (Goyal et
al. 2017), without which this depth does not train from scratch in a few epochs.

The paper's network is SphereFace-64-shaped with SE blocks (widths 64/128/256/512); ``width`` sets the first
stage's channels (the others double), so the default run can use a narrow network with the same depth.

``head``:
- ``linear``: a plain fully connected classifier; the model returns logits (softmax / cross-entropy);
- ``angular``: class weights normalised to unit length and no bias, for A-softmax (SphereFace); the model
  returns ``(cos θ  N×C, ‖x‖  N)`` and :class:`genediag.faces.losses.ASoftmaxLoss` turns it into the loss and
  the class scores ‖x‖ cos θ.

``model.embed(x)`` gives the penultimate-layer features (after average pooling), used for face verification
and the 2-D embedding plot. Inputs are images in [0, 1]; the model scales them to [−1, 1] itself.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from genediag.models.factory import register_model

SE_RESNET64_BLOCKS = (5, 9, 12, 5)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s), inplace=True)))


class SEBasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN, SE recalibration, plus the shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, reduction: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = SqueezeExcite(cout, reduction)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)), inplace=True)


class AngularLinear(nn.Module):
    """Cosines between the features and unit-length class weights (no bias), plus the feature norms."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float()
        norm = x.norm(dim=1).clamp_min(1e-12)
        cos = (x / norm[:, None]) @ F.normalize(self.weight.float(), dim=1).t()
        return cos.clamp(-1.0, 1.0), norm


def make_head(kind: str, in_features: int, num_classes: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "angular":
        return AngularLinear(in_features, num_classes)
    raise ValueError(f"arch.head: unknown '{kind}' (linear for softmax, angular for A-softmax)")


def xavier_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, AngularLinear):
            nn.init.xavier_uniform_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SEResNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, blocks: Sequence[int] = SE_RESNET64_BLOCKS,
                 width: int = 64, head: str = "linear", dropout: float = 0.0, se_reduction: int = 16):
        super().__init__()
        widths = [width * 2**i for i in range(len(blocks))]
        # stride-2 stem, as SphereFace's first convolution: 96×112 → 48×56 → … → 6×7 after stage 4
        self.stem = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        stages, prev = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layers = [SEBasicBlock(prev, w, 1 if i == 0 else 2, se_reduction)]
            layers += [SEBasicBlock(w, w, 1, se_reduction) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            prev = w
        self.stages = nn.Sequential(*stages)
        self.embedding_dim = prev
        self.dropout = nn.Dropout(dropout)
        self.head_kind = head
        self.head = make_head(head, prev, num_classes)
        xavier_init(self)
        for block in self.stages.modules():  # each residual branch starts at zero: the 31 blocks begin as
            if isinstance(block, SEBasicBlock):  # identities, so the 64-layer net trains from Xavier init
                nn.init.zeros_(block.bn2.weight)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (after average pooling) of images in [0, 1]."""
        x = (x - 0.5) / 0.5  # SphereFace's (p − 127.5)/128 input scaling, inside the model
        return torch.flatten(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1), 1)

    def forward(self, x: torch.Tensor):
        return self.head(self.dropout(self.embed(x)))

    def mc_split(self):
        """(deterministic prefix, stochastic suffix): MC dropout runs the 64 layers once per image."""
        return self.embed, lambda f: self.head(self.dropout(f))


def layer_count(model: SEResNet) -> dict[str, int]:
    """Weighted layers as the paper counts them: stem + the blocks' 3×3 convolutions + the classifier."""
    block_convs = sum(1 for b in model.stages.modules() if isinstance(b, SEBasicBlock)) * 2
    return {"stem": 1, "block_convs": block_convs, "classifier": 1, "total": 1 + block_convs + 1,
            "blocks_per_stage": [len(s) for s in model.stages]}


@register_model("se_resnet64")
def se_resnet64(num_classes: int, in_chans: int = 3, img_size: int = 112, width: int = 64, head: str = "linear",
                dropout: float = 0.0, se_reduction: int = 16, **kwargs) -> nn.Module:
    if kwargs:
        raise ValueError(f"se_resnet64: unknown arch option(s) {sorted(kwargs)} (width, head, dropout, se_reduction)")
    return SEResNet(num_classes, in_chans, SE_RESNET64_BLOCKS, width, head, dropout, se_reduction)
