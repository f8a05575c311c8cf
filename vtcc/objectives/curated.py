"""Fine-tuning a run with a person's decisions (``curation.json``, :mod:`vtcc.curation`): each
training image's curated cluster is its target, so the new run's clusters are the curated ones.

``vtcc-train init_from=<run>/checkpoints/last.ckpt curation=<file>`` selects this objective
(:mod:`vtcc.config.curation_run`, which also sets K to K', the number of final clusters). Before
training, :meth:`CuratedClustering.start_from` runs the source run's network over the evaluation
view of the training images and applies the curation to its probabilities and embeddings, with
the images' paths (so moves and outliers apply). An image's target is its final cluster where that
is certain: every image the person moved, and the others whose source probability of their final
cluster (a merge's clusters summed) is at least ``threshold``; outliers and the rest have none.
The final clusters are numbered 0..K'-1 in the increasing order of their id in the file (a
merge's smallest id, a split's parts, the clusters moves make from K up).

The new network is the source's backbone with cluster heads of K' outputs: their layers the
source's best head's, the rows of the output layer (one per cluster) the mean of the rows of the
source clusters each final cluster is made of (a cluster made only by moves: fresh rows). Training
is SCAN's self-labelling loss with the targets given: the class-balanced cross-entropy of the
strong view's logits (:func:`~vtcc.losses.selflabel.balanced_cross_entropy`). The targets are a
buffer, so a checkpoint keeps them: a resumed run trains on the same ones, and eval and predict
need neither the file nor the source run. Labels are never read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vtcc.curation import Curated, Curation, apply_curation
from vtcc.data.batch import TrainingPair
from vtcc.errors import ConfigError
from vtcc.losses.selflabel import balanced_cross_entropy
from vtcc.models import ClusteringNetwork
from vtcc.objectives.base import ClusteringModule
from vtcc.registry import register

log = logging.getLogger("vtcc")

NO_TARGET = -1  # an image that trains nothing: an outlier, or not certain
FEATURE_BATCH = 1024  # precomputed feature vectors per forward pass of the source network


@register("objective", "curated", target="vtcc.objectives.CuratedClustering")
class CuratedClustering(ClusteringModule):
    """A person's curated clusters as fixed targets (see the module docstring).

    Batches are ``(weak, strong)`` views with the images' indices (``augment=selflabel``; on a
    frozen backbone, the evaluation features twice): the strong view trains, against
    ``targets[index]``. ``train/targeted_fraction`` is the share of the batch's images with a
    target. Data that gives no indices with its batches is refused at the first step.
    """

    needs_source_run = True
    takes_curation = True
    sharp_heads = True  # trained towards one-hot targets, as self-labelling's
    feature_recipe = {"pairing": "eval"}  # frozen backbones: the heads on the evaluation features

    def __init__(
        self,
        network: ClusteringNetwork,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        compile: bool = False,
        num_cluster_heads: int = 1,
        threshold: float = 0.3,
        balance: bool = True,
    ) -> None:
        super().__init__(network, optimizer, scheduler, compile, num_cluster_heads)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
            raise ConfigError(f"module.threshold={threshold!r} must be a number in (0, 1], e.g. 0.3")
        self.threshold, self.balance = float(threshold), balance
        self.register_buffer("targets", torch.zeros(0, dtype=torch.long))  # by image index; -1: none

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """A checkpoint's targets are as long as its data: the buffer takes their length."""
        stored = state_dict.get(f"{prefix}targets")
        if isinstance(stored, torch.Tensor):
            self.targets = torch.empty_like(stored, device=self.targets.device)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def batch_losses(self, batch: TrainingPair) -> dict[str, torch.Tensor]:
        """:meth:`losses` with the targets of the batch's images (by their indices)."""
        if batch.index is None:
            raise ConfigError(
                "objective=curated trains each image towards its target, and this data gives no "
                "image indices with its batches: use image data (data=folder, digits, npz, "
                "folder_streaming, shards) or a frozen backbone's cached features"
            )
        if len(self.targets) == 0:
            raise ConfigError(
                "objective=curated has no targets: start it with init_from=<the curated run's .ckpt> "
                "curation=<curation.json>"
            )
        targets = self.targets[batch.index.to(self.targets.device)]
        return self.losses(batch.first, batch.second, batch.cluster, targets)

    def losses(
        self,
        weak: torch.Tensor,
        strong: torch.Tensor,
        cluster: bool = True,
        targets: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each head's class-balanced cross-entropy of the ``strong`` view against ``targets``
        ``(B,)`` (:data:`NO_TARGET`: the image trains nothing; None: no image does, loss 0)."""
        features = self.network.features(strong)
        if targets is None:
            targets = torch.full((len(features),), NO_TARGET, dtype=torch.long, device=features.device)
        kept = targets != NO_TARGET
        head_losses = torch.stack(
            [
                balanced_cross_entropy(head.logits(features)[kept], targets[kept], self.balance)
                for head in self.network.cluster_heads
            ]
        )
        return {
            "loss": head_losses.mean(),
            "head_losses": head_losses,
            "targeted_fraction": kept.float().mean(),
        }

    @torch.no_grad()
    def start_from(self, source: ClusteringNetwork, data: Any, curation: Curation) -> None:
        """The targets and the network from the run the person curated: ``source`` (its network,
        with its weights) on the training images of ``data`` (set up), with ``curation``."""
        rows = torch.as_tensor(data.train_indices, dtype=torch.long)
        paths = training_paths(data, rows, curation)  # data without paths is refused before the pass
        probabilities, embeddings = source_outputs(source, data, rows)
        curated = apply_curation(curation, probabilities, embeddings, paths)
        final = curation.final_clusters(source.num_clusters)
        if len(final) != self.network.num_clusters:  # resolve set K' from the same file
            raise ConfigError(f"{curation.where} changed while the run started: start it again")
        targets = torch.full((len(data),), NO_TARGET, dtype=torch.long)
        targets[rows] = torch.from_numpy(curated_targets(curated, final, self.threshold, curation.where))
        self.targets = targets.to(self.targets.device)
        carry_network(self.network, source, curation.owners(source.num_clusters), final)


def evaluation_inputs(data: Any, rows: torch.Tensor) -> Iterator[torch.Tensor]:
    """The network's inputs for the evaluation view of ``data``'s images at ``rows``, in order."""
    precomputed = data.precomputed_features()
    if precomputed is not None:  # data=features: the vectors are the inputs
        yield from precomputed["eval"][rows].float().split(FEATURE_BATCH)
        return
    if not callable(getattr(data, "ordered_dataloader", None)):
        raise ConfigError(
            f"objective=curated reads the training images in order, which {type(data).__name__} "
            "does not give: use image data (data=folder, digits, npz, folder_streaming, shards)"
        )
    for batch in data.ordered_dataloader(rows.tolist()):
        yield data.evaluation_batch(batch)[0]


def source_outputs(
    network: ClusteringNetwork, data: Any, rows: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """The source network's probabilities (its best head) and embeddings, as ``vtcc-predict``
    gives them, of the evaluation view of ``data``'s images at ``rows``."""
    # each process of a multi-GPU run on its own device (the trainer has not set it yet)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else None
    device = device or torch.device("cpu")
    network.to(device).eval()
    probabilities, embeddings = [], []
    for inputs in evaluation_inputs(data, rows):
        z, p = network.embed_and_assign(inputs.to(device))
        probabilities.append(p.float().cpu())
        embeddings.append(z.float().cpu())
    network.cpu()
    return torch.cat(probabilities).numpy(), torch.cat(embeddings).numpy()


def training_paths(data: Any, rows: torch.Tensor, curation: Curation) -> list[str] | None:
    """The paths of ``data``'s images at ``rows`` (what a curation's moves and outliers name);
    None for data without paths, where a curation that names images is refused."""
    paths = data.image_paths() if callable(getattr(data, "image_paths", None)) else None
    if paths is not None:
        return [str(paths[i]) for i in rows.tolist()]
    if curation.moves or curation.outliers:
        raise ConfigError(
            f"{curation.where} moves or sets aside images by their path and this run's data has no "
            "image paths: train on the images as a folder (data=folder), or drop its moves and outliers"
        )
    return None


def curated_targets(curated: Curated, final: list[int], threshold: float, where: str) -> np.ndarray:
    """Each image's target: the place of its final cluster in ``final`` where it is certain
    (moved by the person, or its source probability of that cluster at least ``threshold``) and
    not an outlier, else :data:`NO_TARGET`."""
    place = {k: i for i, k in enumerate(final)}
    compact = np.asarray([place[k] for k in curated.clusters.tolist()], dtype=np.int64)
    moved = np.zeros(len(compact), dtype=bool) if curated.moved is None else curated.moved
    confident = curated.confidence >= threshold
    certain = (moved | confident) & ~curated.outlier
    if not certain.any():
        raise ConfigError(
            f"{where}: no training image is certain of its curated cluster (source probability at "
            f"least {threshold}, or moved): lower module.threshold (e.g. 0.1)"
        )
    log.info(
        "%s: %d clusters; targets for %d of %d training images (%d moved, %d certain, %d set aside, "
        "%d below the threshold %.2f)",
        where,
        len(final),
        int(certain.sum()),
        len(compact),
        int((moved & ~curated.outlier).sum()),
        int((confident & ~moved & ~curated.outlier).sum()),
        int(curated.outlier.sum()),
        int((~moved & ~confident & ~curated.outlier).sum()),
        threshold,
    )
    return np.where(certain, compact, NO_TARGET)


def carry_network(
    network: ClusteringNetwork, source: ClusteringNetwork, owners: dict[int, list[int]], final: list[int]
) -> None:
    """``source``'s weights into ``network``: its backbone as it is (no instance projector), and
    each cluster head from the source's best head (:func:`carry_head`)."""
    skipped = ("cluster_heads.", "instance_projector.", "best_head")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(skipped)}
    missing, unexpected = network.load_state_dict(state, strict=False)
    left = [k for k in missing if not k.startswith(skipped)] + list(unexpected)
    if left:
        raise ConfigError(
            f"init_from's network does not fit this model ({left[0]}): drop the model overrides"
        )
    mixing = torch.zeros(len(final), source.num_clusters)
    for row, cluster in enumerate(final):
        made_of = owners.get(cluster, [])
        mixing[row, made_of] = 1.0 / max(1, len(made_of))
    rows = network.per_cluster_keys()
    for head in network.cluster_heads:
        carry_head(head, source.cluster_projector, mixing, rows)
    network.best_head.zero_()


def carry_head(head: nn.Module, source: nn.Module, mixing: torch.Tensor, rows: set[str]) -> None:
    """``source``'s weights into ``head``: the entries of ``rows`` (one row per cluster) mixed by
    ``mixing`` ``(K', K)`` (a final cluster without source clusters keeps its fresh rows), the
    others as they are."""
    state, old = head.state_dict(), source.state_dict()
    made = mixing.sum(dim=1) > 0
    for key, value in state.items():
        if key not in rows:
            state[key] = old[key]
            continue
        mixed = (mixing.to(old[key]) @ old[key].reshape(len(old[key]), -1)).reshape(value.shape)
        state[key] = torch.where(made.view(-1, *[1] * (value.dim() - 1)).to(value.device), mixed, value)
    head.load_state_dict(state)
