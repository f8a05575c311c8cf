"""The LightningModules: two views -> shared network -> the objective's losses; evaluation."""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vtcc.errors import ConfigError, TrainingDivergedError
from vtcc.losses import ClusterLoss, ConfidenceCrossEntropy, InstanceLoss, ScanLoss, TemiLoss
from vtcc.losses.selflabel import self_label_score
from vtcc.metrics import clustering_metrics
from vtcc.models import ClusteringNetwork
from vtcc.optim import build_scheduler
from vtcc.utils.rng import capture_rng_states, restore_rng_states

log = logging.getLogger("vtcc")


def objective_class(config: Any) -> type[ClusteringModule]:
    """The objective a (composed or stored) config's ``module`` node builds: its class, imported
    (the config was checked first), whose attributes say what the objective needs."""
    from hydra.utils import get_class

    return get_class(str(config["module"]["_target_"]))


def validation_metrics(trainer: Any, module: LightningModule, datamodule: Any) -> dict[str, float]:
    """Run the evaluation split once; ``{"acc": ..., "nmi": ..., ...}`` without the ``val/`` prefix."""
    results = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    return {key.removeprefix("val/"): float(value) for key, value in results.items()}


def per_head(terms: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-term losses of every head, ``[(a_1, b_1), ...]``, as the tensors ``(a_h)`` and ``(b_h)``."""
    first, second = zip(*terms, strict=True)
    return torch.stack(first), torch.stack(second)


class ClusteringModule(LightningModule):
    """What every clustering objective shares: evaluation, optimisers, RNG state, fault checks.

    ``optimizer`` and ``scheduler`` are partials (Hydra ``_partial_: true``) completed with the
    parameters and the total number of steps. Evaluation clusters by the cluster head's argmax.
    ``compile`` compiles the backbone in place with ``torch.compile`` (checkpoints keep their keys).
    ``num_heads`` cluster heads train side by side; after each epoch (and before each evaluation) the
    one with the lowest mean ranking score becomes ``network.best_head``: labels never choose it.
    Subclasses implement :meth:`losses` for a batch of two views (images or cached features); their
    ``head_losses`` term ``(H,)`` (what each head trains on) is logged per head, and their
    ``head_scores`` ``(H,)`` rank the heads; without it the head losses rank them, for objectives
    whose per-head losses are comparable across heads and lowest for sharp, consistent heads.
    """

    # What an objective needs, read from its class (never from its name):
    needs_source_run: ClassVar[bool] = False  # starts from a finished run (init_from=<its .ckpt>)
    sharp_heads: ClassVar[bool] = False  # its heads end sharp: self-labelling after it takes SCAN's 0.99
    requires_frozen_backbone: ClassVar[bool] = False  # trains on a frozen backbone's cached features only

    def __init__(
        self,
        network: ClusteringNetwork,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
        num_heads: int = 1,
    ) -> None:
        super().__init__()
        if network.num_heads != num_heads:  # fewer than 1 head is refused there
            network.reset_cluster_heads(network.num_clusters, num_heads)
        self.network = network
        self._head_score_sums = torch.zeros(num_heads, dtype=torch.float64)
        self._head_score_batches = 0
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

    def network_loaded(self) -> None:
        """Called once ``init_from`` has put another run's weights into the network."""

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        view_a, view_b, *flag = batch
        terms = self.losses(view_a, view_b, *flag)
        loss = terms.pop("loss")
        head_losses = terms.pop("head_losses", None)
        head_scores = terms.pop("head_scores", head_losses)
        if head_scores is not None:
            self._track_head_scores(head_scores.detach())
        if head_losses is not None and len(head_losses) > 1:
            terms.update({f"head{i}_loss": value for i, value in enumerate(head_losses.detach())})
            if head_scores is not head_losses:
                terms.update({f"head{i}_score": value for i, value in enumerate(head_scores.detach())})
        nonfinite = (~torch.isfinite(loss.detach())).long()
        self._nonfinite_steps = self._nonfinite_steps.to(loss.device) + nonfinite
        batch_size = view_a.shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size)
        self.log_dict(
            {f"train/{k}": v for k, v in terms.items()}, on_step=False, on_epoch=True, batch_size=batch_size
        )
        return loss

    def _track_head_scores(self, head_scores: torch.Tensor) -> None:
        """Sums of the ranking scores ``(H,)`` per head on the device (no sync per step)."""
        self._head_score_sums = self._head_score_sums.to(head_scores.device) + head_scores.double()
        self._head_score_batches += 1

    def _choose_best_head(self, log_it: bool = False) -> None:
        """The head with the lowest mean ranking score so far this epoch (summed over processes)."""
        if self._head_score_batches == 0 or self.network.num_heads == 1:
            return
        sums = self.trainer.strategy.reduce(self._head_score_sums.float(), reduce_op="sum")
        self.network.best_head.fill_(int(torch.argmin(sums)))
        if log_it:
            self.log("train/best_head", float(self.network.best_head), on_step=False, on_epoch=True)

    def on_train_epoch_start(self) -> None:
        self._head_score_sums = torch.zeros_like(self._head_score_sums)
        self._head_score_batches = 0

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
        self._choose_best_head(log_it=True)
        nonfinite = int(self.trainer.strategy.reduce(self._nonfinite_steps.float(), reduce_op="sum"))
        if nonfinite > 0:
            raise TrainingDivergedError(
                f"the loss became NaN or infinite in {nonfinite} step(s) of epoch "
                f"{self.current_epoch}; the last good checkpoint is kept. Lower module.optimizer.lr, add a "
                "warm-up (module.scheduler), or use trainer.precision=32-true, then resume from it"
            )

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs.clear()
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            # An evaluation at the end of a training epoch (and the checkpoint saved after it)
            # uses this epoch's best head; choosing again at the epoch's end gives the same one.
            self._choose_best_head()

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
        settings = self.optimizer_factory.keywords
        lr = settings.get("lr", 1e-3)
        groups = self.network.param_groups(lr=lr, weight_decay=settings.get("weight_decay", 0.0))
        params = [group for group in groups if group["params"]]
        own = [p for n, p in self.named_parameters() if not n.startswith("network.") and p.requires_grad]
        if own:  # what the objective trains besides the network, e.g. TEMI's student heads
            params.append({"name": "objective", "params": own, "lr": lr})
        optimizer = self.optimizer_factory(params=params)
        if any(group["lr"] <= 0 for group in optimizer.param_groups):
            raise ConfigError("the learning rate must be > 0: set module.optimizer.lr, e.g. 3e-4")
        if self.scheduler_factory is None:
            return optimizer
        scheduler = build_scheduler(
            self.scheduler_factory, optimizer, int(self.trainer.estimated_stepping_batches)
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
    With several cluster heads the cluster terms are averaged over the heads (one head: the paper's loss).
    A head's cluster loss ranks it: cosines of non-negative columns lie in [0, 1], so its floor
    ``log(1 + (2K - 2) / e^(1/T))`` is reached only by sharp, consistent heads using every cluster;
    a head whose output ignores the image, flat or collapsed, has parallel columns: ``log(2K - 1)``,
    plus ``2 log K`` of entropy when collapsed.
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
        num_heads: int = 1,
    ) -> None:
        super().__init__(network, optimizer, scheduler, compile, num_heads)
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


class ScanClustering(ClusteringModule):
    """SCAN's clustering step: a view of each image and a view of one of its nearest neighbours
    (in the pretrained feature space) should fall in the same cluster; plus an entropy term.

    Anchors and neighbours are forwarded apart, as SCAN's ``scan_train`` does (per-view BatchNorm).
    Several heads (SCAN trains 10) are averaged; the lowest-loss one clusters, as in SCAN. The loss
    is 0 only for a sharp head whose neighbours agree and whose clusters are balanced; a flat head
    scores ``log K``, a collapsed one ``entropy_weight * log K`` (with ``entropy_weight`` 0 collapse is
    the loss's own minimum, in training as in the ranking)."""

    sharp_heads = True

    def __init__(
        self,
        network: ClusteringNetwork,
        scan_loss: ScanLoss,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
        num_heads: int = 1,
    ) -> None:
        super().__init__(network, optimizer, scheduler, compile, num_heads)
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

    def __init__(
        self,
        network: ClusteringNetwork,
        selflabel_loss: ConfidenceCrossEntropy,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
        num_heads: int = 1,
    ) -> None:
        super().__init__(network, optimizer, scheduler, compile, num_heads)
        self.selflabel_loss = selflabel_loss
        self._confident = torch.zeros(self.network.num_heads, dtype=torch.long)  # per head, this epoch

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
            raise ConfigError(
                f"self-labelling: no image reached the confidence threshold "
                f"{self.selflabel_loss.threshold} in epoch {self.current_epoch}, so nothing trains. "
                "Lower module.selflabel_loss.threshold (e.g. 0.9), or start from a longer-trained run"
            )


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

    def __init__(
        self,
        network: ClusteringNetwork,
        temi_loss: Callable[..., TemiLoss],
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
        num_heads: int = 1,
        teacher_momentum: float | Literal["auto"] = "auto",
        freeze_last_layer: int = 1,
    ) -> None:
        super().__init__(network, optimizer, scheduler, compile, num_heads)
        if teacher_momentum != "auto" and not (
            isinstance(teacher_momentum, int | float) and 0.0 <= teacher_momentum <= 1.0
        ):
            raise ConfigError(
                f"module.teacher_momentum={teacher_momentum} must be in [0, 1] (e.g. 0.996) or auto"
            )
        self.temi_loss = temi_loss(num_clusters=network.num_clusters, num_heads=num_heads)
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
