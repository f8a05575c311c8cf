"""Features you computed yourself: ``data=features`` with ``data.root=<file>.npy`` or ``.npz``.

The pretrained route's second stage on vectors you already have (a DINOv2 or CLIP embedding
computed elsewhere, a cache from another tool): ``model=features`` puts the clustering heads
straight on them, with no backbone and no images, and every objective that reads one vector per
image trains on them (TEMI, TURTLE, SCAN's clustering step, self-labelling).

Formats, read as data (never unpickled):

- ``.npy``: the features ``(N, D)``, any real dtype (kept as float32);
- ``.npz``: ``features`` ``(N, D)``, optional ``y`` (integer labels ``(N,)``, only scored) and
  optional ``paths`` (``(N,)`` strings: the image each row was computed from, relative to the
  file's folder or absolute). With paths the report shows the images; without them each vector
  is drawn as a small gray square of its values.
- Several representation spaces side by side (TURTLE): ``model.space_dims=[d1, d2]``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from vtcc.data.benchmarks import DatasetNotFoundError
from vtcc.data.folder import decode_image
from vtcc.data.images import BatchedTensors, keep_batch
from vtcc.errors import ConfigError
from vtcc.io.json_records import refuse_interpolation
from vtcc.io.numpy_files import load_npy, load_npz, npz_names
from vtcc.io.reader import UnreadableFile, reader
from vtcc.registry import register

log = logging.getLogger("vtcc")

FEATURE_SUFFIXES = (".npy", ".npz")
FORMAT = ".npy (N, D) or .npz with features (N, D), optional y (N,) and paths (N,)"
THUMBNAIL_SIDE = 32  # px: images read from ``paths`` for the report


@dataclass
class FeatureArrays:
    """``features`` float32 ``(N, D)``; ``labels`` int64 ``(N,)`` (-1: unknown); ``paths`` or None."""

    features: torch.Tensor
    labels: torch.Tensor
    paths: list[Path] | None


def check_features(array: Any, where: str) -> np.ndarray:
    """``array`` as float32 ``(N, D)``: real numbers, finite, at least two rows (one line otherwise)."""
    values = np.asarray(array)
    if values.ndim != 2 or values.dtype.kind not in "fiu" or values.shape[0] < 2 or values.shape[1] < 1:
        raise ConfigError(
            f"{where}: features must be real numbers (N, D) with N >= 2, got {values.dtype} {values.shape}"
        )
    values = values.astype(np.float32)
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise ConfigError(f"{where}: row {row} of the features is not finite (NaN or inf): fix or drop it")
    return values


def check_labels(array: Any, count: int, where: str) -> np.ndarray:
    labels = np.asarray(array)
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise ConfigError(f"{where}: y must be integers ({count},), got {labels.dtype} {labels.shape}")
    return labels.astype(np.int64)


@reader("feature_file")
def read_features(root: str | Path) -> FeatureArrays:
    """The features (and labels, paths) in ``root``, checked; one line naming the file otherwise.
    Read by :mod:`vtcc.io.reader` (regular files only, never unpickled, every declared shape
    checked against the file's size); a listed path holding ``${`` or a NUL is refused."""
    path = Path(root)
    if path.suffix not in FEATURE_SUFFIXES:
        raise ConfigError(f"data.root={path}: give the features as {FORMAT}")
    if not path.exists():
        raise DatasetNotFoundError(f"feature file {path} does not exist: set data.root to {FORMAT}")
    try:
        if path.suffix == ".npy":
            arrays = {"features": load_npy(path)}
        else:
            arrays = load_npz(path, ("features", "y", "paths"))
    except UnreadableFile as error:
        fix = f"give {FORMAT}, saved without pickled objects"
        raise UnreadableFile(error.path, f"is not a readable feature file ({error.reason})", fix) from None
    if "features" not in arrays:
        found = ", ".join(npz_names(path)) or "none"
        raise ConfigError(f"{path} has no array 'features' (found {found}): {FORMAT}")
    features = check_features(arrays["features"], str(path))
    count = len(features)
    labels = check_labels(arrays["y"], count, str(path)) if "y" in arrays else np.full(count, -1)
    paths = None
    if "paths" in arrays:
        listed = np.asarray(arrays["paths"])
        if listed.shape != (count,) or listed.dtype.kind != "U":
            raise ConfigError(f"{path}: paths must be strings ({count},), got {listed.dtype} {listed.shape}")
        refuse_interpolation(listed.tolist(), path, "paths")
        if any("\x00" in p for p in listed.tolist()):
            raise ConfigError(f"{path}: a path in paths holds a NUL character: save the image paths as text")
        paths = [Path(p) if Path(p).is_absolute() else path.parent / p for p in listed.tolist()]
    return FeatureArrays(torch.from_numpy(features), torch.from_numpy(labels), paths)


def render_vectors(features: torch.Tensor) -> torch.Tensor:
    """Each vector as a gray square of its values (uint8 ``(n, 1, s, s)``, ``s = ceil(sqrt(D))``,
    each row scaled to its own range): what the report shows of features without images."""
    count, width = features.shape
    side = math.isqrt(width - 1) + 1
    low = features.min(dim=1, keepdim=True).values
    span = (features.max(dim=1, keepdim=True).values - low).clamp_min(1e-12)
    scaled = ((features - low) / span * 255).round().to(torch.uint8)
    squares = torch.zeros(count, side * side, dtype=torch.uint8)
    squares[:, :width] = scaled
    return squares.reshape(count, 1, side, side)


@register("datamodule", "features", reads_features=True)  # feature vectors, not images
class FeatureDataModule(LightningDataModule):
    """``data=features``: one precomputed feature vector per image. Every image trains and is scored
    (the clustering setting); the heads train on these vectors through
    :class:`vtcc.data.feature_cache.CachedFeatureDataModule`, which takes them as its cache
    (:meth:`precomputed_features`, the :class:`~vtcc.data.images.ClusteringData` protocol's
    optional capability)."""

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        name: str | None = None,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
    ) -> None:
        super().__init__()
        self.root = root
        self.name = name or Path(str(root)).stem
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.arrays: FeatureArrays | None = None
        self.train_indices = self.eval_indices = torch.zeros(0, dtype=torch.long)

    def setup(self, stage: str | None = None) -> None:
        if self.arrays is not None:
            return
        self.arrays = read_features(self.root)
        count = len(self.arrays.features)
        self.train_indices = self.eval_indices = torch.arange(count)
        labels = self.arrays.labels
        if self.num_classes is None and bool((labels >= 0).all()):
            self.num_classes = int(torch.unique(labels).numel())
        pictures = "with the images' paths" if self.arrays.paths is not None else "no image paths"
        log.info("features: %d x %d from %s (%s)", count, self.feature_dim, self.root, pictures)

    def _loaded(self) -> FeatureArrays:
        if self.arrays is None:
            self.setup()
        assert self.arrays is not None
        return self.arrays

    @property
    def feature_dim(self) -> int:
        return int(self._loaded().features.shape[1])

    @property
    def labeled(self) -> bool:
        labels = self._loaded().labels
        return bool(len(labels)) and bool((labels >= 0).all())

    def __len__(self) -> int:
        return len(self._loaded().features)

    def labels_in_order(self) -> torch.Tensor:
        return self._loaded().labels

    def fingerprint(self) -> str:
        arrays = self._loaded()
        digest = hashlib.sha256(arrays.features.numpy().tobytes())
        digest.update(arrays.labels.numpy().tobytes())
        return digest.hexdigest()[:20]

    @property
    def stored_size(self) -> None:
        return None  # no images are held

    @property
    def in_chans(self) -> None:
        return None

    def precomputed_features(self) -> dict[str, torch.Tensor]:
        """:class:`~vtcc.data.images.ClusteringData`'s optional capability, which this datamodule
        has: the cache :class:`~vtcc.data.feature_cache.CachedFeatureDataModule` would extract (no
        augmented views, the features as the evaluation features, the labels), served as it is."""
        arrays = self._loaded()
        features = arrays.features
        return {"views": features.new_empty((0, *features.shape)), "eval": features, "labels": arrays.labels}

    def images_at(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 ``(n, C, s, s)`` pictures for the report: the images at ``paths`` (as 32 px
        squares), else each vector drawn as a gray square of its values."""
        arrays = self._loaded()
        index = torch.as_tensor(indices, dtype=torch.long)
        if arrays.paths is None:
            return render_vectors(arrays.features[index])
        return torch.from_numpy(np.stack([self._picture(arrays.paths[int(i)]) for i in index]))

    @staticmethod
    def _picture(path: Path) -> np.ndarray:
        from PIL import Image

        try:
            return decode_image(path, THUMBNAIL_SIDE, 3, "whole")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            log.warning("the report shows a gray square for %s", error)  # moved, unreadable, not a file
            return np.full((3, THUMBNAIL_SIDE, THUMBNAIL_SIDE), 128, dtype=np.uint8)

    def evaluation_batch(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return batch  # the features are the network's inputs as they are

    def _loader(self, batch_size: int, shuffle: bool) -> DataLoader:
        arrays = self._loaded()
        every = torch.arange(len(arrays.features))
        return DataLoader(
            BatchedTensors(arrays.features, arrays.labels, every),
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=keep_batch,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_batch_size, shuffle=False)


def feature_rows(source: str | Path | Sequence[Any] | np.ndarray) -> np.ndarray:
    """Features to assign with a trained ``model=features`` run: a feature file or an array."""
    if isinstance(source, str | Path):
        return read_features(source).features.numpy()
    return check_features(source, "the features")
