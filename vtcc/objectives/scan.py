"""SCAN's clustering step: an image and one of its mined neighbours fall in one cluster."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vtcc.losses import ScanLoss
from vtcc.models import ClusteringNetwork
from vtcc.objectives.base import ClusteringModule, per_head
from vtcc.registry import register


@register(
    "objective",
    "scan",
    target="vtcc.objectives.ScanClustering",
    aliases=("vtcc.module.ScanClustering",),  # checkpoints from before vtcc/objectives/
)
class ScanClustering(ClusteringModule):
    """SCAN's clustering step: a view of each image and a view of one of its nearest neighbours
    (in the pretrained feature space) should fall in the same cluster; plus an entropy term.

    Anchors and neighbours are forwarded apart, as SCAN's ``scan_train`` does (per-view BatchNorm).
    Several heads (SCAN trains 10) are averaged; the lowest-loss one clusters, as in SCAN. The loss
    is 0 only for a sharp head whose neighbours agree and whose clusters are balanced; a flat head
    scores ``log K``, a collapsed one ``entropy_weight * log K`` (with ``entropy_weight`` 0 collapse is
    the loss's own minimum, in training as in the ranking)."""

    sharp_heads = True
    # SCAN's configs/scan/*.yml: a view of an image and of one of its 20 nearest neighbours, mined
    # once in the frozen backbone's feature space
    feature_recipe = {"pairing": "neighbors", "num_neighbors": 20}

    def __init__(
        self,
        network: ClusteringNetwork,
        scan_loss: ScanLoss,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
        num_cluster_heads: int = 1,
    ) -> None:
        super().__init__(network, optimizer, scheduler, compile, num_cluster_heads)
        self.scan_loss = scan_loss

    def losses(
        self, anchor: torch.Tensor, neighbor: torch.Tensor, cluster: bool = True
    ) -> dict[str, torch.Tensor]:
        features_anchor = self.network.features(anchor)
        features_neighbor = self.network.features(neighbor)
        consistency, entropy = per_head(
            self.scan_loss(head(features_anchor), head(features_neighbor))
            for head in self.network.cluster_heads
        )
        head_losses = consistency + entropy
        return {
            "loss": head_losses.mean(),
            "loss_consistency": consistency.mean(),
            "loss_entropy": entropy.mean(),
            "head_losses": head_losses,
        }
