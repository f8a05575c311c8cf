"""Datasets held in memory as uint8 tensors: decoded once, batches index-sliced.

Batches are index-sliced (no per-image Python work) and augmented on their device after
transfer, so the input pipeline keeps up with the model on a laptop CPU and on a GPU.
``augment_on="workers"`` instead augments image by image in the DataLoader's workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from vtcc.data.batch import TrainingPair
from vtcc.data.datasets import ImageArrays
from vtcc.data.images import BatchedTensors, ImageDataModule, ImageSettings
from vtcc.data.samplers import PoolsInSequence
from vtcc.errors import ConfigError
from vtcc.registry import register


class AugmentedInWorkers(BatchedTensors):
    """Training batches ``(view_a, view_b, labels, indices)`` augmented image by image where the
    batch is assembled (in the DataLoader's worker processes when ``num_workers > 0``)."""

    def __init__(
        self, augment: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], *tensors
    ) -> None:
        super().__init__(*tensors)
        self.augment = augment

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        images, *rest = super().__getitems__(indices)
        return (*self.augment(images), *rest)


@register(
    "datamodule",
    "in_memory",
    target="vtcc.data.InMemoryDataModule",
    auto=("image_size", "in_chans", "mean", "std"),  # from the images (vtcc.config.data_defaults)
    forwards=ImageSettings,  # **settings: the keys every image datamodule shares
)
class InMemoryDataModule(ImageDataModule):
    """A dataset decoded once into memory (``dataset``: a loader returning :class:`ImageArrays`).

    ``root`` and ``download`` are handed to the loader when given. Beyond the shared settings
    (``**settings``: :class:`~vtcc.data.images.ImageSettings`): ``eval_split=test`` scores a
    dataset's test split only; ``augment_on=workers`` augments image by image in the loader's workers;
    ``unlabeled_training=instance_phase`` is Contrastive Clustering's STL-10 protocol.
    """

    def __init__(
        self,
        dataset: Callable[[], ImageArrays],
        root: str | None = None,
        download: bool = False,
        eval_split: Literal["all", "test"] = "all",
        augment_on: Literal["device", "workers"] = "device",
        unlabeled_training: Literal["joint", "instance_phase"] = "joint",
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        self.load_arrays = dataset
        if eval_split not in ("all", "test"):
            raise ConfigError(f"data.eval_split={eval_split!r} is unknown: use all (train + test) or test")
        self.eval_split = eval_split
        if augment_on not in ("device", "workers"):
            raise ConfigError(f"data.augment_on={augment_on!r} is unknown: use device or workers")
        self.augment_on = augment_on
        if unlabeled_training not in ("joint", "instance_phase"):
            raise ConfigError(
                f"data.unlabeled_training={unlabeled_training!r} is unknown: use joint or instance_phase"
            )
        self.unlabeled_training = unlabeled_training
        self.loader_kwargs = {k: v for k, v in (("root", root), ("download", download)) if v}
        self.arrays: ImageArrays | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.arrays is not None:
            return
        arrays = self.load_arrays(**self.loader_kwargs)
        if arrays.images.shape[1] != self.in_chans:
            raise ConfigError(
                f"{arrays.name} has {arrays.images.shape[1]} channel(s) but data.in_chans={self.in_chans}"
            )
        everything = torch.arange(len(arrays))
        self.train_indices = self.eval_indices = everything
        if self.eval_split == "test":
            if arrays.is_test is None:
                raise ConfigError(f"{arrays.name} has no test split: use data.eval_split=all")
            self.train_indices, self.eval_indices = everything[~arrays.is_test], everything[arrays.is_test]
        if self.unlabeled_training == "instance_phase":
            self._split_unlabeled_pool(arrays)
        if len(self.train_indices) < self.batch_size:  # drop_last would leave no training batch
            raise ConfigError(
                f"the training split of {arrays.name} has {len(self.train_indices)} images, fewer than "
                f"data.batch_size={self.batch_size}: lower the batch size"
            )
        self.arrays = arrays  # only once every check passed: a failed setup is not half done
        self._take_class_count(arrays.num_classes)

    def _split_unlabeled_pool(self, arrays: ImageArrays) -> None:
        """Contrastive Clustering's STL-10 protocol: the images without a label (the unlabelled split)
        train the instance loss only and are never evaluated; the others are the clustering set."""
        if arrays.labels is None or not bool((arrays.labels < 0).any()):
            raise ConfigError(
                "data.unlabeled_training=instance_phase needs an unlabelled split: "
                "add data.dataset.include_unlabeled=true (STL-10)"
            )
        if self.eval_split != "all":
            raise ConfigError(
                "data.unlabeled_training=instance_phase evaluates on train + test: use eval_split=all"
            )
        unlabeled = arrays.labels < 0
        everything = torch.arange(len(arrays))
        self.pools = [everything[unlabeled], everything[~unlabeled]]
        self.eval_indices = everything[~unlabeled]

    @property
    def labeled(self) -> bool:
        return self.arrays is not None and self.arrays.labels is not None

    def __len__(self) -> int:
        return len(self.arrays) if self.arrays is not None else 0

    @property
    def stored_size(self) -> int:
        assert self.arrays is not None
        return int(self.arrays.images.shape[-1])

    def images_at(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 ``(len(indices), C, H, W)`` images as loaded (for reports)."""
        assert self.arrays is not None
        return self.arrays.images[indices]

    def image_paths(self) -> list[str] | None:
        """Each image's file (by dataset index), where the loader read files (the report's curation)."""
        return None if self.arrays is None else self.arrays.paths

    def labels_in_order(self) -> torch.Tensor:
        assert self.arrays is not None
        if self.arrays.labels is not None:
            return self.arrays.labels
        return torch.full((len(self.arrays),), -1, dtype=torch.long)

    def _subset(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at ``index``; no copy when that is the whole dataset."""
        if len(index) == len(self.arrays):
            return self.arrays.images, self.labels_in_order()
        return self.arrays.images[index], self.labels_in_order()[index]

    def _dataset(self, train: bool) -> Dataset:
        assert self.arrays is not None, "call setup() first"
        index = self.train_indices if train else self.eval_indices  # the held-out split, or everything
        if train and self.augment_on == "workers":
            return AugmentedInWorkers(self._augment_per_image, *self._subset(index), index)
        return BatchedTensors(*self._subset(index), index)

    def _all_dataset(self) -> Dataset:
        assert self.arrays is not None, "call setup() first"
        everything = torch.arange(len(self.arrays))
        return BatchedTensors(*self._subset(everything), everything)

    def fingerprint(self) -> str:
        """A hash of the decoded images and labels: a folder that gained, lost or changed an image
        gets another one."""
        assert self.arrays is not None, "call setup() first"
        digest = hashlib.sha256()
        digest.update(self.arrays.images.contiguous().numpy().data)
        digest.update(self.labels_in_order().numpy().tobytes())
        return digest.hexdigest()[:20]

    def _augment_per_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train_transform.per_image(self.model_channels(images))

    def train_dataloader(self) -> DataLoader:
        if self.unlabeled_training == "instance_phase":
            return self._pooled_loader()
        return super().train_dataloader()

    def _pooled_loader(self) -> DataLoader:
        """Each epoch: all unlabelled-pool batches, then all clustering-set batches."""
        dataset = self._dataset(train=True)
        trainer = self.trainer
        sampler = PoolsInSequence(
            dataset,
            self.pools,
            self.batch_size,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            seed=torch.initial_seed() % 2**31,
        )
        return self._loader(dataset, sampler=sampler, batch_size=None)

    def on_before_batch_transfer(self, batch: tuple[torch.Tensor, ...], dataloader_idx: int):
        """Under ``instance_phase`` a training batch also says, as a Python bool decided on the host
        (no device sync), whether it is a clustering-set batch (cluster loss) or an unlabelled one."""
        if self.unlabeled_training == "instance_phase" and self._training():
            return (*batch, bool((batch[-2] >= 0).all()))
        return batch

    def _training_pair(self, batch: tuple) -> TrainingPair:
        """Two views (augmented in the workers already under ``augment_on=workers``) and the
        images' indices, with the cluster flag under ``instance_phase``."""
        if self.augment_on == "workers":  # (view_a, view_b, labels, indices[, cluster])
            (view_a, view_b), index = batch[:2], batch[3]
        else:  # (images, labels, indices[, cluster])
            (view_a, view_b), index = self.train_transform(self.model_channels(batch[0])), batch[2]
        if self.unlabeled_training == "instance_phase":
            return TrainingPair(view_a, view_b, cluster=batch[-1], index=index)
        return TrainingPair(view_a, view_b, index=index)
