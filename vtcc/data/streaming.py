"""Large folders that do not fit in memory: images decoded per batch by worker processes.

Workers only decode and resize (to uint8, like the in-memory path); the augmentations still run
batched on the device after transfer, so both paths train identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vtcc.data.folder import decode_image, list_images
from vtcc.data.in_memory import InMemoryDataModule
from vtcc.errors import ConfigError


class DecodedImages(Dataset):
    """``__getitems__`` decodes a batch of paths into ``(uint8 (B, C, S, S), labels, indices)``."""

    def __init__(self, paths: Sequence[Path], labels: torch.Tensor, image_size: int, in_chans: int) -> None:
        self.paths, self.labels = list(paths), labels
        self.image_size, self.in_chans = image_size, in_chans

    def __len__(self) -> int:
        return len(self.paths)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = np.stack([decode_image(self.paths[i], self.image_size, self.in_chans) for i in indices])
        index = torch.as_tensor(indices)
        return torch.from_numpy(images), self.labels[index], index


class StreamingFolderDataModule(InMemoryDataModule):
    """``data=folder_streaming``: the folder layout of ``data=folder``, read from disk every epoch.

    Use it when the decoded images would not fit in memory; ``num_workers`` processes decode.
    Unreadable files stop the first epoch that reaches them, with their path.
    """

    def __init__(self, root: str, classes: Sequence[str] | None = None, **kwargs) -> None:
        super().__init__(dataset=None, root=root, **kwargs)
        self.classes = classes
        self.paths: list[Path] = []

    def setup(self, stage: str | None = None) -> None:
        if self.paths:
            return
        paths, labels, _ = list_images(Path(self.loader_kwargs["root"]), self.classes)
        if len(paths) < self.batch_size:
            raise ConfigError(
                f"{len(paths)} images in {self.loader_kwargs['root']}, fewer than data.batch_size"
            )
        self.paths = paths
        self.label_tensor = (
            torch.full((len(paths),), -1, dtype=torch.long) if labels is None else torch.tensor(labels)
        )
        if self.num_classes is None and labels is not None:
            self.num_classes = len(set(labels))
        self.is_labeled = labels is not None

    @property
    def labeled(self) -> bool:
        return bool(self.paths) and self.is_labeled

    def __len__(self) -> int:
        return len(self.paths)

    def images_at(self, indices: torch.Tensor) -> torch.Tensor:
        return self._dataset(train=False).__getitems__(indices.tolist())[0]

    def _dataset(self, train: bool) -> Dataset:
        return DecodedImages(self.paths, self.label_tensor, self.image_size, self.in_chans)
