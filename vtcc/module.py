"""The LightningModules: two views -> shared network -> the objective's losses; evaluation."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vtcc.errors import ConfigError, TrainingDivergedError
from vtcc.losses import ClusterLoss, InstanceLoss, ScanLoss
from vtcc.metrics import clustering_metrics
from vtcc.models import ClusteringNetwork
from vtcc.utils.rng import capture_rng_states, restore_rng_states

log = logging.getLogger("vtcc")


def validation_metrics(trainer: Any, module: LightningModule, datamodule: Any) -> dict[str, float]:
    """Run the evaluation split once; ``{"acc": ..., "nmi": ..., ...}`` without the ``val/`` prefix."""
    results = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    return {key.removeprefix("val/"): float(value) for key, value in results.items()}


class ClusteringModule(LightningModule):
    """What every clustering objective shares: evaluation, optimisers, RNG state, fault checks.

    ``optimizer`` and ``scheduler`` are partials (Hydra ``_partial_: true``) completed with the
    parameters and the total number of steps. Evaluation clusters by the cluster head's argmax.
    ``compile`` compiles the backbone in place with ``torch.compile`` (checkpoints keep their keys).
    Subclasses implement :meth:`losses` for a batch of two views (images or cached features).
    """

    def __init__(
        self,
        network: ClusteringNetwork,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.network = network
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.compile_backbone = compile
        self._eval_outputs: list[torch.Tensor] = []
        self._nonfinite_steps = torch.zeros((), dtype=torch.long)  # counted on device: no sync per step
        self._collapsed_evaluations = 0
        self._rng_restored = False

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Cluster probabilities ``(B, K)`` of images or of cached features."""
        return self.network.cluster_probabilities(inputs)

    def losses(
        self, view_a: torch.Tensor, view_b: torch.Tensor, cluster: bool = True
    ) -> dict[str, torch.Tensor]:
        """``{"loss": total, <term>: value, ...}`` for two views of one batch.

        ``cluster=False``: a batch of the unlabelled pool under CC's STL-10 protocol (instance loss only).
        """
        raise NotImplementedError

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        view_a, view_b, *flag = batch
        terms = self.losses(view_a, view_b, *flag)
        loss = terms.pop("loss")
        nonfinite = (~torch.isfinite(loss.detach())).long()
        self._nonfinite_steps = self._nonfinite_steps.to(loss.device) + nonfinite
        batch_size = view_a.shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size)
        self.log_dict(
            {f"train/{k}": v for k, v in terms.items()}, on_step=False, on_epoch=True, batch_size=batch_size
        )
        return loss

    def on_fit_start(self) -> None:
        """Under DDP every process is seeded alike; give each its own random stream, so the i-th
        image of every process gets its own crop, flip and jitter (the sampler's shuffle has its own
        shared seed). A resumed run keeps the streams its checkpoint restored for each process."""
        if self.trainer.world_size > 1 and not self._rng_restored:
            seed = (torch.initial_seed() + 7919 * self.trainer.global_rank) % 2**32
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)

    def on_train_epoch_end(self) -> None:
        """Stop before a NaN or inf reaches a checkpoint (this hook runs before the checkpoint callbacks).

        The count is summed over processes, so one diverging process stops all of them together.
        """
        nonfinite = int(self.trainer.strategy.reduce(self._nonfinite_steps.float(), reduce_op="sum"))
        if nonfinite > 0:
            raise TrainingDivergedError(
                f"the loss became NaN or infinite in {nonfinite} step(s) of epoch "
                f"{self.current_epoch}; the last good checkpoint is kept. Lower module.optimizer.lr, add a "
                "warm-up (module.scheduler), or use trainer.precision=32-true, then resume from it"
            )

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs.clear()

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        images, labels, indices = batch
        self._eval_outputs.append(torch.stack([indices, self(images).argmax(1), labels], dim=1))

    def on_validation_epoch_end(self) -> None:
        rows = self.all_gather(torch.cat(self._eval_outputs)).reshape(-1, 3).cpu().numpy()
        _, first = np.unique(rows[:, 0], return_index=True)  # drop the sampler's repeated samples
        clusters, labels = rows[first, 1], rows[first, 2]
        values = {"val/num_clusters": float(len(np.unique(clusters)))}
        self._warn_on_collapse(clusters)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger) and self.trainer.is_global_zero:
                sizes = np.bincount(clusters, minlength=self.network.num_clusters)
                logger.experiment.add_histogram("val/cluster_assignments", clusters, self.global_step)
                logger.experiment.add_scalar(
                    "val/largest_cluster_share", sizes.max() / sizes.sum(), self.global_step
                )
        scored = labels >= 0  # images without a label train but are not scored
        if scored.any():
            values.update(
                {f"val/{k}": v for k, v in clustering_metrics(labels[scored], clusters[scored]).items()}
            )
        self.log_dict(values, prog_bar=True, sync_dist=False)

    def _warn_on_collapse(self, clusters: np.ndarray, patience: int = 2) -> None:
        """Warn when fewer than half the clusters are used for ``patience`` evaluations in a row."""
        used = len(np.unique(clusters))
        collapsed = used < self.network.num_clusters / 2
        self._collapsed_evaluations = self._collapsed_evaluations + 1 if collapsed else 0
        if self._collapsed_evaluations >= patience and self.trainer.is_global_zero:
            log.warning(
                "cluster collapse: only %d of %d clusters hold images for %d evaluations in a row. Remedies: "
                "raise module.cluster_loss.entropy_weight (e.g. 2), lower module.optimizer.lr, use a larger "
                "data.batch_size, check that num_clusters fits the data, or train longer.",
                used,
                self.network.num_clusters,
                self._collapsed_evaluations,
            )

    def configure_model(self) -> None:
        """Compile once: Lightning calls this hook again for every fit, validate and test."""
        if self.compile_backbone and not getattr(self, "_compiled", False):
            self.network.backbone.compile()
            self._compiled = True

    def configure_optimizers(self) -> Any:
        if self.trainer.accumulate_grad_batches > 1:
            raise ConfigError(
                "trainer.accumulate_grad_batches > 1 would give each contrastive loss fewer negatives "
                "than the batch it stands for: use a larger data.batch_size, or more devices "
                "(the losses gather across them)"
            )
        if hasattr(self.network, "param_groups"):  # pretrained backbones train at their own rates
            settings = self.optimizer_factory.keywords
            params = self.network.param_groups(
                lr=settings.get("lr", 1e-3), weight_decay=settings.get("weight_decay", 0.0)
            )
        else:
            params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if any(group["lr"] <= 0 for group in optimizer.param_groups):
            raise ConfigError("the learning rate must be > 0: set module.optimizer.lr, e.g. 3e-4")
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(
            optimizer, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the RNG streams of every process, so a resumed run draws the same augmentations."""
        states = capture_rng_states()
        checkpoint["rng_states"] = states
        if self._trainer is not None and self.trainer.world_size > 1 and not self.trainer.interrupted:
            gathered: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, states)  # every process saves, rank 0 writes
            checkpoint["rng_states_per_rank"] = gathered

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        per_rank = checkpoint.get("rng_states_per_rank")
        world_size = self.trainer.world_size if self._trainer is not None else 1
        if per_rank and len(per_rank) == world_size:
            restore_rng_states(per_rank[self.trainer.global_rank])
            self._rng_restored = True
        elif "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])
            self._rng_restored = world_size == 1


class ContrastiveClustering(ClusteringModule):
    """Contrastive Clustering (Li et al., AAAI 2021): instance NT-Xent + cluster NT-Xent + entropy.

    Each view goes through the network on its own, so every BatchNorm layer (conv stem, heads)
    normalises a view with that view's batch statistics, as the official networks
    (``Network_VTCC.forward``, CC's ``Network.forward``) do; running statistics update once per view.
    """

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
    ) -> None:
        super().__init__(network, optimizer, scheduler, compile)
        self.instance_loss = instance_loss
        self.cluster_loss = cluster_loss
        self.instance_weight = instance_weight
        self.cluster_weight = cluster_weight

    def losses(
        self, view_a: torch.Tensor, view_b: torch.Tensor, cluster: bool = True
    ) -> dict[str, torch.Tensor]:
        z_a, p_a = self.network(view_a)
        z_b, p_b = self.network(view_b)
        loss_instance = self.instance_loss(z_a, z_b)
        if not cluster:
            return {"loss": self.instance_weight * loss_instance, "loss_instance": loss_instance}
        loss_cluster, loss_entropy = self.cluster_loss(p_a, p_b)
        loss = self.instance_weight * loss_instance + self.cluster_weight * (loss_cluster + loss_entropy)
        return {
            "loss": loss,
            "loss_instance": loss_instance,
            "loss_cluster": loss_cluster,
            "loss_entropy": loss_entropy,
        }


class ScanClustering(ClusteringModule):
    """SCAN's clustering step: a view of each image and a view of one of its nearest neighbours
    (in the pretrained feature space) should fall in the same cluster; plus an entropy term.

    Anchors and neighbours are forwarded apart, as SCAN's ``scan_train`` does (per-view BatchNorm)."""

    def __init__(
        self,
        network: ClusteringNetwork,
        scan_loss: ScanLoss,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(network, optimizer, scheduler, compile)
        self.scan_loss = scan_loss

    def losses(
        self, anchor: torch.Tensor, neighbor: torch.Tensor, cluster: bool = True
    ) -> dict[str, torch.Tensor]:
        p_anchor = self.network.cluster_projector(self.network.features(anchor))
        p_neighbor = self.network.cluster_projector(self.network.features(neighbor))
        consistency, entropy = self.scan_loss(p_anchor, p_neighbor)
        return {"loss": consistency + entropy, "loss_consistency": consistency, "loss_entropy": entropy}
