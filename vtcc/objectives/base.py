"""What every clustering objective shares: evaluation, optimisers, RNG state, fault checks, the
ranking of several cluster heads, and the class attributes that say what an objective needs."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vtcc import registry
from vtcc.data.batch import TrainingPair
from vtcc.errors import ConfigError, TrainingDivergedError
from vtcc.metrics import clustering_metrics
from vtcc.models import ClusteringNetwork
from vtcc.optim import build_scheduler
from vtcc.utils.rng import capture_rng_states, restore_rng_states

log = logging.getLogger("vtcc")

DATA_BATCH_SIZE = "${data.batch_size}"  # a feature recipe's batch size that is the data's


class AutoRates(NamedTuple):
    """``module.optimizer.lr=auto``: an objective's learning rate for a run of a fixed number of
    epochs, and for a run that ``time_budget_minutes`` plans (vtcc.config.recipe.resolve_learning_rate)."""

    epochs: float
    budget: float


def objective_class(config: Any) -> type[ClusteringModule]:
    """The objective a (composed or stored) config's ``module`` node builds: its registered class
    (looked up among what vtcc and its plugins register, never imported by name), whose attributes
    say what the objective needs."""
    target = (config.get("module") or {}).get("_target_")
    found = registry.entry(str(target)) if target is not None else None
    if found is None or found.kind != "objective":
        names = ", ".join(e.name for e in registry.entries("objective"))
        raise ConfigError(
            f"module._target_={target!r} is no registered objective: choose objective=<one of {names}>, "
            "or register your own (docs/extending.md)"
        )
    return found.obj


def feature_recipe(objective: type[ClusteringModule]) -> dict[str, Any]:
    """The cached-features settings of ``objective``'s recipe: each class's ``feature_recipe`` over
    its bases' (a plugin's subclass of TEMI that changes ``num_neighbors`` keeps TEMI's pairing)."""
    recipe: dict[str, Any] = {}
    for klass in reversed(objective.__mro__):
        recipe.update(vars(klass).get("feature_recipe", {}))
    return recipe


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
    ``num_cluster_heads`` cluster heads train side by side; after each epoch (and before each evaluation) the
    one with the lowest mean ranking score becomes ``network.best_head``: labels never choose it.
    Subclasses implement :meth:`losses` for a batch of two views (images or cached features); their
    ``head_losses`` term ``(H,)`` (what each head trains on) is logged per head, and their
    ``head_scores`` ``(H,)`` rank the heads; without it the head losses rank them, for objectives
    whose per-head losses are comparable across heads and lowest for sharp, consistent heads.
    """

    # What an objective needs, read from its class (never from its name):
    needs_source_run: ClassVar[bool] = False  # starts from a finished run (init_from=<its .ckpt>)
    takes_curation: ClassVar[bool] = False  # trains with a person's curation.json (curation=<file>)
    sharp_heads: ClassVar[bool] = False  # its heads end sharp: self-labelling after it takes SCAN's 0.99
    requires_frozen_backbone: ClassVar[bool] = False  # trains on a frozen backbone's cached features only
    trains_instance_projector: ClassVar[bool] = False  # the network carries an instance projector for it
    reads_raw_spaces: ClassVar[bool] = False  # clusters each representation space's raw features apart
    # at the end of training, of several heads the one its embedding supports best clusters (vtcc.train)
    final_head_by_structure: ClassVar[bool] = False
    # What its recipe sets in other nodes, each filled where the composed config says auto
    # (vtcc.config.recipe; a value the user gives is kept). feature_recipe: the cached-features
    # settings (features.*); a class names what differs from its bases', :func:`feature_recipe`
    # merges them. head_style: model.head_style (None: the model's own, its builder's default).
    feature_recipe: ClassVar[Mapping[str, Any]] = {
        "pairing": "views",  # two augmented views of each image
        "num_neighbors": 20,  # mined for the pairings of neighbours
        "sampling": "epoch",  # each image once an epoch
        "batch_size": DATA_BATCH_SIZE,  # the heads train with the data's batch size
        "steps_per_epoch": None,  # independent sampling: as many as an epoch of disjoint batches
    }
    head_style: ClassVar[str | None] = None
    # module.optimizer.lr=auto (vtcc.config.recipe): the rates it takes; None: its config file
    # gives a number, and auto is refused
    auto_rates: ClassVar[AutoRates | None] = None

    def __init__(
        self,
        network: ClusteringNetwork,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
        num_cluster_heads: int = 1,
    ) -> None:
        super().__init__()
        if network.num_cluster_heads != num_cluster_heads:  # fewer than 1 head is refused there
            network.reset_cluster_heads(network.num_clusters, num_cluster_heads)
        self.network = network
        self._head_score_sums = torch.zeros(num_cluster_heads, dtype=torch.float64)
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

    def label_free_scores(self, datamodule: Any) -> dict[str, float]:
        """Scores of the trained clustering that read no label, recorded with the final metrics
        (TURTLE's generalisation score); none by default."""
        return {}

    def batch_losses(self, batch: TrainingPair) -> dict[str, torch.Tensor]:
        """:meth:`losses` of a training batch's two inputs; an objective that reads more of the
        batch (its images' indices: ``objective=curated``) overrides this instead."""
        return self.losses(batch.first, batch.second, batch.cluster)

    def training_step(self, batch: TrainingPair, batch_idx: int) -> torch.Tensor:
        terms = self.batch_losses(batch)
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
        batch_size = batch.size
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
        if self._head_score_batches == 0 or self.network.num_cluster_heads == 1:
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
            rate = {"lr": settings["lr"]} if "lr" in settings else {}  # else the optimiser's default
            params.append({"name": "objective", "params": own, **rate})
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
