"""IIC, Invariant Information Clustering (Ji, Henriques & Vedaldi, ICCV 2019), as a vtcc plugin.

The cluster assignments of two augmented views of each image should share as much information as
they can: the loss is minus the mutual information between them, estimated from a batch's joint
distribution of assignments, as the official code computes it (xu-ji/IIC, ``IID_losses.IID_loss``).

This one file is the whole method: importing it registers the objective and its loss with vtcc
(the package's entry point in the group ``vtcc.plugins`` names this module), and
``conf/objective/iic.yaml`` beside it makes ``vtcc-train objective=iic`` select it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vtcc.errors import ConfigError
from vtcc.models import ClusteringNetwork
from vtcc.objectives.base import ClusteringModule
from vtcc.registry import register

EPS = sys.float_info.epsilon  # the official code's floor for the probabilities


@register("loss", "iic")
class IICLoss(nn.Module):
    """Minus the mutual information between two views' cluster assignments (``lamb`` 1).

    ``P = z_a^T z_b / B``, symmetrised and normalised, is the joint distribution of the two
    assignments over ``K x K`` cluster pairs; with its marginals ``P_i``, ``P_j`` the loss is
    ``-sum P (log P - lamb log P_i - lamb log P_j)``, every probability floored at ``EPS``.
    Identical one-hot assignments spread evenly over K clusters give ``-log K`` (its minimum at
    ``lamb`` 1); assignments that ignore the image give 0."""

    def __init__(self, lamb: float = 1.0) -> None:
        super().__init__()
        if lamb <= 0:
            raise ConfigError(f"module.iic_loss.lamb={lamb}: it must be > 0 (IIC's is 1.0)")
        self.lamb = lamb

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        z_a, z_b = z_a.float(), z_b.float()  # the joint's logs in float32 under mixed precision
        joint = z_a.t() @ z_b  # (K, K): sum over the batch of outer products
        joint = (joint + joint.t()) / 2
        joint = joint / joint.sum()
        p_i = joint.sum(dim=1, keepdim=True).expand_as(joint)
        p_j = joint.sum(dim=0, keepdim=True).expand_as(joint)
        joint, p_i, p_j = joint.clamp(min=EPS), p_i.clamp(min=EPS), p_j.clamp(min=EPS)
        return -(joint * (joint.log() - self.lamb * p_i.log() - self.lamb * p_j.log())).sum()


@register("objective", "iic")
class IICClustering(ClusteringModule):
    """IIC on two augmented views of each image (images, or a frozen backbone's cached views).

    Each view goes through the network on its own (per-view BatchNorm statistics); every cluster
    head's IIC loss is averaged, and the lowest-loss head clusters. ``overclustering``: the paper's
    auxiliary head with more clusters than K (e.g. 5 K), trained beside on the same features; its
    loss is added to the main heads' (the paper alternates the two heads by epoch)."""

    # What the recipe needs of other nodes (vtcc fills each that the config leaves auto): on a
    # frozen backbone's cached features, two augmented views of each image, as the paper pairs them
    feature_recipe = {"pairing": "views"}

    def __init__(
        self,
        network: ClusteringNetwork,
        iic_loss: IICLoss,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
        num_cluster_heads: int = 1,
        overclustering: int | None = None,
    ) -> None:
        super().__init__(network, optimizer, scheduler, compile, num_cluster_heads)
        self.iic_loss = iic_loss
        if overclustering is not None and overclustering <= network.num_clusters:
            raise ConfigError(
                f"module.overclustering={overclustering}: it must exceed K={network.num_clusters} "
                f"(IIC's is 5 K, {5 * network.num_clusters}), or be null"
            )
        width = sum(network.space_dims)  # the backbone's features, as the cluster heads read them
        self.overclustering_head = (
            nn.Sequential(nn.Linear(width, overclustering), nn.Softmax(dim=1)) if overclustering else None
        )

    def losses(
        self, view_a: torch.Tensor, view_b: torch.Tensor, cluster: bool = True
    ) -> dict[str, torch.Tensor]:
        features_a = self.network.features(view_a)
        features_b = self.network.features(view_b)
        head_losses = torch.stack(
            [self.iic_loss(head(features_a), head(features_b)) for head in self.network.cluster_heads]
        )
        loss = head_losses.mean()
        terms = {"loss_iic": loss.detach()}
        if self.overclustering_head is not None:
            over = self.iic_loss(self.overclustering_head(features_a), self.overclustering_head(features_b))
            loss = loss + over
            terms["loss_overclustering"] = over.detach()
        return {"loss": loss, **terms, "head_losses": head_losses}
