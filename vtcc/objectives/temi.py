"""TEMI on frozen features: student heads learn from EMA teacher heads on neighbour pairs."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vtcc.errors import ConfigError
from vtcc.losses import TemiLoss
from vtcc.models import ClusteringNetwork
from vtcc.objectives.base import ClusteringModule
from vtcc.registry import register

log = logging.getLogger("vtcc")

TEMI_RECIPE_MOMENTUM = 0.996
TEMI_RECIPE_STEPS = 4800  # CIFAR-10: 50,000 images, batch 1,024 (last partial batch dropped), 100 epochs


def auto_teacher_momentum(total_steps: int) -> float:
    """The momentum whose EMA horizon ``1 / (1 - m)`` is the share of ``total_steps`` that TEMI's
    recipe gives its teacher (250 of 4,800 steps), at most the recipe's 0.996; 0 (the teacher is
    the student) when that horizon is under one step."""
    horizon = total_steps * (1 / (1 - TEMI_RECIPE_MOMENTUM)) / TEMI_RECIPE_STEPS
    return min(TEMI_RECIPE_MOMENTUM, max(0.0, 1 - 1 / horizon)) if horizon > 0 else 0.0


def pair_information_score(p_1: torch.Tensor, p_2: torch.Tensor) -> torch.Tensor:
    """``-mean_i log sum_k p_1ik p_2ik / pbar_k`` of a head's ``(B, K)`` probabilities for the two
    members of each pair, ``pbar`` their mean over the batch: minus TEMI's PMI at beta 1 with the
    batch's own prior. A head whose output does not depend on the image (flat or collapsed) scores
    exactly 0; as ``p_1 p_2 <= (p_1 + p_2) / 2``, no head scores below ``-log K``, which only a sharp,
    consistent, balanced head reaches (a sharp consistent one: minus the entropy of its cluster sizes).
    """
    p_1, p_2 = p_1.float(), p_2.float()
    prior = torch.cat([p_1, p_2]).mean(dim=0).clamp_min(1e-12)
    return -((p_1 * p_2) / prior).sum(dim=1).clamp_min(1e-12).log().mean()


@register(
    "objective",
    "temi",
    target="vtcc.objectives.TemiClustering",
    aliases=("vtcc.module.TemiClustering",),  # checkpoints from before vtcc/objectives/
)
class TemiClustering(ClusteringModule):
    """TEMI (Adaloglou et al., BMVC 2023) on frozen features: student heads learn from EMA teacher
    heads on pairs of an image and one of its nearest neighbours (:class:`~vtcc.losses.TemiLoss`).

    The network's cluster heads are the teachers (they cluster, as TEMI evaluates its teacher);
    the students are copies that the optimiser trains; after each step each teacher moves to
    ``teacher_momentum * teacher + (1 - teacher_momentum) * student``. The last layer of the
    students stays fixed for ``freeze_last_layer`` epochs, as in TEMI's (DINO's) code.

    ``teacher_momentum="auto"``: the teacher averages over the same share of the run as in TEMI's
    CIFAR-10 recipe (0.996, an EMA horizon of 1 / (1 - 0.996) = 250 of its 4,800 steps), at most
    0.996. A small dataset's run has few steps (digits: 350), and 0.996 there leaves a quarter of
    the teacher at its random start (ACC 0.70 against 0.967, README). It is read from the planned
    steps at every epoch's start, so it follows ``time_budget_minutes``.

    Heads are ranked by the teachers' :func:`pair_information_score`, not by TEMI's loss: with
    ``beta < 1`` the loss of a flat head, ``-w (2 - 2 beta) log K``, beats a sharp, consistent head
    that uses ``k`` clusters evenly (``-w log k``) whenever ``k < K^(2 - 2 beta)`` (6 of 10 clusters
    at beta 0.6), and every sharp head at ``beta <= 0.5``. The score gives any head whose output
    ignores the image 0 and a sharp consistent head minus the entropy of its cluster sizes.
    """

    sharp_heads = True
    requires_frozen_backbone = True
    # TEMI's README: its precomputed embeddings (one evaluation-view feature per image, pairs with
    # one of its 50 nearest neighbours: --embed_aug none, --knn 50)
    feature_recipe = {"pairing": "eval_neighbors", "num_neighbors": 50}
    head_style = "temi"  # TEMI's head: MLP to 256, L2 normalisation, weight-normalised last layer

    def __init__(
        self,
        network: ClusteringNetwork,
        temi_loss: Callable[..., TemiLoss],
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
        num_cluster_heads: int = 1,
        teacher_momentum: float | Literal["auto"] = "auto",
        freeze_last_layer: int = 1,
    ) -> None:
        super().__init__(network, optimizer, scheduler, compile, num_cluster_heads)
        if teacher_momentum != "auto" and not (
            isinstance(teacher_momentum, int | float) and 0.0 <= teacher_momentum <= 1.0
        ):
            raise ConfigError(
                f"module.teacher_momentum={teacher_momentum} must be in [0, 1] (e.g. 0.996) or auto"
            )
        self.temi_loss = temi_loss(num_clusters=network.num_clusters, num_heads=num_cluster_heads)
        self.auto_momentum = teacher_momentum == "auto"
        self.teacher_momentum = TEMI_RECIPE_MOMENTUM if self.auto_momentum else float(teacher_momentum)
        self._planned_steps: int | None = None  # what the auto momentum was last derived from
        self.freeze_last_layer = freeze_last_layer
        self.network_loaded()

    def network_loaded(self) -> None:
        """Students start as copies of the teachers (the network's heads), which never train directly."""
        self.student_heads = copy.deepcopy(self.network.cluster_heads).requires_grad_(True)
        self.network.cluster_heads.requires_grad_(False)

    def on_train_epoch_start(self) -> None:
        """``auto``: from the run's planned steps, read every epoch (a time budget re-plans the run)."""
        super().on_train_epoch_start()
        if not self.auto_momentum:
            return
        steps = int(self.trainer.estimated_stepping_batches)
        if steps == self._planned_steps:
            return
        self._planned_steps = steps
        self.teacher_momentum = auto_teacher_momentum(steps)
        log.info(
            "module.teacher_momentum=auto: %.4f (an EMA horizon of %.0f of the run's %d steps, "
            "the share of TEMI's recipe; set it to change)",
            self.teacher_momentum,
            1 / max(1 - self.teacher_momentum, 1e-12),
            steps,
        )

    def losses(
        self, anchor: torch.Tensor, neighbor: torch.Tensor, cluster: bool = True
    ) -> dict[str, torch.Tensor]:
        features = [self.network.features(anchor), self.network.features(neighbor)]
        students = [[head.logits(f) for f in features] for head in self.student_heads]
        with torch.no_grad():
            teachers = [[head.logits(f) for f in features] for head in self.network.cluster_heads]
            temperature = self.temi_loss.teacher_temperature
            probabilities = [[torch.softmax(t / temperature, dim=1) for t in views] for views in teachers]
            head_scores = torch.stack([pair_information_score(*views) for views in probabilities])
        head_losses = self.temi_loss(students, teachers)
        return {"loss": head_losses.mean(), "head_losses": head_losses, "head_scores": head_scores}

    def on_after_backward(self) -> None:
        if self.current_epoch < self.freeze_last_layer:
            for head in self.student_heads:
                for parameter in head.mlp[-1].parameters():
                    parameter.grad = None

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        m = self.teacher_momentum
        for student, teacher in zip(
            self.student_heads.parameters(), self.network.cluster_heads.parameters(), strict=True
        ):
            teacher.mul_(m).add_(student.detach(), alpha=1 - m)
