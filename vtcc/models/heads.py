"""Projection heads of Contrastive Clustering: one for instances, one for clusters."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from vtcc.errors import ConfigError
from vtcc.losses.nt_xent import at_least_float32

HeadStyle = Literal["vtcc", "cc", "linear", "temi", "turtle"]
HEAD_STYLES = get_args(HeadStyle)
TEMI_BOTTLENECK = 256


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int, style: str = "vtcc") -> nn.Sequential:
    """``(B, in_dim) -> (B, out_dim)``.

    ``"vtcc"``: Linear-BN-ReLU-Linear-BN-ReLU-Linear (VTCC, after MoCo v3);
    ``"cc"``: Linear-ReLU-Linear (the original Contrastive Clustering heads);
    ``"linear"``: one Linear (SCAN's clustering head on pretrained features);
    ``"temi"``: TEMI's (DINO's) head: Linear-GELU-Linear to 256, L2 normalisation, then a
    weight-normalised Linear without bias (weights truncated-normal, std 0.02; norms start at 1).
    """
    if style not in HEAD_STYLES:
        raise ConfigError(f"head style {style!r} is unknown: use one of {', '.join(HEAD_STYLES)}")
    if style == "turtle":
        raise ConfigError(
            "model.head_style=turtle is TURTLE's task encoder, a cluster head only: use it with "
            "objective=turtle (which trains no instance projector)"
        )
    if style == "linear":
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    if style == "temi":
        return temi_head(in_dim, hidden_dim, out_dim)
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


class L2Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


def temi_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """TEMI's ``DINOHead`` with its defaults (2 layers, no BatchNorm, ``norm_last_layer=False``)."""
    layers = [nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, TEMI_BOTTLENECK)]
    for layer in layers[::2]:
        nn.init.trunc_normal_(layer.weight, std=0.02)
        nn.init.zeros_(layer.bias)
    last = nn.utils.parametrizations.weight_norm(nn.Linear(TEMI_BOTTLENECK, out_dim, bias=False))
    with torch.no_grad():
        last.parametrizations.weight.original0.fill_(1.0)  # the norm g of each output row
    return nn.Sequential(*layers, L2Normalize(), last)


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

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Scores before the softmax, in at least float32 (for losses that set their own temperature)."""
        return at_least_float32(self.mlp(features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(features), dim=1)


class TaskEncoder(nn.Module):
    """TURTLE's task encoder (Gadetsky et al., ICML 2024; ``run_turtle.py``): one weight-normalised
    ``Linear(d_s, K)`` per representation space on that space's raw features (no normalisation, no
    temperature); the labelling is the mean over spaces of their softmax probabilities.

    ``features`` ``(B, sum d_s)`` hold the spaces side by side in ``space_dims`` order. The weight
    norm is taken per output row (``dim=0``, as ``nn.utils.weight_norm``'s default), so at
    initialisation each layer computes what the plain ``Linear`` it wraps computes. It has the
    cluster heads' interface: ``forward`` gives the probabilities ``(B, K)``; ``logits`` their log
    (whose softmax is the labelling again, for losses that start from logits).
    """

    def __init__(self, space_dims: list[int], num_clusters: int) -> None:
        super().__init__()
        if num_clusters < 2:
            raise ConfigError(f"num_clusters={num_clusters}: clustering needs at least 2 clusters")
        self.num_clusters = num_clusters
        self.space_dims = [int(d) for d in space_dims]
        self.layers = nn.ModuleList(
            nn.utils.parametrizations.weight_norm(nn.Linear(d, num_clusters), dim=0) for d in self.space_dims
        )

    def split(self, features: torch.Tensor) -> list[torch.Tensor]:
        """The spaces' features ``[(B, d_1), (B, d_2), ...]``, in at least float32."""
        return list(torch.split(at_least_float32(features), self.space_dims, dim=1))

    def space_probabilities(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Each space's softmax ``(B, K)``."""
        return [
            torch.softmax(at_least_float32(layer(z)), dim=1)
            for layer, z in zip(self.layers, self.split(features), strict=True)
        ]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.space_probabilities(features)).mean(dim=0)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self(features).clamp_min(1e-12).log()
