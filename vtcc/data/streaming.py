"""Large folders that do not fit in memory: images decoded per batch by worker processes.

Workers only decode and resize (to uint8 squares of ``stored_size``, like the in-memory path); the
augmentations still run batched on the device after transfer, so both paths train identically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from vtcc.data.folder import FITS, Fit, choose_stored_size, decode_image, list_images
from vtcc.data.images import DecodedPerBatch, ImageSettings
from vtcc.errors import ConfigError
from vtcc.registry import register


class DecodedImages(Dataset):
    """``__getitems__`` decodes a batch of paths into ``(uint8 (B, C, S, S), labels, indices)``."""

    def __init__(
        self, paths: Sequence[Path], labels: torch.Tensor, image_size: int, in_chans: int, fit: str = "whole"
    ) -> None:
        self.paths, self.labels = list(paths), labels
        self.image_size, self.in_chans, self.fit = image_size, in_chans, fit

    def __len__(self) -> int:
        return len(self.paths)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = np.stack(
            [decode_image(self.paths[i], self.image_size, self.in_chans, self.fit) for i in indices]
        )
        index = torch.as_tensor(indices)
        return torch.from_numpy(images), self.labels[index], index


@register(
    "datamodule",
    "folder_streaming",
    target="vtcc.data.StreamingFolderDataModule",
    auto=("image_size", "in_chans", "mean", "std"),  # from the images (vtcc.config.data_defaults)
    probe="folder",  # its images are sampled before loading (vtcc.config.data_defaults)
    forwards=ImageSettings,  # **settings: the keys every image datamodule shares
)
class StreamingFolderDataModule(DecodedPerBatch):
    """``data=folder_streaming``: the folder layout of ``data=folder``, read from disk every epoch.

    Use it when the decoded images would not fit in memory; ``num_workers`` processes decode.
    Unreadable files stop the first epoch that reaches them, with their path. ``eval_split`` and
    ``augment_on`` are accepted only at the values it honours (every image is scored; batches are
    augmented on the device), so a setting meant for ``data=folder`` is refused, not ignored. The
    shared settings (``**settings``) are :class:`~vtcc.data.images.ImageSettings`.
    """

    def __init__(
        self,
        root: str,
        classes: Sequence[str] | None = None,
        stored_size: int | None = None,
        max_stored_size: int = 512,
        fit: Fit = "whole",
        eval_split: Literal["all"] = "all",
        augment_on: Literal["device"] = "device",
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        if eval_split != "all":
            raise ConfigError("data=folder_streaming has no test split: use data.eval_split=all")
        if augment_on != "device":
            raise ConfigError(
                "data=folder_streaming decodes in its workers and augments on the device: "
                "use data.augment_on=device, or data=folder for data.augment_on=workers"
            )
        if fit not in FITS:
            raise ConfigError(f"data.fit={fit!r} is unknown: use one of {', '.join(FITS)}")
        self.root = Path(root)
        self.classes = classes
        self.requested_size, self.max_stored_size, self.fit = stored_size, max_stored_size, fit
        self.paths: list[Path] = []

    def setup(self, stage: str | None = None) -> None:
        if self.paths:
            return
        paths, labels, _ = list_images(self.root, self.classes)
        if len(paths) < self.batch_size:
            raise ConfigError(f"{len(paths)} images in {self.root}, fewer than data.batch_size")
        self.paths = paths
        self._stored_size = choose_stored_size(
            paths, self.image_size, self.requested_size, self.max_stored_size
        )
        self.label_tensor = (
            torch.full((len(paths),), -1, dtype=torch.long) if labels is None else torch.tensor(labels)
        )
        self.train_indices = self.eval_indices = torch.arange(len(paths))
        self._take_class_count(None if labels is None else len(set(labels)))
        self.is_labeled = labels is not None

    @property
    def labeled(self) -> bool:
        return bool(self.paths) and self.is_labeled

    def __len__(self) -> int:
        return len(self.paths)

    def labels_in_order(self) -> torch.Tensor:
        return self.label_tensor

    def image_paths(self) -> list[str]:
        """Each image's file (by dataset index), as ``data=folder`` records them (a curation's moves)."""
        return [str(path) for path in self.paths]

    def fingerprint(self) -> str:
        """A hash of the file list with sizes and modification times (no decoding)."""
        digest = hashlib.sha256()
        for path in self.paths:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:20]

    def _dataset(self, train: bool) -> Dataset:
        return DecodedImages(self.paths, self.label_tensor, self.stored_size, self.in_chans, self.fit)
