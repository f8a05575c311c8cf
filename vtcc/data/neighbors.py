"""SCAN's clustering step with the backbone training (``model.mode=partial|full``): each step pairs
a fresh augmentation of every image with a fresh augmentation of one of its nearest neighbours.

The neighbours are mined once, before training, from the pretrained backbone's features of the
evaluation view (SCAN mines them from its pretext model the same way); they stay fixed while the
backbone trains, as in SCAN's code (``update_cluster_head_only: False``).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.data import DataLoader

from vtcc.data.batch import TrainingPair
from vtcc.data.images import BackboneOverSource, BatchedTensors, ImageDataModule
from vtcc.knn import nearest_neighbors
from vtcc.utils.progress import Progress

log = logging.getLogger("vtcc")


class NeighborPairsDataModule(BackboneOverSource):
    """Training batches ``(anchor view, neighbour view)`` of images; evaluation as the source's."""

    def __init__(
        self,
        source: ImageDataModule,
        backbone: nn.Module,
        num_neighbors: int = 20,
        device: str = "auto",
        neighbor_search: str = "auto",
    ) -> None:
        super().__init__(source, backbone, device)
        self.num_neighbors = num_neighbors
        self.neighbor_search = neighbor_search
        self.neighbors: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        self.source.setup(stage)
        if self.neighbors is not None:
            return
        self.train_indices, self.eval_indices = self.source.train_indices, self.source.eval_indices
        features = self._features(self.train_indices)
        progress = Progress(f"mining {self.num_neighbors} nearest neighbours", len(features), "images")
        found = nearest_neighbors(features, self.num_neighbors, backend=self.neighbor_search)
        self.neighbors = self.train_indices[found]
        progress.advance(len(features))

    @torch.no_grad()
    def _features(self, indices: torch.Tensor) -> torch.Tensor:
        """The backbone's features of the evaluation view of ``indices``, before any training."""
        was_training = self.backbone.training
        backbone = self.backbone.to(self.device).eval()
        transform = self.source.eval_transform.to(self.device)
        progress = Progress("neighbour features", len(indices), "images")
        features = []
        for start in range(0, len(indices), self.source.eval_batch_size):
            chunk = indices[start : start + self.source.eval_batch_size]
            images = self.source.model_channels(self.source.images_at(chunk).to(self.device))
            features.append(backbone(transform(images)).float().cpu())
            progress.advance(len(chunk))
        backbone.train(was_training)
        return torch.cat(features)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            BatchedTensors(torch.arange(len(self.train_indices))),
            batch_size=self.source.batch_size,
            shuffle=True,
            drop_last=True,
            collate_fn=self._pairs,
        )

    def _pairs(self, batch: tuple[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images of a batch of training images and of one random neighbour of each."""
        (position,) = batch
        choice = torch.randint(self.num_neighbors, (len(position),))
        partner = self.neighbors[position, choice]
        return self.source.images_at(self.train_indices[position]), self.source.images_at(partner)

    def val_dataloader(self) -> DataLoader:
        return self.source.val_dataloader()

    def on_after_batch_transfer(self, batch: tuple, dataloader_idx: int):
        if self.trainer is None or not self.trainer.training:
            return self.evaluation_batch(batch)
        anchors, partners = (self.source.model_channels(images) for images in batch)
        augment = self.source.train_transform
        return TrainingPair(augment.one_view(anchors), augment.one_view(partners))
