"""What every image datamodule shares, and the one protocol every datamodule a run trains on keeps.

The image datamodules are siblings over :class:`ImageDataModule`: :class:`~vtcc.data.in_memory.
InMemoryDataModule` (decoded once, index-sliced batches), :class:`~vtcc.data.streaming.
StreamingFolderDataModule` (decoded per batch by workers) and :class:`~vtcc.data.shards.
ShardDataModule` (tar shards). Each says where its images come from (its own keywords: ``root``,
``dataset``, ...; ``setup``, ``_dataset``, ``images_at``, ``labels_in_order``, ``fingerprint``);
what does not depend on that arrives as :class:`ImageSettings`, collected from the config's flat
``data.*`` keys in one place (:meth:`ImageDataModule.__init__`), and the base holds what it
builds: the evaluation transform, the loaders, and the device-side augmentation that turns a batch
into a :class:`~vtcc.data.batch.TrainingPair`.

Every datamodule a run trains on keeps the :class:`ClusteringData` protocol: images, feature
vectors (``data=features``) and the datamodules over another one's images (cached features,
neighbour pairs), so evaluation, reports and the K search never ask which kind they hold. Data that
is feature vectors already says so through the protocol's one optional capability,
:meth:`ClusteringData.precomputed_features` (None for everything else).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any, Protocol, runtime_checkable

import torch
from lightning.pytorch import LightningDataModule
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vtcc.data.batch import TrainingPair
from vtcc.data.transforms import EvalTransform, Interpolation
from vtcc.errors import ConfigError

log = logging.getLogger("vtcc")

BUILD_STAGE = "build"  # the setup stage of a datamodule as a run is built, before any trainer


@runtime_checkable
class ClusteringData(Protocol):
    """What a run asks of the data it trains on, whatever kind it is."""

    @property
    def num_classes(self) -> int | None: ...  # the default K (None: not known)

    @property
    def labeled(self) -> bool: ...  # labels exist (they only score)

    def __len__(self) -> int: ...

    def images_at(self, indices: torch.Tensor) -> torch.Tensor: ...  # uint8 (n, C, H, W), for reports

    def setup(self, stage: str | None = None) -> None: ...

    def train_dataloader(self) -> DataLoader: ...

    def val_dataloader(self) -> DataLoader: ...

    def evaluation_batch(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A ``val_dataloader`` batch on its device as the model takes it: ``(inputs, labels,
        indices)``, whatever the trainer is doing (reports, the K search)."""
        ...

    def precomputed_features(self) -> dict[str, torch.Tensor] | None:
        """The one optional capability: data that is feature vectors already (``data=features``)
        returns the cache a frozen backbone's features would fill (``views``, ``eval``,
        ``labels``: see :class:`~vtcc.data.feature_cache.CachedFeatureDataModule`), which is then
        served as it is; every other datamodule returns None (its features are extracted)."""
        ...


@dataclass(frozen=True)
class ImageSettings:
    """What every image datamodule takes beside where its images come from. Configs set these as
    flat keys of the data node (``data.batch_size=128``, ``data.image_size=auto``), as before:
    :meth:`ImageDataModule.__init__` collects them here, and each image datamodule's registration
    (``forwards=ImageSettings``) lets :mod:`vtcc.config.validate` check them against these fields.

    ``train_transform``: two augmented views of a batch (the augment node); ``image_size``,
    ``mean``, ``std`` and ``interpolation``: what the evaluation transform resizes to and
    normalises with (``len(mean)`` channels are what the model takes); ``in_chans``: the images'
    own channels; ``num_classes``: the default K (None: counted from the labels found);
    ``batch_size`` (per process), ``eval_batch_size``, ``num_workers`` and ``pin_memory`` (None: on
    with CUDA): the loaders'.
    """

    train_transform: nn.Module
    image_size: int
    mean: Sequence[float]
    std: Sequence[float]
    in_chans: int
    num_classes: int | None = None
    name: str | None = None
    interpolation: Interpolation = "bilinear"
    batch_size: int = 256
    eval_batch_size: int = 512
    num_workers: int = 0
    pin_memory: bool | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ConfigError(
                f"data.batch_size={self.batch_size}: contrastive training needs at least 2 images a batch"
            )
        for key in ("mean", "std"):
            values = getattr(self, key)
            if isinstance(values, str | bytes) or not isinstance(values, Sequence | torch.Tensor):
                raise ConfigError(f"data.{key}={values!r} must be a list of numbers, one a channel")
            object.__setattr__(self, key, tuple(float(value) for value in values))  # ListConfig: plain
        if len(self.mean) != len(self.std):
            raise ConfigError(
                f"data.mean has {len(self.mean)} value(s) but data.std {len(self.std)}: give one a channel"
            )

    @classmethod
    def collect(cls, owner: str, settings: ImageSettings | None, keys: Mapping[str, Any]) -> ImageSettings:
        """``settings`` (or none) with ``keys`` set: a key that is no field, or a field missing, is
        one line naming it and ``owner`` (the datamodule)."""
        known = [f.name for f in fields(cls)]
        unknown = [key for key in keys if key not in known]
        if unknown:
            raise ConfigError(
                f"data.{unknown[0]} is not a setting of {owner}: remove it, or use its own keys or one "
                f"of {', '.join(known)}"
            )
        if settings is not None:
            return replace(settings, **keys)
        required = [f.name for f in fields(cls) if f.name not in keys and f.default is MISSING]
        if required:
            raise ConfigError(f"{owner} needs data.{required[0]}: set it (or give settings=ImageSettings)")
        return cls(**keys)


class BatchedTensors(Dataset):
    """Tensors indexed together; ``__getitems__`` lets the DataLoader slice a whole batch at once."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int | list[int]) -> tuple[torch.Tensor, ...]:
        if isinstance(index, list):  # a whole batch from a batch-yielding sampler
            return self.__getitems__(index)
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(t[index] for t in self.tensors)


def keep_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Collate for datasets with ``__getitems__``: the batch is already stacked."""
    return batch


class ImageDataModule(LightningDataModule):
    """Images for clustering: every image trains (the clustering setting) and the evaluation split
    is scored. Labels, when present, are used only for metrics; ``num_classes`` is the default
    number of clusters (None: counted from the labels found).

    Batches arrive as ``(uint8 images, labels, indices)``; after transfer a training batch becomes
    two augmented views (``train_transform``, batched on the batch's device) and an evaluation
    batch the evaluation transform of the images.

    A subclass takes its own keywords and hands ``**settings`` on here: the fields of
    :class:`ImageSettings` as keywords (what a config's flat keys give), or ``settings=`` one
    :class:`ImageSettings` (with keywords, those fields replaced). Register it with
    ``forwards=ImageSettings`` so that a config's keys are checked against those fields.
    """

    def __init__(self, settings: ImageSettings | None = None, **keys: Any) -> None:
        super().__init__()
        self.settings = ImageSettings.collect(type(self).__name__, settings, keys)
        self.eval_transform = EvalTransform(
            self.settings.image_size, self.settings.mean, self.settings.std, self.settings.interpolation
        )
        self.num_classes = self.settings.num_classes  # the preset's; else counted in setup
        pin = self.settings.pin_memory
        self.pin_memory = torch.cuda.is_available() if pin is None else pin
        self.train_indices = self.eval_indices = torch.zeros(0, dtype=torch.long)

    # The settings as the rest of vtcc reads them (read-only: the settings are the one record).
    @property
    def train_transform(self) -> nn.Module:
        return self.settings.train_transform

    @property
    def image_size(self) -> int:
        return self.settings.image_size

    @property
    def in_chans(self) -> int:
        return self.settings.in_chans

    @property
    def channels(self) -> int:
        """What the model takes: the normalisation's channels."""
        return len(self.settings.mean)

    @property
    def name(self) -> str | None:  # type: ignore[override]
        return self.settings.name

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.settings.eval_batch_size

    @property
    def num_workers(self) -> int:
        return self.settings.num_workers

    # Where the images come from: each sibling's own.
    def _dataset(self, train: bool) -> Dataset:
        """The training split (``train``) or the evaluation split as ``(images, labels, indices)``."""
        raise NotImplementedError

    def _all_dataset(self) -> Dataset:
        """Every image once, in index order, with its label and global index."""
        raise NotImplementedError

    def images_at(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def labels_in_order(self) -> torch.Tensor:
        """``(N,)`` labels of every image in index order, -1 where unknown."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A short hash that changes when the images do (the feature cache's key)."""
        raise NotImplementedError

    @property
    def stored_size(self) -> int:
        """Side of the squares the images are held or decoded at (crops are taken from these)."""
        raise NotImplementedError

    # Shared by every image datamodule.
    def _take_class_count(self, found: int | None) -> None:
        """K's default: the preset's class count, else the classes found. A preset whose count the
        labels contradict (a partial copy of a benchmark) keeps it, and says so."""
        if self.num_classes is None:
            self.num_classes = found
        elif found is not None and found != self.num_classes:
            log.warning(
                "%s: the labels show %d classes but data.num_classes=%d (the preset's); the run clusters "
                "into %d: set num_clusters=%d to use the classes found",
                self.name or "data",
                found,
                self.num_classes,
                self.num_classes,
                found,
            )

    def _loader(self, dataset: Dataset, **order: Any) -> DataLoader:
        """A loader of already-stacked batches; ``order``: batch size, shuffle, sampler."""
        return DataLoader(
            dataset,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            **order,
        )

    def ordered_dataloader(self, rows: range | None = None) -> DataLoader:
        """All images (train and held-out) in index order, or those of ``rows``, untransformed: for
        feature extraction."""
        images = self._all_dataset()
        if rows is not None:
            images = Subset(images, list(rows))
        return self._loader(images, batch_size=self.eval_batch_size, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(
            self._dataset(train=True), batch_size=self.batch_size, shuffle=True, drop_last=True
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset(train=False), batch_size=self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def _training(self) -> bool:
        return self.trainer is not None and self.trainer.training

    def on_after_batch_transfer(self, batch: tuple, dataloader_idx: int):
        """Training: a :class:`TrainingPair` of two views; evaluation: ``(images, labels, indices)``,
        labels -1 when unknown. The indices let distributed evaluation drop the samples a
        distributed sampler repeats."""
        if not self._training():
            return self.evaluation_batch(batch)
        return self._training_pair(batch)

    def evaluation_batch(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels, indices = batch
        return self.eval_transform(self.model_channels(images)), labels, indices

    def _training_pair(self, batch: tuple) -> TrainingPair:
        """Two views of ``(images, labels, indices)``, with the images' indices."""
        return TrainingPair(*self.train_transform(self.model_channels(batch[0])), index=batch[2])

    def model_channels(self, images: torch.Tensor) -> torch.Tensor:
        """Gray images repeated to RGB when the normalisation (a pretrained model's) has three channels."""
        if images.shape[1] == 1 and self.channels == 3:
            return images.expand(-1, 3, -1, -1)
        return images

    def precomputed_features(self) -> None:
        return None  # images: a backbone computes their features


class DecodedPerBatch(ImageDataModule):
    """Image datamodules that decode their images per batch from files (a folder, tar shards) into
    squares of ``stored_size``, every image scored: the evaluation split is every image in index
    order, which is also what extraction and the report read."""

    _stored_size: int

    @property
    def stored_size(self) -> int:
        return self._stored_size

    def _all_dataset(self) -> Dataset:
        return self._dataset(train=False)

    def images_at(self, indices: torch.Tensor) -> torch.Tensor:
        return self._dataset(train=False).__getitems__(torch.as_tensor(indices).tolist())[0]


class BackboneOverSource(LightningDataModule):
    """A datamodule that serves what a backbone makes of another one's images (cached features,
    neighbour pairs): it answers for the source's size, classes and images."""

    def __init__(self, source: ImageDataModule, backbone: nn.Module, device: str = "auto") -> None:
        super().__init__()
        self.source = source
        self.backbone = backbone
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )

    @property
    def num_classes(self) -> int | None:
        return self.source.num_classes

    @property
    def labeled(self) -> bool:
        return self.source.labeled

    def __len__(self) -> int:
        return len(self.source)

    def images_at(self, indices: torch.Tensor) -> torch.Tensor:
        return self.source.images_at(indices)

    def evaluation_batch(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.source.evaluation_batch(batch)

    def precomputed_features(self) -> None:
        return None  # it serves what the backbone made of its source, not the source's own features
