"""SCAN's self-labelling step: confident predictions on a weak view label a strong view."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vtcc.errors import ConfigError
from vtcc.losses import ConfidenceCrossEntropy
from vtcc.losses.selflabel import self_label_score
from vtcc.models import ClusteringNetwork
from vtcc.objectives.base import ClusteringModule
from vtcc.registry import register


def lower_threshold(threshold: float) -> float:
    """The threshold the stop message suggests: SCAN's 0.99 and higher ones go to 0.9, others down a
    tenth of themselves (three significant digits), always below the one that failed and above 0."""
    return 0.9 if threshold > 0.9 else float(f"{0.9 * threshold:.3g}")


@register(
    "objective",
    "selflabel",
    target="vtcc.objectives.SelfLabelClustering",
    aliases=("vtcc.module.SelfLabelClustering",),  # checkpoints from before vtcc/objectives/
)
class SelfLabelClustering(ClusteringModule):
    """SCAN's self-labelling step (also SPICE's): a weak view's confident predictions label a strong
    view of the same image (:class:`~vtcc.losses.ConfidenceCrossEntropy`); the whole network trains.

    Batches are ``(weak, strong)``: ``augment=selflabel`` (images), or cached features of a frozen
    backbone: ``features.pairing=eval`` (the evaluation features as both) or ``weak_strong``. The
    weak pass runs without gradient in training mode, as SCAN's ``selflabel_train``.
    Heads are ranked by :func:`~vtcc.losses.selflabel.self_label_score` over all images, not by
    their loss: a head with no confident image has loss 0 and would win by labelling nothing.
    ``train/confident_fraction`` is the share of (head, image) pairs that got a label, the mean
    over heads: what the loss trained on, and known at every step, where the best head is only
    chosen at the epoch's end (one head: that head's share). An epoch in which no head had a single
    confident image stops the run (the threshold is too high for this model).
    """

    needs_source_run = True
    sharp_heads = True
    # Frozen backbones: the heads self-label on the evaluation features themselves (eval). A frozen
    # backbone cannot learn the strong view's invariances; heads fitted to strong views' features
    # cluster the evaluation features worse (digits: 0.975 against 0.903, README). weak_strong:
    # cached evaluation and strong views, as SCAN does with a training backbone.
    feature_recipe = {"pairing": "eval"}

    def __init__(
        self,
        network: ClusteringNetwork,
        selflabel_loss: ConfidenceCrossEntropy,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
        num_cluster_heads: int = 1,
    ) -> None:
        super().__init__(network, optimizer, scheduler, compile, num_cluster_heads)
        self.selflabel_loss = selflabel_loss
        self._confident = torch.zeros(
            self.network.num_cluster_heads, dtype=torch.long
        )  # per head, this epoch

    def losses(
        self, weak: torch.Tensor, strong: torch.Tensor, cluster: bool = True
    ) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            features_weak = self.network.features(weak)
            p_weak = [head(features_weak) for head in self.network.cluster_heads]
        features_strong = self.network.features(strong)
        logits = [head.logits(features_strong) for head in self.network.cluster_heads]
        terms = [self.selflabel_loss(p, z) for p, z in zip(p_weak, logits, strict=True)]
        head_losses = torch.stack([loss for loss, _ in terms])
        confident = torch.stack([mask for _, mask in terms])  # (H, B)
        self._confident = self._confident.to(confident.device) + confident.sum(dim=1)
        return {
            "loss": head_losses.mean(),
            "confident_fraction": confident.float().mean(),
            "head_losses": head_losses,
            "head_scores": torch.stack([self_label_score(p, z) for p, z in zip(p_weak, logits, strict=True)]),
        }

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._confident = torch.zeros_like(self._confident)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        confident = self.trainer.strategy.reduce(self._confident.float(), reduce_op="sum")
        if not bool((confident > 0).any()):
            threshold = float(self.selflabel_loss.threshold)
            raise ConfigError(
                f"self-labelling: no image reached the confidence threshold "
                f"{threshold:g} in epoch {self.current_epoch}, so nothing trains. "
                f"Lower module.selflabel_loss.threshold (e.g. {lower_threshold(threshold):g}), "
                "or start from a longer-trained run"
            )
