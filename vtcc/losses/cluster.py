"""Cluster-level contrastive loss of Contrastive Clustering (Li et al., AAAI 2021)."""

from __future__ import annotations

import math

import torch
from torch import nn

from vtcc.errors import ConfigError
from vtcc.losses.nt_xent import at_least_float32, nt_xent
from vtcc.registry import register
from vtcc.utils.dist import gather_with_grad


def negative_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """``log K - H(p)`` for ``p`` the normalised column sums of ``(B, K)`` probabilities; 0 when uniform."""
    p = at_least_float32(probabilities).sum(0)
    p = p / p.sum()
    return math.log(p.numel()) + (p * torch.log(p.clamp_min(1e-12))).sum()


@register("loss", "cluster", target="vtcc.losses.ClusterLoss")
class ClusterLoss(nn.Module):
    """NT-Xent over the ``2K`` columns of two ``(B, K)`` assignment matrices, plus the entropy term.

    ``forward`` returns ``(contrastive, entropy)``; the paper's loss is their sum
    (temperature 1.0, ``entropy_weight`` 1.0). The entropy term, ``log K - H`` for each view,
    keeps all samples from falling into one cluster.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        entropy_weight: float = 1.0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"cluster temperature must be > 0, got {temperature}")
        if entropy_weight < 0:
            raise ConfigError(f"entropy_weight must be >= 0, got {entropy_weight}")
        self.temperature = temperature
        self.entropy_weight = entropy_weight
        self.gather_distributed = gather_distributed

    def forward(self, p_a: torch.Tensor, p_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.gather_distributed:
            p_a, p_b = gather_with_grad(p_a), gather_with_grad(p_b)
        contrastive = nt_xent(p_a.T, p_b.T, self.temperature)
        entropy = negative_entropy(p_a) + negative_entropy(p_b)
        return contrastive, self.entropy_weight * entropy
