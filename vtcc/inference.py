"""A trained run applied to new images: its checkpoint, its preprocessing, its network.

``vtcc-predict`` and :class:`vtcc.Clusterer` both assign images through :class:`Assigner`, so a
folder, a list of paths and an array get the clusters, probabilities and embeddings that the run
itself gives them: files are decoded as the run held its images (size, channels, fit), arrays
are taken as the ``npz`` loader takes them, then the run's evaluation transform.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vtcc import registry
from vtcc.build import restore_run
from vtcc.data.feature_file import check_features
from vtcc.data.folder import decode_image
from vtcc.data.transforms import EvalTransform
from vtcc.errors import ConfigError
from vtcc.io.reader import UnreadableFile


@dataclass
class Assignments:
    """``probabilities`` ``(N, K)``, ``embeddings`` ``(N, D)`` (what the run's map and report use:
    the instance vectors where the objective trains them, else the L2-normalised backbone
    features), both float32, rows in input order."""

    probabilities: np.ndarray
    embeddings: np.ndarray

    @property
    def clusters(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """The largest cluster probability of each image."""
        return self.probabilities.max(axis=1)


def pick_device(name: str = "auto") -> torch.device:
    return torch.device(name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


def array_images(array: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, C)`` as ``(N, C, H, W)``, as ``data=npz`` reads ``x``."""
    array = np.asarray(array)
    if (
        array.dtype != np.uint8
        or array.ndim not in (3, 4)
        or (array.ndim == 4 and array.shape[3] not in (1, 3))
    ):
        raise ConfigError(
            f"images as an array must be uint8 (N, H, W) or (N, H, W, C) with C 1 or 3, got {array.dtype} "
            f"{array.shape}: convert with (x * 255).round().astype('uint8') for pixels in [0, 1]"
        )
    images = array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(images))


class Assigner:
    """A run's checkpoint, ready to assign images (on ``device``, evaluation mode); a run on
    precomputed features (``data=features``, :attr:`reads_features`) assigns feature vectors."""

    def __init__(self, ckpt_path: str | Path, cache_dir: str | None = None, device: str = "auto") -> None:
        self.run_cfg, module = restore_run(ckpt_path, cache_dir=cache_dir)
        self.device = pick_device(device)
        self.network = module.network.to(self.device).eval()
        data = self.run_cfg.data
        self.reads_features = registry.builds(data, "datamodule", reads_features=True)
        if self.reads_features:
            self.num_features = int(self.run_cfg.model.num_features)
            return
        self.transform = EvalTransform(
            data.image_size, data.mean, data.std, data.get("interpolation", "bilinear")
        ).to(self.device)
        record = self.run_cfg.get("preprocessing") or {}
        self.stored_size = int(record.get("stored_size") or data.image_size)
        self.in_chans = int(record.get("in_chans") or data.get("in_chans", len(data.mean)))
        folder = data.get("dataset") if "fit" in (data.get("dataset") or {}) else data
        self.fit = folder.get("fit", "whole")
        self.model_channels = len(data.mean)

    @property
    def num_clusters(self) -> int:
        return int(self.network.num_clusters)

    @property
    def cluster_names(self) -> dict[int, str]:
        """The clusters' names of a run trained with a curation (``curated.names``; none otherwise)."""
        names = (self.run_cfg.get("curated") or {}).get("names") or []
        return {k: str(name) for k, name in enumerate(names) if name}

    def _images_only(self) -> None:
        if self.reads_features:
            raise ConfigError(
                "this run clusters feature vectors (data=features): give a .npy or .npz feature file "
                "or an array (N, D), not images"
            )

    def decoded(self, paths: Sequence[Path], batch_size: int) -> Iterator[torch.Tensor]:
        """Files decoded as the run held its images, a batch at a time."""
        self._images_only()
        for start in range(0, len(paths), batch_size):
            yield torch.from_numpy(
                np.stack([self._decode(path) for path in paths[start : start + batch_size]])
            )

    def _decode(self, path: Path) -> np.ndarray:
        try:
            return decode_image(path, self.stored_size, self.in_chans, self.fit)
        except UnreadableFile as error:  # not a regular file, a bomb, a truncated or malformed image
            raise UnreadableFile(path, error.reason, "fix or remove it") from None

    def batches(self, images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 ``(N, C, H, W)`` images of the run's kind, a batch at a time."""
        self._images_only()
        channels = images.shape[1]
        if channels != self.in_chans and not (channels == 1 and self.model_channels == 3):
            raise ConfigError(
                f"the images have {channels} channel(s) and the run was trained on {self.in_chans}: "
                "give images of the run's kind"
            )
        yield from images.split(batch_size)

    @torch.no_grad()
    def assign(self, batches: Iterable[torch.Tensor], total: int | None = None) -> Assignments:
        """Probabilities and embeddings of uint8 ``(B, C, H, W)`` batches (feature batches ``(B, D)``
        for a run on features)."""
        probabilities, embeddings = [], []
        for batch in tqdm(batches, total=total, desc="predict", unit="batch", leave=False):
            z, p = self.network.embed_and_assign(self._model_inputs(batch.to(self.device)))
            probabilities.append(p.float().cpu())
            embeddings.append(z.float().cpu())
        return Assignments(torch.cat(probabilities).numpy(), torch.cat(embeddings).numpy())

    def _model_inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """What the network takes: features as they are; images through the run's evaluation
        transform (gray ones repeated to RGB under an RGB, pretrained, model)."""
        if self.reads_features:
            return batch
        if batch.shape[1] == 1 and self.model_channels == 3:
            batch = batch.expand(-1, 3, -1, -1)
        return self.transform(batch)

    def assign_features(self, features: np.ndarray, batch_size: int = 256) -> Assignments:
        """Feature vectors ``(N, D)`` of the run's kind (a ``data=features`` run's)."""
        if not self.reads_features:
            raise ConfigError("this run clusters images, not feature vectors: give images")
        rows = check_features(features, "the features")
        if rows.shape[1] != self.num_features:
            raise ConfigError(
                f"the features have {rows.shape[1]} columns and the run was trained on {self.num_features}: "
                "give features of the run's kind"
            )
        return self.assign(torch.from_numpy(rows).split(batch_size), total=-(-len(rows) // batch_size))

    def assign_paths(self, paths: Sequence[Path], batch_size: int = 256) -> Assignments:
        self._images_only()
        return self.assign(self.decoded(paths, batch_size), total=-(-len(paths) // batch_size))

    def assign_tensor(self, images: torch.Tensor, batch_size: int = 256) -> Assignments:
        """uint8 ``(N, C, H, W)`` images (as the ``npz`` loader holds them)."""
        return self.assign(self.batches(images, batch_size), total=-(-len(images) // batch_size))

    def assign_array(self, array: np.ndarray, batch_size: int = 256) -> Assignments:
        """uint8 ``(N, H, W)`` or ``(N, H, W, C)`` images; feature vectors ``(N, D)`` for a run on
        features."""
        if self.reads_features:
            return self.assign_features(array, batch_size)
        return self.assign_tensor(array_images(array), batch_size)
