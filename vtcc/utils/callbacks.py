"""Callbacks that vtcc adds to every run."""

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

from vtcc.errors import ConfigError
from vtcc.optim import follows_a_replan
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
        self._images += batch.size * trainer.world_size  # a TrainingPair

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


class TimeBudget(Callback):
    """``time_budget_minutes``: size the run to the budget instead of cutting it.

    After every epoch the measured epoch and evaluation times give how many epochs still fit;
    ``max_epochs``, the evaluation cadence (about ``evaluations`` in the run) and a cosine
    schedule's length and warm-up (:meth:`vtcc.optim.WarmupCosine.replan`) follow, so the schedule
    ends at the budget rather than being cut in the middle. A scheduler whose length a re-plan
    cannot move is refused. ``started_at`` (a ``time.perf_counter`` reading) counts earlier work of
    the same run against the budget (``num_clusters=auto``'s K search). The budget, the time spent
    and the plan go into every checkpoint: a resumed run counts the time already spent and keeps
    the plan (a budget given anew is the run's whole budget, not a fresh one: its plan is redone).
    """

    def __init__(self, minutes: float, evaluations: int = 5, started_at: float | None = None) -> None:
        if minutes <= 0:
            raise ConfigError(f"time_budget_minutes={minutes} must be > 0 (or null for no budget)")
        self.seconds = 60.0 * minutes
        self.evaluations = evaluations
        self.started_at = started_at
        self._start = 0.0
        self._epoch_start = 0.0
        self._epoch_seconds: list[float] = []
        self._eval_seconds: list[float] = []
        self._eval_start = 0.0
        self._eval_in_epoch = 0.0
        self._plan: tuple[int, int] | None = None  # (max_epochs, evaluation cadence) once planned
        self._restored_elapsed: float | None = None
        self._stored_seconds = self.seconds

    def state_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "elapsed": time.perf_counter() - self._start,
            "epoch_seconds": list(self._epoch_seconds),
            "eval_seconds": list(self._eval_seconds),
            "plan": list(self._plan) if self._plan else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The time spent, the measurements and the plan come back; the budget is this command's
        (the same as the run's unless the command gives another, e.g. to extend a finished run)."""
        self._stored_seconds = float(state["seconds"])
        self._restored_elapsed = float(state["elapsed"])
        self._epoch_seconds = [float(v) for v in state["epoch_seconds"]]
        self._eval_seconds = [float(v) for v in state["eval_seconds"]]
        self._plan = tuple(state["plan"]) if state.get("plan") else None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for config in trainer.lr_scheduler_configs:
            if not follows_a_replan(config.scheduler):
                raise ConfigError(refused_scheduler(type(config.scheduler).__name__))
        self._start = self.started_at if self.started_at is not None else time.perf_counter()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """A resumed run: the time already spent counts, and the stored plan holds."""
        if self._restored_elapsed is not None:
            self._start = time.perf_counter() - self._restored_elapsed
        if self._plan is not None and self._stored_seconds == self.seconds:
            trainer.fit_loop.max_epochs, trainer.check_val_every_n_epoch = self._plan
        elif self._epoch_seconds:  # another budget: plan again from the measured epochs
            self._replan(trainer, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._eval_in_epoch = 0.0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._eval_seconds.append(time.perf_counter() - self._eval_start)
            self._eval_in_epoch += self._eval_seconds[-1]

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning evaluates inside the training epoch: its time is counted apart
        self._epoch_seconds.append(time.perf_counter() - self._epoch_start - self._eval_in_epoch)
        self._replan(trainer, trainer.current_epoch + 1)

    def _replan(self, trainer: Trainer, done: int) -> None:
        """How many epochs fit after ``done``, from the measured epoch and evaluation times."""
        epoch_seconds = sum(self._epoch_seconds[-5:]) / len(self._epoch_seconds[-5:])
        eval_seconds = max(self._eval_seconds) if self._eval_seconds else 2 * epoch_seconds
        left = self.seconds - (time.perf_counter() - self._start) - eval_seconds  # the final evaluation
        reserve = eval_seconds * max(0, self.evaluations - len(self._eval_seconds) - 1)
        more = max(0, int((left - reserve) / epoch_seconds))
        planned = int(trainer.strategy.broadcast(done + more, src=0))  # every process stops together
        every = max(1, planned // self.evaluations)
        self._plan = (planned, every)
        trainer.fit_loop.max_epochs = planned
        trainer.check_val_every_n_epoch = every
        steps = planned * trainer.num_training_batches
        for config in trainer.lr_scheduler_configs:
            for factor in config.scheduler.lr_lambdas:  # on_fit_start refused any other kind
                factor.replan(steps)
        if (done == 1 or done == planned) and trainer.is_global_zero:
            log.info(
                "time budget %.1f min: %.1f s an epoch, %d epochs in all, evaluation every %d",
                self.seconds / 60,
                epoch_seconds,
                planned,
                every,
            )


def refused_scheduler(name: str) -> str:
    return (
        f"time_budget_minutes re-plans the run's length, which the scheduler {name} (its length fixed "
        "in its settings) cannot follow: use module.scheduler's vtcc.optim.warmup_cosine, or drop "
        "time_budget_minutes"
    )
