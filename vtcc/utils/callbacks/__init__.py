"""Callbacks that vtcc adds to every run.

Here: the run's config and environment in every checkpoint (:class:`StoreConfig`), throughput,
saving and reporting on an interrupt, why training ended (:class:`StopRecord`); the time budget:
:mod:`vtcc.utils.callbacks.time_budget`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vtcc.errors import TrainingDivergedError
from vtcc.plugins import PLUGINS_KEY, plugin_record
from vtcc.registry import register
from vtcc.utils.callbacks.time_budget import TimeBudget
from vtcc.utils.checkpoint import CONFIG_KEY
from vtcc.utils.environment import ENVIRONMENT_KEY

log = logging.getLogger("vtcc")


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
        plugins = plugin_record(self.config)  # which plugin provided each plugin kind, if any
        if plugins:
            checkpoint[PLUGINS_KEY] = plugins
        if self.environment is not None:
            checkpoint[ENVIRONMENT_KEY] = self.environment


@register("callback", "epoch_throughput")
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
        self._images += batch.size * trainer.world_size  # a TrainingPair

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        pl_module.log("train/epoch_seconds", seconds, on_epoch=True)
        pl_module.log("train/images_per_sec", self._images / max(seconds, 1e-9), on_epoch=True)


@register("callback", "save_on_interrupt")
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


class ReportOnInterrupt(Callback):
    """Ctrl-C during training still leaves the run's report (``write(module, datamodule)``), after
    ``interrupted.ckpt`` is saved. A pre-emption's SIGTERM does not wait for it: the job is requeued."""

    def __init__(self, write: Callable[[LightningModule, Any], Any]) -> None:
        self.write = write

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt) or trainer.state.fn != "fit":
            return
        if not trainer.is_global_zero:
            return
        rank_zero_info("interrupted: writing the run's report (Ctrl-C again to skip it)")
        main = threading.current_thread() is threading.main_thread()  # signals: the main thread's only
        if main:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores a second Ctrl-C
        try:
            self.write(pl_module, trainer.datamodule)
        except KeyboardInterrupt:
            rank_zero_info("interrupted: report skipped")
        finally:
            if main:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # as Lightning left it for its shutdown


STOP_REASONS = {
    "epochs_done": "its epochs were done",
    "budget_spent": "the time budget was spent",
    "signal": "it was interrupted (Ctrl-C or SIGTERM)",
    "nan": "the loss became NaN or infinite",
    "error": "an error",
}


class StopRecord(Callback):
    """Why training ended: ``record`` once the fit ends or fails after training began, logged as
    one line (:func:`describe_stop`); ``vtcc-train`` writes it into ``final_metrics.json``
    (``stopped``) and the report. ``reason``: one of :data:`STOP_REASONS`; ``epochs``: the epochs
    trained (a part of the last as a fraction); ``training_seconds``: the time in training epochs,
    evaluations apart (a resumed run's earlier commands count: the total is in its checkpoints);
    with a time budget, ``budget_minutes`` and ``budget_used``, the share of the budget spent when
    training ended (the final evaluation and the report follow)."""

    def __init__(self, budget: TimeBudget | None = None, clock: Callable[[], float] | None = None) -> None:
        self.budget = budget
        self.record: dict[str, Any] | None = None
        self._clock = clock or time.perf_counter
        self._seconds = 0.0
        self._training = False
        self._epoch_start: float | None = None
        self._eval_start = 0.0
        self._eval_in_epoch = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"training_seconds": self._seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seconds = float(state.get("training_seconds", 0.0))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._training = True
        self.record = None
        self._epoch_start = self._clock()  # resumed in mid-epoch, Lightning skips the epoch's start

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = self._clock()
        self._eval_in_epoch = 0.0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_start = self._clock()

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._eval_in_epoch += self._clock() - self._eval_start

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end_epoch()

    def _end_epoch(self) -> None:
        if self._epoch_start is not None:
            self._seconds += self._clock() - self._epoch_start - self._eval_in_epoch
            self._epoch_start = None

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(trainer, "budget_spent" if self.budget is not None else "epochs_done")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not self._training or trainer.state.fn != "fit":
            return  # a setup error: no training to account for
        self._end_epoch()
        if isinstance(exception, KeyboardInterrupt | SIGTERMException):
            self._stop(trainer, "signal")
        elif isinstance(exception, TrainingDivergedError):
            self._stop(trainer, "nan")
        else:
            lines = str(exception).strip().splitlines()
            self._stop(trainer, "error", f"{type(exception).__name__}: {lines[0] if lines else ''}".strip())

    def _stop(self, trainer: Trainer, reason: str, error: str | None = None) -> None:
        batches = trainer.num_training_batches
        finite = isinstance(batches, int) and batches > 0
        epochs = trainer.global_step / batches if finite else float(trainer.current_epoch)
        record: dict[str, Any] = {
            "reason": reason,
            "epochs": round(epochs, 2),
            "training_seconds": round(self._seconds, 1),
        }
        if error:
            record["error"] = error
        if self.budget is not None:
            record["budget_minutes"] = self.budget.seconds / 60
            record["budget_used"] = round(self.budget.used(), 3)
        self.record = record
        if trainer.is_global_zero:
            normal = reason in ("epochs_done", "budget_spent")
            log.log(logging.INFO if normal else logging.WARNING, describe_stop(record))


def describe_stop(record: dict[str, Any] | None) -> str | None:
    """One line from a :class:`StopRecord` record (the log's and the report's)."""
    if not record:
        return None
    why = STOP_REASONS.get(record["reason"], record["reason"])
    if record.get("error"):
        why += f" ({record['error']})"
    epochs = record["epochs"]
    line = (
        f"training stopped after {epochs:g} epoch{'' if epochs == 1 else 's'} because {why}; "
        f"{record['training_seconds']:.0f} s of training"
    )
    if record.get("budget_minutes") is not None:
        line += f", {record['budget_used']:.0%} of the {record['budget_minutes']:g} min budget used"
    return line
