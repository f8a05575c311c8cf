"""What an objective receives for one training step: a small named type, not a tuple whose
length carries meaning."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TrainingPair:
    """Two inputs per image, ``(B, ...)`` each: two augmented views (contrastive), an image and one
    of its neighbours (SCAN, TEMI), or a weak and a strong view (self-labelling); images or a
    frozen backbone's cached features. ``cluster=False`` marks a batch of Contrastive Clustering's
    STL-10 unlabelled pool, which trains the instance loss only. ``index``: each image's index in
    its dataset, ``(B,)``, where the data gives it (an objective that holds a target per image,
    ``objective=curated``, reads it; None: this data gives none)."""

    first: torch.Tensor
    second: torch.Tensor
    cluster: bool = True
    index: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return len(self.first)
