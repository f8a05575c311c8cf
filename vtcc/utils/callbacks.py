"""Callbacks that vtcc adds to every run."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from vtcc.utils.checkpoint import CONFIG_KEY


class StoreConfig(Callback):
    """Puts the resolved run config into every checkpoint, so eval and predict can rebuild the run."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config
