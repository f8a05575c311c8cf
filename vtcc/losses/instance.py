"""Instance-level contrastive loss of Contrastive Clustering (Li et al., AAAI 2021)."""

from __future__ import annotations

import torch
from torch import nn

from vtcc.errors import ConfigError
from vtcc.losses.nt_xent import nt_xent
from vtcc.registry import register
from vtcc.utils.dist import gather_with_grad


@register("loss", "instance", target="vtcc.losses.InstanceLoss")
class InstanceLoss(nn.Module):
    """NT-Xent between the two views' instance vectors ``(B, D)``; temperature 0.5 in the paper.

    With ``gather_distributed`` the loss sees the global batch of all processes.
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"instance temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        if self.gather_distributed:
            z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)
        return nt_xent(z_a, z_b, self.temperature)
