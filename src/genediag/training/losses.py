"""The trainer's losses, by name (``fit.loss.name``): ``cross_entropy`` (optional label smoothing and per-class
weights), ``bce`` (one sigmoid unit, class 1 positive), ``bce_multilabel`` (independent labels, e.g. the karyogram
base's slot counts) and ``a_softmax`` (SphereFace). A loss may define ``scores(output) -> N×C`` when the model
output is not plain class logits, and ``correct(output, y) -> number of right items`` when accuracy is not an
argmax (multi-label).

A-softmax (SphereFace):

For a feature x with class weights W_j normalised to unit length and no bias (the model's ``angular`` head,
which returns ``(cos θ, ‖x‖)``), the A-softmax loss of one sample of class y is

    L = −log( e^{‖x‖ ψ(θ_y)} / ( e^{‖x‖ ψ(θ_y)} + Σ_{j≠y} e^{‖x‖ cos θ_j} ) )
    ψ(θ) = (−1)^k cos(mθ) − 2k,   θ ∈ [kπ/m, (k+1)π/m],  k ∈ {0, …, m−1}

(Liu et al., SphereFace, CVPR 2017: the loss the face-syndrome paper calls A-softmax, m = 4). cos(mθ) is the
Chebyshev polynomial T_m(cos θ), so no gradient flows through arccos; k is a constant per sample.

SphereFace's released training also anneals towards that target with f_y = (λ‖x‖cos θ_y + ‖x‖ψ(θ_y))/(1+λ),
λ = max(λ_min, λ_base·(1 + γ·t)^(−power)) at training step t. ``lambda_base: 0`` (the default) is the formula
above exactly; SphereFace's values are λ_base 1000, γ 0.12, power 1, λ_min 5.

Why not pytorch-metric-learning's ``SphereFaceLoss`` (2.9.0): its formula is the same (multiple-angle cos(mθ),
k from floor(θ·m/π), logits scaled by ‖x‖ — checked numerically against this module), but it keeps the class
weights W inside the loss object. The generic trainer optimises and checkpoints the *model's* parameters, so
those weights would be neither trained nor saved; here they live in the model's angular head instead.

Class scores (for accuracy and probabilities) are ‖x‖ cos θ_j = W_jᵀx: the logits without the margin.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from genediag.config import ConfigError

_LOSSES: dict = {}


def register_loss(name: str):
    """Register a loss builder under `name` (its keyword arguments are the ``fit.loss`` keys)."""
    def deco(fn):
        if name in _LOSSES:
            raise ValueError(f"loss '{name}' registered twice")
        _LOSSES[name] = fn
        return fn
    return deco


def create_loss(cfg: dict | None = None) -> nn.Module:
    """The loss of a ``fit.loss`` entry (keys left at null are not passed)."""
    cfg = {k: v for k, v in (cfg or {}).items() if v is not None}
    name = cfg.pop("name", "cross_entropy")
    if name not in _LOSSES:
        raise ConfigError(f"loss.name: unknown '{name}' ({', '.join(sorted(_LOSSES))})")
    try:
        return _LOSSES[name](**cfg)
    except TypeError as exc:
        raise ConfigError(f"loss {name}: {exc}") from None


@register_loss("cross_entropy")
def _cross_entropy(label_smoothing: float = 0.0, weight: list[float] | None = None) -> nn.Module:
    """`weight`: per-class weights (``balanced`` is resolved from the training targets before the loss is built)."""
    if isinstance(weight, str):
        raise ConfigError(f"loss.weight: '{weight}' must be resolved to per-class weights first; give a list")
    w = None if weight is None else torch.tensor([float(v) for v in weight], dtype=torch.float32)
    return nn.CrossEntropyLoss(weight=w, label_smoothing=float(label_smoothing))


@register_loss("bce")
class BinaryLogitLoss(nn.Module):
    """Sigmoid cross-entropy on a single output unit (class 1 = positive); `pos_weight` up-weights positives."""

    def __init__(self, pos_weight: float | None = None):
        super().__init__()
        self.pos_weight = None if pos_weight is None else torch.tensor(float(pos_weight))

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pw = None if self.pos_weight is None else self.pos_weight.to(out.device)
        return F.binary_cross_entropy_with_logits(out.reshape(-1).float(), y.float(), pos_weight=pw)


@register_loss("bce_multilabel")
class MultiLabelLoss(nn.Module):
    """Independent sigmoid units, targets multi-hot N×K; an item is right when every label is."""

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(out.float(), y.float())

    def scores(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def correct(self, out: torch.Tensor, y: torch.Tensor) -> float:
        return float(((out > 0) == y.bool()).all(1).sum().item())


def chebyshev(c: torch.Tensor, m: int) -> torch.Tensor:
    """T_m(c) = cos(m·arccos c) for c in [−1, 1]."""
    prev, cur = torch.ones_like(c), c
    if m == 0:
        return prev
    for _ in range(m - 1):
        prev, cur = cur, 2 * c * cur - prev
    return cur


def psi(cos_theta: torch.Tensor, m: int) -> torch.Tensor:
    """ψ(θ) = (−1)^k cos(mθ) − 2k with k = ⌊mθ/π⌋ (k held constant for the gradient)."""
    c = cos_theta.clamp(-1.0, 1.0)
    with torch.no_grad():
        k = torch.floor(m * torch.acos(c) / math.pi).clamp(max=m - 1)
    sign = 1.0 - 2.0 * torch.remainder(k, 2)
    return sign * chebyshev(c, m) - 2.0 * k


class ASoftmaxLoss(nn.Module):
    def __init__(self, margin: int = 4, lambda_base: float = 0.0, lambda_gamma: float = 0.12,
                 lambda_power: float = 1.0, lambda_min: float = 0.0):
        super().__init__()
        if int(margin) != margin or margin < 1:
            raise ConfigError(f"loss.margin: a positive integer (SphereFace: 4), got {margin}")
        self.m = int(margin)
        self.lambda_base, self.gamma, self.power, self.lambda_min = (float(lambda_base), float(lambda_gamma),
                                                                     float(lambda_power), float(lambda_min))
        self.steps = 0

    @staticmethod
    def _unpack(out) -> tuple[torch.Tensor, torch.Tensor]:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ConfigError("loss a_softmax needs the model's angular head (arch.head: angular), which returns "
                              "(cos θ, ‖x‖); this model returned plain logits")
        cos, norm = out
        return cos.float(), norm.float().reshape(-1)

    def current_lambda(self) -> float:
        if self.lambda_base <= 0:
            return 0.0
        return max(self.lambda_min, self.lambda_base * (1.0 + self.gamma * self.steps) ** (-self.power))

    def forward(self, out, y: torch.Tensor) -> torch.Tensor:
        cos, norm = self._unpack(out)
        cos_y = cos.gather(1, y[:, None]).squeeze(1)
        lam = self.current_lambda()
        target = (lam * cos_y + psi(cos_y, self.m)) / (1.0 + lam)
        logits = cos.scatter(1, y[:, None], target[:, None]) * norm[:, None]
        if torch.is_grad_enabled():
            self.steps += 1  # the annealing clock advances on training steps only
        return F.cross_entropy(logits, y)

    def scores(self, out) -> torch.Tensor:
        cos, norm = self._unpack(out)
        return cos * norm[:, None]


register_loss("a_softmax")(ASoftmaxLoss)
