"""Callbacks that vtcc adds to every run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vtcc.utils.checkpoint import CONFIG_KEY
from vtcc.utils.environment import ENVIRONMENT_KEY


class StoreConfig(Callback):
    """Puts the resolved run config into every checkpoint, so eval and predict can rebuild the run,
    and the environment it trained in, so they can say when theirs differs."""

    def __init__(self, config: dict[str, Any], environment: dict[str, Any] | None = None) -> None:
        self.config = config
        self.environment = environment

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config
        if self.environment is not None:
            checkpoint[ENVIRONMENT_KEY] = self.environment


class EpochThroughput(Callback):
    """Logs ``train/images_per_sec`` (source images over all processes, each seen as two views)
    and ``train/epoch_seconds``."""

    def __init__(self) -> None:
        self._start = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._images = 0
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx
    ) -> None:
        self._images += len(batch[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        pl_module.log("train/epoch_seconds", seconds, on_epoch=True)
        pl_module.log("train/images_per_sec", self._images / max(seconds, 1e-9), on_epoch=True)


class SaveOnInterrupt(Callback):
    """Ctrl-C or SIGTERM (a cluster pre-emption) saves ``interrupted.ckpt`` before the run exits.

    ``resume=latest`` picks it up when it is the newest checkpoint.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt | SIGTERMException) and trainer.state.fn == "fit":
            path = self.dirpath / "interrupted.ckpt"
            trainer.save_checkpoint(path)
            rank_zero_info(f"interrupted: saved {path}; continue with resume=latest or ckpt_path={path}")
