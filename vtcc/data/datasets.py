"""Datasets as in-memory uint8 arrays: small enough to decode once, fast to batch and augment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vtcc.registry import register


@dataclass
class ImageArrays:
    """``images``: uint8 ``(N, C, H, W)``; ``labels``: int64 ``(N,)`` or None.

    Labels are used only for metrics; -1 marks an image without one.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    is_test: torch.Tensor | None = None  # bool (N,): the dataset's own test split, where it has one
    paths: list[str] | None = None  # each image's file, where it was read from one (the explorer's curation)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int | None:
        return None if self.labels is None else int(self.labels[self.labels >= 0].unique().numel())


@register("loader", "digits", target="vtcc.data.load_digits")
def load_digits() -> ImageArrays:
    """scikit-learn's 1,797 real 8x8 handwritten digits (10 classes); ships with the package, no download."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    pixels = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)
    return ImageArrays(images=images, labels=torch.from_numpy(bunch.target).long(), name="digits")
