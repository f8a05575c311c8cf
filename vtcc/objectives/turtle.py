"""TURTLE on frozen features: the labelling that linear classifiers in every space learn best."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vtcc.data.feature_cache import CachedFeatureDataModule
from vtcc.errors import ConfigError
from vtcc.losses import InnerClassifiers, turtle_loss
from vtcc.models import ClusteringNetwork
from vtcc.models.heads import TaskEncoder
from vtcc.objectives.base import ClusteringModule
from vtcc.quality import generalization_score
from vtcc.registry import register

log = logging.getLogger("vtcc")


MAX_RATE_SCALE = 10.0  # the most rate_width / width multiplies TURTLE's rates by


def rate_scale(rate_width: float | None, space_dims: list[int]) -> float:
    """What TURTLE's rates are multiplied by on spaces ``space_dims`` wide: ``rate_width`` over the
    narrowest, between 1 and :data:`MAX_RATE_SCALE` (1 for ``rate_width=None``)."""
    if rate_width is None:
        return 1.0
    return min(MAX_RATE_SCALE, max(1.0, float(rate_width) / min(space_dims)))


def _scale_rates(
    rate_width: float | None, network: ClusteringNetwork, optimizer: Callable[..., Optimizer], inner_lr: float
) -> tuple[float, Callable[..., Optimizer]]:
    """The scale of the rates on the network's spaces, and the outer optimiser at its scaled rate."""
    if rate_width is not None and not rate_width > 0:
        raise ConfigError(f"module.rate_width={rate_width} must be a width > 0 (768) or null")
    encoders = [head for head in network.cluster_heads if isinstance(head, TaskEncoder)]
    widths = [d for head in encoders for d in head.space_dims]
    scale = rate_scale(rate_width, widths) if widths else 1.0
    if scale == 1.0:
        return scale, optimizer
    if isinstance(optimizer, functools.partial) and "lr" in optimizer.keywords:
        optimizer = functools.partial(optimizer, lr=optimizer.keywords["lr"] * scale)
    log.info(
        "TURTLE's rates are set for spaces %g wide; these are %d wide at the narrowest: inner and "
        "outer rates x%.3g (inner %.3g; module.rate_width=null keeps them as given)",
        rate_width,
        min(widths),
        scale,
        inner_lr * scale,
    )
    return scale, optimizer


@register("objective", "turtle", target="vtcc.objectives.TurtleClustering")
class TurtleClustering(ClusteringModule):
    """TURTLE (Gadetsky, Jiang & Brbic, ICML 2024), as its ``run_turtle.py`` does it.

    The network's cluster heads are task encoders (:class:`~vtcc.models.heads.TaskEncoder`: one
    weight-normalised linear layer per representation space on the raw features; the labelling is
    the mean of the spaces' softmax). Each training step is one outer step on a batch of cached
    features: per space a fresh ``Linear(d, K)`` (``warm_start``: the same one, with its Adam state,
    from step to step) is fitted by ``inner_steps`` full-batch Adam steps (``inner_lr``) to the
    detached labelling; the outer loss (:func:`~vtcc.losses.turtle_loss`) is the summed soft
    cross-entropy of those classifiers' detached logits against the labelling, minus ``gamma``
    times the summed entropies of each space's batch-mean prediction. The optimiser (Adam, 1e-3)
    trains the task encoders; the inner classifiers are discarded. Clusters are the argmax of
    the labelling.

    The official rates (inner and outer Adam at 1e-3) are set for spaces ``rate_width`` (768) wide.
    On narrower spaces both are scaled by ``rate_width / width`` of the narrowest space, from 1x
    up to at most :data:`MAX_RATE_SCALE` (so 1e-2 on spaces up to 77 wide; ``rate_width=null``
    keeps the rates as given): ten inner Adam steps at 1e-3 move a narrow space's inner classifiers
    less than their random starts differ, and the outer gradient is then mostly noise
    (docs/pretrained.md, "TURTLE's rates on narrow spaces").

    After training, :meth:`label_free_scores` gives TURTLE's generalisation score
    (:func:`vtcc.quality.generalization_score`, ``generalization_folds`` folds; 0 skips it).
    Several heads (``num_cluster_heads``) are several TURTLE runs side by side; the one with the
    lowest loss clusters.
    """

    requires_frozen_backbone = True
    reads_raw_spaces = True
    # TURTLE's run_turtle.py: the evaluation features (its precomputed representations), batches of
    # min(10,000, N) drawn afresh each step without replacement, T = 6,000 steps: 60 epochs (the
    # trainer's default max_epochs, conf/trainer/default.yaml) x 100 steps
    feature_recipe = {
        "pairing": "eval",
        "sampling": "independent",
        "batch_size": 10000,  # the whole training split when smaller
        "steps_per_epoch": 100,
    }
    head_style = "turtle"  # one weight-normalised Linear(d, K) per space, on the raw features

    def __init__(
        self,
        network: ClusteringNetwork,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
        num_cluster_heads: int = 1,
        gamma: float = 10.0,
        inner_steps: int = 10,
        inner_lr: float = 1e-3,
        warm_start: bool = False,
        generalization_folds: int = 10,
        generalization_max_iter: int = 1000,
        rate_width: float | None = 768.0,
    ) -> None:
        scale, optimizer = _scale_rates(rate_width, network, optimizer, inner_lr)
        super().__init__(network, optimizer, scheduler, compile, num_cluster_heads)
        self.rate_scale = scale
        if not all(isinstance(head, TaskEncoder) for head in network.cluster_heads):
            raise ConfigError("objective=turtle trains TURTLE's task encoder: keep model.head_style=turtle")
        if network.normalize_spaces:
            raise ConfigError(
                "objective=turtle reads each space's raw features: set model.normalize_spaces=false (or auto)"
            )
        checks = {
            "module.gamma": (gamma, gamma >= 0, "a number >= 0 (TURTLE's 10)"),
            "module.inner_steps": (inner_steps, inner_steps >= 1, "an integer >= 1 (TURTLE's 10)"),
            "module.inner_lr": (inner_lr, inner_lr > 0, "a number > 0 (TURTLE's 1e-3)"),
            "module.generalization_max_iter": (
                generalization_max_iter,
                generalization_max_iter >= 1,
                "an integer >= 1 (TURTLE's 1000)",
            ),
            "module.generalization_folds": (
                generalization_folds,
                generalization_folds == 0 or generalization_folds >= 2,
                "0 (no score) or an integer >= 2 (TURTLE's 10)",
            ),
        }
        for key, (value, fine, expected) in checks.items():
            if not fine:
                raise ConfigError(f"{key}={value} must be {expected}")
        self.gamma = float(gamma)
        self.inner_steps = int(inner_steps)
        self.inner_lr = float(inner_lr) * self.rate_scale
        self.warm_start = bool(warm_start)
        self.generalization_folds = int(generalization_folds)
        self.generalization_max_iter = int(generalization_max_iter)
        self._warm: list[InnerClassifiers | None] = [None] * num_cluster_heads

    def on_fit_start(self) -> None:
        """One process, and batches of at least K images (checked before the first step)."""
        super().on_fit_start()
        if str(self.trainer.precision) not in ("32-true", "64-true"):
            raise ConfigError(
                f"objective=turtle trains in float32, as its official code (trainer.precision="
                f"{self.trainer.precision}): use trainer.precision=32-true"
            )
        if self.trainer.world_size > 1:
            raise ConfigError(
                "objective=turtle runs in one process, as its official code (each outer step fits "
                "classifiers to the whole batch): use strategy=single"
            )
        data = self.trainer.datamodule
        if isinstance(data, CachedFeatureDataModule):
            self._check_batch(min(data.batch_size, len(data.train_indices)))

    def _check_batch(self, size: int) -> None:
        if size < self.network.num_clusters:
            raise ConfigError(
                f"a TURTLE batch of {size} images is smaller than num_clusters="
                f"{self.network.num_clusters}: raise features.batch_size (TURTLE's 10000) or lower "
                "num_clusters"
            )

    def inner_classifiers(self, index: int, head: TaskEncoder, device: torch.device) -> InnerClassifiers:
        """Head ``index``'s inner linear classifiers, one per space (PyTorch's default
        initialisation of ``Linear(d, K)``, with Adam at ``inner_lr``): fresh every step, or
        kept with ``warm_start``."""
        kept = self._warm[index]
        if self.warm_start and kept is not None:
            return kept
        classifiers = InnerClassifiers.fresh(head.space_dims, head.num_clusters, self.inner_lr, device)
        self._warm[index] = classifiers if self.warm_start else None
        return classifiers

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``warm_start``: the inner classifiers and their Adam state, so a resumed run goes on
        from them (cold start keeps nothing between steps)."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["turtle_inner"] = [None if kept is None else kept.state_dict() for kept in self._warm]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        for index, stored in enumerate(checkpoint.get("turtle_inner") or []):
            if stored is None or not self.warm_start or index >= len(self._warm):
                continue
            self._warm[index] = None
            kept = self.inner_classifiers(
                index, self.network.cluster_heads[index], self.network.best_head.device
            )
            kept.load_state_dict(stored)

    def losses(
        self, view_a: torch.Tensor, view_b: torch.Tensor, cluster: bool = True
    ) -> dict[str, torch.Tensor]:
        features = self.network.features(view_a)  # TURTLE's pairing gives the same features twice
        self._check_batch(len(features))
        head_losses, predictions, entropies = [], [], []
        for index, head in enumerate(self.network.cluster_heads):
            space_probabilities = head.space_probabilities(features)
            labelling = torch.stack(space_probabilities).mean(dim=0)
            classifiers = self.inner_classifiers(index, head, features.device)
            spaces = head.split(features.detach())
            inner_logits = classifiers.fit(
                spaces, labelling, self.inner_steps
            )  # each space's own Adam, batched
            loss, prediction, entropy = turtle_loss(inner_logits, labelling, space_probabilities, self.gamma)
            head_losses.append(loss)
            predictions.append(prediction.detach())
            entropies.append(entropy.detach())
        head_losses = torch.stack(head_losses)
        return {
            "loss": head_losses.mean(),
            "loss_prediction": torch.stack(predictions).mean(),
            "loss_entropy": torch.stack(entropies).mean(),
            "head_losses": head_losses,
        }

    @torch.no_grad()
    def label_free_scores(self, datamodule: Any) -> dict[str, float]:
        """TURTLE's generalisation score of the final clustering of the training images (each
        space's raw cached features; none when ``generalization_folds`` is 0)."""
        if not self.generalization_folds or not isinstance(datamodule, CachedFeatureDataModule):
            return {}
        features = datamodule.training_features().cpu()
        head = self.network.cluster_projector
        device = next(head.parameters()).device
        clusters = torch.cat([head(chunk.to(device)).argmax(1).cpu() for chunk in features.split(4096)])
        spaces = [part.numpy() for part in head.split(features)]
        score = generalization_score(
            spaces, clusters.numpy(), self.generalization_folds, self.generalization_max_iter
        )
        log.info(
            "TURTLE's generalisation score: %.4f (%d-fold logistic regression on the clusters, "
            "mean of %d space(s))",
            score,
            self.generalization_folds,
            len(spaces),
        )
        return {"generalization": float(np.round(score, 6))}
