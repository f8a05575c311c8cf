"""Frozen-backbone mode: backbone features of several augmented views, computed once and cached.

The heads then train on pairs of cached views (or, for SCAN, a view and a neighbour's view),
which takes seconds an epoch on a CPU instead of a backbone pass per step. The cache's key and
the reading of its file: :mod:`vtcc.data.cache_files`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from vtcc.config.types import DEVICE
from vtcc.data.batch import TrainingPair
from vtcc.data.cache_files import CACHE_FORMAT, read_vtcc_cache
from vtcc.data.feature_store import FeatureStore
from vtcc.data.images import BUILD_STAGE, BackboneOverSource, BatchedTensors, ImageDataModule, keep_batch
from vtcc.data.pairings import PAIRINGS, pairing_for
from vtcc.data.samplers import IndependentBatches
from vtcc.errors import ConfigError
from vtcc.io.writer import Writer
from vtcc.knn import nearest_neighbors
from vtcc.models.spaces import normalize_each_space
from vtcc.registry import register
from vtcc.utils.dist import agree, rank_and_count
from vtcc.utils.progress import Progress

log = logging.getLogger("vtcc")


@register(
    "feature_cache",
    "cached",
    aliases=("vtcc.data.features.CachedFeatureDataModule",),  # its module before feature_cache.py
    # num_views, store: from the device and the data (vtcc.config.resolve); the others from the
    # objective's recipe (its class's feature_recipe, vtcc.config.recipe)
    auto=("num_views", "store", "pairing", "num_neighbors", "sampling", "batch_size", "steps_per_epoch"),
    extra_keys={"cache": bool},  # whether the features node is used at all
    types={"pairing": Literal[PAIRINGS], "device": DEVICE},
)
class CachedFeatureDataModule(BackboneOverSource):
    """Wraps an image datamodule; serves ``(view_a, view_b)`` features ``(B, D)`` for training and
    ``(features, labels, indices)`` of the evaluation transform for evaluation.

    ``num_views`` augmented views per image (even: each augmentation pass yields two), stored in
    ``cache_dir/<key>.pt``. ``pairing``: ``views`` (two views of an image), ``neighbors`` (a view of
    an image and a view of one of its ``num_neighbors`` nearest neighbours), or ``weak_strong`` (the
    first and second view of one augmentation pass, as self-labelling's ``augment=selflabel`` makes),
    ``eval`` (the evaluation features twice: self-labelling a frozen backbone's heads on the
    features they are evaluated on), or ``eval_neighbors`` (the evaluation features of an image and
    of one of its neighbours: TEMI's precomputed embeddings). The ``eval*`` pairings extract no
    augmented view (``num_views`` is 0).

    ``sampling``: ``epoch`` (every training image once per epoch, in shuffled disjoint batches) or
    ``independent`` (TURTLE's: each batch drawn afresh without replacement, ``steps_per_epoch`` of
    them an epoch; default as many as an epoch of disjoint batches). A ``batch_size`` larger than
    the training split is the whole split (TURTLE's ``min(10000, N)``).
    """

    def __init__(
        self,
        source: ImageDataModule,
        backbone: nn.Module,
        key: str,
        cache_dir: str,
        num_views: int = 10,
        pairing: str = "views",
        num_neighbors: int = 20,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        extract_batch_size: int = 256,
        device: str = "auto",
        sampling: Literal["epoch", "independent"] = "epoch",
        steps_per_epoch: int | None = None,
        neighbor_spaces: list[int] | None = None,
        neighbor_search: Literal["auto", "exact", "faiss"] = "auto",
        store: Literal["memory", "mapped"] = "memory",
        part_size: int = 4096,
        seed: int | None = 0,
    ) -> None:
        super().__init__(source, backbone, device)
        if store not in ("memory", "mapped"):
            raise ConfigError(f"features.store={store!r} is unknown: use memory or mapped")
        if part_size < 1:
            raise ConfigError(f"features.part_size={part_size}: give at least 1 image a part")
        self.store, self.part_size, self.seed = store, part_size, seed
        if sampling not in ("epoch", "independent"):
            raise ConfigError(f"features.sampling={sampling!r} is unknown: use epoch or independent")
        if steps_per_epoch is not None and (sampling != "independent" or steps_per_epoch < 1):
            raise ConfigError(
                f"features.steps_per_epoch={steps_per_epoch}: give an integer >= 1, with "
                "features.sampling=independent"
            )
        self.sampling = sampling
        self.steps_per_epoch = steps_per_epoch
        # mine neighbours with each of these spaces L2-normalised (Hydra hands a list on as a ListConfig)
        self.neighbor_spaces = [int(d) for d in neighbor_spaces] if neighbor_spaces else None
        self.pairing = pairing_for(pairing)
        if not self.pairing.uses_views:
            num_views = 0
        elif num_views < 2 or num_views % 2:
            raise ConfigError(f"features.num_views={num_views} must be an even number >= 2")
        self.path = Path(cache_dir) / f"{key}.pt"
        self.num_views = num_views
        self.num_neighbors = num_neighbors
        self.neighbor_search = neighbor_search
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.extract_batch_size = extract_batch_size
        self.cache: dict[str, torch.Tensor] | None = None
        self.computed = False  # True when this instance extracted the features instead of loading them

    def setup(self, stage: str | None = None) -> None:
        if self.cache is not None:
            return
        self.source.setup(stage)
        precomputed = self.source.precomputed_features()
        if precomputed is not None:  # data=features: the file is the cache
            self._take(precomputed)
            return
        if self.store == "mapped":
            if stage == BUILD_STAGE:  # built before the trainer: the processes of a distributed run
                return  # are not up yet; Lightning's setup extracts (each process its own parts)
            self._take(self._mapped())
            return
        cache = read_vtcc_cache(self.path)  # refuses a file vtcc did not write, before any work
        if cache is not None and not self._matches_source(cache):
            log.warning("cached features in %s do not match the data: extracting them again", self.path)
            cache = None
        if cache is not None:
            log.info("features loaded from %s", self.path)
        else:
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # a cache hit or miss leaves the same RNG
                cache = self.extract()  # for training: the same run either way (exact resume too)
            self.computed = True
            self._save(cache)
        self._take(cache)

    def _take(self, cache: dict[str, torch.Tensor]) -> None:
        if len(cache["views"]) < self.num_views:
            raise ConfigError(
                f"features.num_views={self.num_views} but the features hold {len(cache['views'])} "
                "augmented views: pick a pairing of one vector per image (eval, eval_neighbors)"
            )
        self.cache = cache
        self.train_indices = self.source.train_indices
        self.eval_indices = self.source.eval_indices
        if self.pairing.uses_neighbors:
            self.cache["neighbors"] = self._training_neighbors()

    def _matches_source(self, cache: dict[str, torch.Tensor]) -> bool:
        """The cache holds views, and one row per source image with the source's labels."""
        if not all(isinstance(cache.get(k), torch.Tensor) for k in ("views", "eval", "labels")):
            return False
        if len(cache["eval"]) != len(self.source) or len(cache["labels"]) != len(self.source):
            return False
        return torch.equal(cache["labels"], self.source.labels_in_order())

    def _save(self, cache: dict[str, torch.Tensor]) -> None:
        """Through the cache folder's :class:`~vtcc.io.writer.Writer`: a new file, renamed (a failed
        write leaves no temporary file and the previous cache whole; concurrent processes never read
        a partial file). Replaces only a cache vtcc wrote: a file that appeared at the path meanwhile
        is refused, a link there is replaced, never written through."""
        writer = Writer(self.path.parent)
        if read_vtcc_cache(self.path, mmap=True) is not None:  # mmap: the marker, not the tensors
            writer.adopt(self.path)  # a cache of a vtcc that kept no record of its files
        with writer.open(self.path) as handle:
            torch.save({**cache, "format": CACHE_FORMAT}, handle)
        log.info("features cached in %s", self.path)

    def _training_neighbors(self) -> torch.Tensor:
        """``(N, k)`` global indices of each training image's nearest training images (-1 elsewhere):
        neighbours never come from the held-out split."""
        train = self.train_indices
        progress = Progress(f"mining {self.num_neighbors} nearest neighbours", len(train), "images")
        neighbors = torch.full((len(self.cache["eval"]), self.num_neighbors), -1, dtype=torch.long)
        features = self.cache["eval"][train].float()
        if self.neighbor_spaces:  # as the network reads them
            features = normalize_each_space(features, self.neighbor_spaces)
        neighbors[train] = train[
            nearest_neighbors(
                features, self.num_neighbors, backend=self.neighbor_search, device=self.device.type
            )
        ]
        progress.advance(len(train))
        return neighbors

    def _mapped(self) -> dict[str, torch.Tensor]:
        """The memory-mapped store (:mod:`vtcc.data.feature_store`): each process extracts the
        parts that are its own and not yet done, then every process opens the whole store. A
        failure in any process stops every process with its line (none waits at a barrier)."""
        rank, world = rank_and_count()
        store = FeatureStore(self.path.with_suffix(".mm"))
        dim = int(self.backbone.num_features)
        layout = FeatureStore.layout(len(self.source), dim, self.num_views, self.part_size)
        failure = None
        try:
            if rank == 0:
                store.create_if_absent(layout)  # a folder vtcc did not write is refused, before any work
        except Exception as error:  # noqa: BLE001 - every process hears of it (agree)
            failure = error
        agree(failure)
        try:
            meta = store.meta()
            if meta is None:
                raise ConfigError(
                    f"feature store {store.folder} is not visible to process {rank}: put "
                    "features.cache_dir on a file system every node shares"
                )
            if any(meta[k] != layout[k] for k in ("count", "dim", "views")):
                raise ConfigError(
                    f"feature store {store.folder} holds {meta['count']} x {meta['dim']} features with "
                    f"{meta['views']} views, not this data's: move it away or set features.cache_dir"
                )
            todo = [
                part for part in range(meta["parts"]) if part % world == rank and part not in store.done()
            ]
            if todo:
                log.info(
                    "feature store %s: extracting %d of its %d parts", store.folder, len(todo), meta["parts"]
                )
            for part in todo:
                rows = store.rows(part, meta)
                devices = [self.device] if self.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):  # each part's views: their own seed
                    torch.manual_seed((self.seed or 0) * 1_000_003 + part)
                    extracted = self.extract(self.source.ordered_dataloader(rows), len(rows))
                store.write(part, meta, extracted["eval"], extracted["views"], extracted["labels"])
            self.computed = bool(todo)
        except Exception as error:  # noqa: BLE001 - every process hears of it (agree)
            failure = error
        agree(failure)
        cache = store.open()
        if (
            not torch.equal(cache["labels"], self.source.labels_in_order())
            or len(store.done()) < meta["parts"]
        ):
            raise ConfigError(
                f"feature store {store.folder} does not match the data (labels, or parts not done): "
                "move it away or set features.cache_dir to another folder"
            )
        log.info("features memory-mapped from %s (float16)", store.folder)
        return cache

    @torch.no_grad()
    def extract(self, loader: Any = None, count: int | None = None) -> dict[str, torch.Tensor]:
        """``views``: ``(V, N, D)``; ``eval``: ``(N, D)``; ``labels``: ``(N,)``: every image of the
        source (train and held-out) in its global index order, or the ``count`` images of
        ``loader`` (a part of them, in order)."""
        device = self.device
        if device.type == "cuda" and device.index is None:  # under DDP: this process's own GPU
            device = torch.device("cuda", torch.cuda.current_device())
        backbone = self.backbone.to(device).eval()
        train_transform = self.source.train_transform.to(device)
        eval_transform = self.source.eval_transform.to(device)
        views = [[] for _ in range(self.num_views)]
        evaluated, labels = [], []
        total = len(self.source) if count is None else count
        progress = Progress("feature extraction", total, "images")
        start = time.perf_counter()
        for images, batch_labels, _ in loader or self.source.ordered_dataloader():  # in memory or streamed
            images = self.source.model_channels(images.to(device))
            if not evaluated and count is None:
                self._announce_cost(backbone, eval_transform(images[:1]))
            evaluated.append(backbone(eval_transform(images)).float().cpu())
            labels.append(batch_labels)
            for pair in range(self.num_views // 2):
                view_a, view_b = train_transform(images)
                views[2 * pair].append(backbone(view_a).float().cpu())
                views[2 * pair + 1].append(backbone(view_b).float().cpu())
            if len(evaluated) == 1 and count is None:
                self._announce_time(len(images), time.perf_counter() - start)
            progress.advance(len(images))
        evaluated = torch.cat(evaluated)
        no_views = evaluated.new_empty((0, *evaluated.shape))  # the eval* pairings
        return {
            "views": torch.stack([torch.cat(v) for v in views]) if views else no_views,
            "eval": evaluated,
            "labels": torch.cat(labels),
        }

    def _announce_cost(self, backbone: nn.Module, image: torch.Tensor) -> None:
        """The work up front: images x forward passes (views + the evaluation view) x model FLOPs."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            backbone(image)
        self._flops = counter.get_total_flops()
        forwards = len(self.source) * (self.num_views + 1)
        log.info(
            "feature extraction: %d images x %d views (+1 evaluation view) x %.3g GFLOP = %.3g TFLOP on %s",
            len(self.source),
            self.num_views,
            self._flops / 1e9,
            forwards * self._flops / 1e12,
            self.device,
        )

    def _announce_time(self, images: int, seconds: float) -> None:
        total = len(self.source) / max(images, 1) * seconds
        log.info(
            "feature extraction: about %.1f min at the measured %.0f images/s (x %d views)%s",
            total / 60,
            images / max(seconds, 1e-9),
            self.num_views + 1,
            "; fewer views on a CPU: features.num_views=2"
            if self.device.type == "cpu" and total > 300
            else "",
        )

    def train_dataloader(self) -> DataLoader:
        assert self.cache is not None
        images = BatchedTensors(self.train_indices)  # global indices of the training split
        batch = min(self.batch_size, len(images))
        if self.sampling == "independent":
            steps = self.steps_per_epoch or max(1, len(images) // batch)
            return DataLoader(
                images,
                batch_sampler=IndependentBatches(len(images), batch, steps),
                collate_fn=self.training_pairs,
            )
        return DataLoader(
            images, batch_size=batch, shuffle=True, drop_last=True, collate_fn=self.training_pairs
        )

    def training_pairs(self, batch: tuple[torch.Tensor]) -> TrainingPair:
        """The pair ``features.pairing`` draws for a batch of image indices (:mod:`vtcc.data.pairings`)."""
        (index,) = batch
        pair = self.pairing.pair(self.cache, index, self._random_neighbor)
        first, second = pair.first.float(), pair.second.float()  # a mapped store holds float16
        return TrainingPair(first, second, pair.cluster, index=index)

    def _random_neighbor(self, index: torch.Tensor) -> torch.Tensor:
        """One of each image's ``num_neighbors`` nearest training images, drawn uniformly."""
        neighbors = self.cache["neighbors"][index]
        return neighbors[torch.arange(len(index)), torch.randint(neighbors.shape[1], (len(index),))]

    def training_features(self) -> torch.Tensor:
        """The evaluation-view features ``(N_train, D)`` of the training images."""
        assert self.cache is not None
        return self.cache["eval"][self.train_indices].float()

    def evaluation_batch(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cached evaluation features are the network's inputs as they are (in float32)."""
        features, labels, indices = batch
        return features.float(), labels, indices

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Evaluation batches in float32 (a mapped store holds float16); training pairs already are."""
        return batch if isinstance(batch, TrainingPair) else self.evaluation_batch(batch)

    def val_dataloader(self) -> DataLoader:
        assert self.cache is not None
        index = self.eval_indices  # the held-out split, or everything; global indices for the report
        features, labels = self.cache["eval"], self.cache["labels"]
        if not torch.equal(index, torch.arange(len(features))):  # a split: its rows (else read in place)
            features, labels = features[index], labels[index]
        return DataLoader(
            BatchedTensors(features, labels, index),
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=keep_batch,
        )
