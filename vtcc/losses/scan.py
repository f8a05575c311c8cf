"""SCAN's clustering objective (Van Gansbeke et al., ECCV 2020): neighbours share a cluster."""

from __future__ import annotations

import torch
from torch import nn

from vtcc.errors import ConfigError
from vtcc.losses.cluster import negative_entropy
from vtcc.losses.nt_xent import at_least_float32
from vtcc.registry import register


@register("loss", "scan", target="vtcc.losses.ScanLoss")
class ScanLoss(nn.Module):
    """``forward(p_anchor, p_neighbor)`` on ``(B, K)`` probabilities returns ``(consistency, entropy)``.

    consistency: ``-mean log <p_anchor, p_neighbor>``; entropy: ``entropy_weight * (log K - H(mean p))``,
    zero when the batch spreads evenly over the clusters (SCAN's entropy term, shifted by log K).
    """

    def __init__(self, entropy_weight: float = 5.0) -> None:
        super().__init__()
        if entropy_weight < 0:
            raise ConfigError(f"entropy_weight must be >= 0, got {entropy_weight}")
        self.entropy_weight = entropy_weight

    def forward(self, p_anchor: torch.Tensor, p_neighbor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p_anchor, p_neighbor = at_least_float32(p_anchor), at_least_float32(p_neighbor)
        agreement = (p_anchor * p_neighbor).sum(dim=1).clamp_min(1e-12)
        consistency = -torch.log(agreement).mean()
        entropy = negative_entropy(p_anchor)
        return consistency, self.entropy_weight * entropy
