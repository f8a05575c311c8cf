"""Contrastive Clustering's objective (VTCC trains it): instance and cluster NT-Xent plus entropy."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vtcc.losses import ClusterLoss, InstanceLoss
from vtcc.models import ClusteringNetwork
from vtcc.objectives.base import AutoRates, ClusteringModule, per_head
from vtcc.registry import register


@register(
    "objective",
    "contrastive",
    target="vtcc.objectives.ContrastiveClustering",
    aliases=("vtcc.module.ContrastiveClustering",),  # checkpoints from before vtcc/objectives/
    auto=("num_cluster_heads",),  # 5 with a time budget or a frozen backbone, else 1 (vtcc.config.resolve)
)
class ContrastiveClustering(ClusteringModule):
    """Contrastive Clustering (Li et al., AAAI 2021): instance NT-Xent + cluster NT-Xent + entropy.

    Each view goes through the network on its own, so every BatchNorm layer (conv stem, heads)
    normalises a view with that view's batch statistics, as the official networks
    (``Network_VTCC.forward``, CC's ``Network.forward``) do; running statistics update once per view.
    With several cluster heads the cluster terms are averaged over the heads (one head: the paper's loss).
    A head's cluster loss ranks it: cosines of non-negative columns lie in [0, 1], so its floor
    ``log(1 + (2K - 2) / e^(1/T))`` is reached only by sharp, consistent heads using every cluster;
    a head whose output ignores the image, flat or collapsed, has parallel columns: ``log(2K - 1)``,
    plus ``2 log K`` of entropy when collapsed. Heads whose partitions differ can still reach the same
    loss (two classes merged and another split, as evenly), so at the end of training the head whose
    clusters the instance embedding supports best (``structure``, :mod:`vtcc.quality`) clusters.
    """

    trains_instance_projector = True
    final_head_by_structure = True
    # the papers' 3e-4 for a fixed number of epochs; a run a time budget plans is still learning
    # when it ends, and 6e-4 trained better there (docs/own-folder.md, "Levers for short budgets")
    auto_rates = AutoRates(epochs=3e-4, budget=6e-4)
    # cached features of a frozen backbone: two augmented views of each image (the papers' pairs)
    feature_recipe = {"pairing": "views"}

    def __init__(
        self,
        network: ClusteringNetwork,
        instance_loss: InstanceLoss,
        cluster_loss: ClusterLoss,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        instance_weight: float = 1.0,
        cluster_weight: float = 1.0,
        compile: bool = False,
        num_cluster_heads: int = 1,
    ) -> None:
        super().__init__(network, optimizer, scheduler, compile, num_cluster_heads)
        self.instance_loss = instance_loss
        self.cluster_loss = cluster_loss
        self.instance_weight = instance_weight
        self.cluster_weight = cluster_weight

    def losses(
        self, view_a: torch.Tensor, view_b: torch.Tensor, cluster: bool = True
    ) -> dict[str, torch.Tensor]:
        z_a, heads_a = self.network(view_a)
        z_b, heads_b = self.network(view_b)
        loss_instance = self.instance_loss(z_a, z_b)
        if not cluster:
            return {"loss": self.instance_weight * loss_instance, "loss_instance": loss_instance}
        contrastive, entropy = per_head(
            self.cluster_loss(p_a, p_b) for p_a, p_b in zip(heads_a, heads_b, strict=True)
        )
        head_losses = contrastive + entropy
        loss = self.instance_weight * loss_instance + self.cluster_weight * head_losses.mean()
        return {
            "loss": loss,
            "loss_instance": loss_instance,
            "loss_cluster": contrastive.mean(),
            "loss_entropy": entropy.mean(),
            "head_losses": head_losses,
        }
