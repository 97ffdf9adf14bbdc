"""A-softmax (SphereFace) loss, registered in the trainer's loss registry as ``a_softmax``.

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
from genediag.training.trainer import register_loss


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
