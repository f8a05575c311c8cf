"""How a training pair is drawn from a frozen backbone's cached features: one small class per way
(``features.pairing``; ``auto``: the one its objective trains on, its class's ``feature_recipe``).

The cache holds ``views`` ``(V, N, D)`` (augmented views of every image) and ``eval`` ``(N, D)``
(the evaluation view); ``neighbor(index)`` draws one of each image's nearest training images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from vtcc.data.batch import TrainingPair
from vtcc.errors import ConfigError

Neighbor = Callable[[torch.Tensor], torch.Tensor]


class Pairing:
    """A way of pairing cached features; says whether it needs augmented views and neighbours."""

    name: ClassVar[str]
    uses_views: ClassVar[bool] = True  # False: evaluation features only, no augmented view extracted
    uses_neighbors: ClassVar[bool] = False  # True: nearest neighbours are mined once

    def pair(self, cache: dict[str, torch.Tensor], index: torch.Tensor, neighbor: Neighbor) -> TrainingPair:
        raise NotImplementedError


class TwoViews(Pairing):
    """Two distinct augmented views of each image (Contrastive Clustering on cached views)."""

    name = "views"

    def pair(self, cache: dict[str, torch.Tensor], index: torch.Tensor, neighbor: Neighbor) -> TrainingPair:
        views = cache["views"]
        first = torch.randint(len(views), (len(index),))
        second = (first + torch.randint(1, len(views), (len(index),))) % len(views)
        return TrainingPair(views[first, index], views[second, index])


class ViewAndNeighbor(Pairing):
    """A view of each image and a view of one of its nearest neighbours (SCAN)."""

    name = "neighbors"
    uses_neighbors = True

    def pair(self, cache: dict[str, torch.Tensor], index: torch.Tensor, neighbor: Neighbor) -> TrainingPair:
        views = cache["views"]
        first = torch.randint(len(views), (len(index),))
        partner = neighbor(index)
        other = torch.randint(len(views), (len(index),))
        return TrainingPair(views[first, index], views[other, partner])


class WeakStrong(Pairing):
    """The two views of one augmentation pass: weak then strong (``augment=selflabel``)."""

    name = "weak_strong"

    def pair(self, cache: dict[str, torch.Tensor], index: torch.Tensor, neighbor: Neighbor) -> TrainingPair:
        views = cache["views"]
        first = 2 * torch.randint(len(views) // 2, (len(index),))
        return TrainingPair(views[first, index], views[first + 1, index])


class EvalTwice(Pairing):
    """The evaluation features as both inputs (self-labelling a frozen backbone's heads on the
    features they are evaluated on)."""

    name = "eval"
    uses_views = False

    def pair(self, cache: dict[str, torch.Tensor], index: torch.Tensor, neighbor: Neighbor) -> TrainingPair:
        features = cache["eval"][index]
        return TrainingPair(features, features)


class EvalAndNeighbor(Pairing):
    """The evaluation features of an image and of one of its neighbours (TEMI's precomputed
    embeddings)."""

    name = "eval_neighbors"
    uses_views = False
    uses_neighbors = True

    def pair(self, cache: dict[str, torch.Tensor], index: torch.Tensor, neighbor: Neighbor) -> TrainingPair:
        return TrainingPair(cache["eval"][index], cache["eval"][neighbor(index)])


PAIRING_CLASSES: dict[str, type[Pairing]] = {
    kind.name: kind for kind in (TwoViews, ViewAndNeighbor, WeakStrong, EvalTwice, EvalAndNeighbor)
}
PAIRINGS = tuple(PAIRING_CLASSES)


def pairing_for(name: str) -> Pairing:
    """The pairing ``features.pairing`` names (the type check refused any other name before)."""
    if name not in PAIRING_CLASSES:
        raise ConfigError(f"features.pairing={name!r} is unknown: use one of {', '.join(PAIRINGS)}")
    return PAIRING_CLASSES[name]()
