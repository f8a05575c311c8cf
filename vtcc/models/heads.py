"""Projection heads of Contrastive Clustering: one for instances, one for clusters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vtcc.errors import ConfigError
from vtcc.losses.nt_xent import at_least_float32

HEAD_STYLES = ("vtcc", "cc")


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int, style: str = "vtcc") -> nn.Sequential:
    """``(B, in_dim) -> (B, out_dim)``.

    ``"vtcc"``: Linear-BN-ReLU-Linear-BN-ReLU-Linear (VTCC, after MoCo v3);
    ``"cc"``: Linear-ReLU-Linear (the original Contrastive Clustering heads).
    """
    if style not in HEAD_STYLES:
        raise ConfigError(f"head style {style!r} is unknown: use one of {', '.join(HEAD_STYLES)}")
    if style == "cc":
        return nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
        )
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


class InstanceProjector(nn.Module):
    """Maps features ``(B, D)`` to L2-normalised vectors ``(B, out_dim)`` for the instance loss."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int = 128, style: str = "vtcc") -> None:
        super().__init__()
        self.mlp = projection_mlp(in_dim, hidden_dim, out_dim, style)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(at_least_float32(self.mlp(features)), dim=1)


class ClusterProjector(nn.Module):
    """Maps features ``(B, D)`` to soft cluster assignments ``(B, K)`` (rows sum to 1).

    The softmax runs in float32 so bf16 autocast cannot round small probabilities to zero.
    """

    def __init__(self, in_dim: int, hidden_dim: int, num_clusters: int, style: str = "vtcc") -> None:
        super().__init__()
        if num_clusters < 2:
            raise ConfigError(f"num_clusters={num_clusters}: clustering needs at least 2 clusters")
        self.num_clusters = num_clusters
        self.mlp = projection_mlp(in_dim, hidden_dim, num_clusters, style)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(at_least_float32(self.mlp(features)), dim=1)
