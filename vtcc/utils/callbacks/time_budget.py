"""The time budget (``time_budget_minutes``): a run sized to the budget instead of cut by it."""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from vtcc.errors import ConfigError
from vtcc.optim import follows_a_replan, refused_scheduler

log = logging.getLogger("vtcc")

NO_EVALUATION = 2**31 - 1  # check_val_every_n_epoch that evaluates after no epoch of the fit


class TimeBudget(Callback):
    """``time_budget_minutes``: size the run to the budget instead of cutting it.

    Measured, never assumed: the first epoch is evaluated, so both an epoch's and an evaluation's
    time are known when the first plan is made. After every epoch the plan is made again from the
    recent epochs (the median of the last three, so one slow epoch, e.g. another process loading
    the machine, neither cuts the run nor stretches it) and the time left: as many training steps
    as fit before the final evaluation (which follows the fit), the last epoch perhaps only a
    part of one (it stops at its planned batch, in every process alike). Evaluations inside the
    fit (about ``evaluations`` in all, with the final one) get at most ``evaluation_share`` of the
    budget: when epochs or evaluations are long the run evaluates less often rather than train less;
    the last epoch is not evaluated (the final evaluation follows it). ``max_epochs``, the
    evaluation cadence and a cosine schedule's length and warm-up
    (:meth:`vtcc.optim.WarmupCosine.replan`, over the planned steps) follow every plan, so the
    schedule ends where training ends. A scheduler whose length a re-plan cannot move is refused.
    In one process, a run that reaches the end of the budget in the middle of an epoch (the machine
    slowed down after the plan) stops there. ``started_at`` (a reading of ``clock``, by default
    ``time.perf_counter``) counts earlier work of the same run against the budget
    (``num_clusters=auto``'s K search). The budget, the time spent, the measurements and the plan
    go into every checkpoint: a resumed run counts the time already spent and keeps the plan (a
    budget given anew is the run's whole budget, not a fresh one: its plan is redone).
    """

    def __init__(
        self,
        minutes: float,
        evaluations: int = 5,
        started_at: float | None = None,
        evaluation_share: float = 0.1,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if minutes <= 0:
            raise ConfigError(f"time_budget_minutes={minutes} must be > 0 (or null for no budget)")
        self.seconds = 60.0 * minutes
        self.evaluations = evaluations
        self.evaluation_share = evaluation_share
        self.started_at = started_at
        self._clock = clock or time.perf_counter
        self._start = 0.0
        self._epoch_start = 0.0
        self._batches = 0  # trained in this epoch by this command
        self._epoch_seconds: list[float] = []  # a whole epoch's training, from each epoch measured
        self._eval_seconds: list[float] = []
        self._eval_start = 0.0
        self._eval_in_epoch = 0.0
        self._reserve = 0.0  # the final evaluation's expected seconds
        # (max_epochs, evaluation cadence, batches of the last epoch or None for all) once planned
        self._plan: tuple[int, int, int | None] | None = None
        self._logged: float | None = None  # the epochs of the plan last logged
        self._restored_elapsed: float | None = None
        self._stored_seconds = self.seconds

    def elapsed(self) -> float:
        """Seconds of the budget spent so far (by earlier commands of a resumed run too)."""
        return self._clock() - self._start

    def used(self) -> float:
        """The share of the budget spent so far."""
        return self.elapsed() / self.seconds

    def state_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "elapsed": self.elapsed(),
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
        plan = state.get("plan")
        self._plan = (int(plan[0]), int(plan[1]), plan[2] if len(plan) > 2 else None) if plan else None
        if self._eval_seconds:
            self._reserve = statistics.median(self._eval_seconds[-3:])

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for config in trainer.lr_scheduler_configs:
            if not follows_a_replan(config.scheduler):
                raise ConfigError(refused_scheduler(type(config.scheduler).__name__))
        self._start = self.started_at if self.started_at is not None else self._clock()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """A resumed run: the time already spent counts, and the stored plan holds. A new run
        evaluates after its first epoch: the plan needs an evaluation's time."""
        if self._restored_elapsed is not None:
            self._start = self._clock() - self._restored_elapsed
        self._epoch_start = self._clock()  # resumed in mid-epoch, Lightning skips the epoch's start
        if self._plan is not None and self._stored_seconds == self.seconds:
            trainer.fit_loop.max_epochs, trainer.check_val_every_n_epoch, _ = self._plan
        elif self._epoch_seconds:  # another budget: plan again from the measured epochs
            self._replan(trainer, trainer.current_epoch)
        elif not self._eval_seconds:
            trainer.check_val_every_n_epoch = 1

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = self._clock()
        self._eval_in_epoch = 0.0
        self._batches = 0
        if self._last_epoch(trainer):  # the final evaluation follows it
            trainer.check_val_every_n_epoch = NO_EVALUATION

    def _last_epoch(self, trainer: Trainer) -> bool:
        return self._plan is not None and trainer.current_epoch + 1 >= trainer.fit_loop.max_epochs

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self._batches += 1
        if trainer.should_stop:
            return
        part = self._plan[2] if self._plan is not None else None
        if part is not None and self._last_epoch(trainer) and batch_idx + 1 >= part:
            trainer.should_stop = True  # the planned part of the last epoch, in every process alike
        elif trainer.world_size == 1 and self.elapsed() + self._reserve >= self.seconds:
            trainer.should_stop = True  # the machine slowed down after the plan: the budget holds
            trainer.check_val_every_n_epoch = NO_EVALUATION
            if trainer.is_global_zero:
                log.info(
                    "time budget %.1f min spent in epoch %d (batch %d of %d): training stops here",
                    self.seconds / 60,
                    trainer.current_epoch + 1,
                    batch_idx + 1,
                    trainer.num_training_batches,
                )

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_start = self._clock()

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._eval_seconds.append(self._clock() - self._eval_start)
            self._eval_in_epoch += self._eval_seconds[-1]
            self._reserve = statistics.median(self._eval_seconds[-3:])

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning evaluates inside the training epoch: its time is counted apart
        seconds = self._clock() - self._epoch_start - self._eval_in_epoch
        batches = trainer.num_training_batches
        self._epoch_seconds.append(seconds * batches / (self._batches or batches))  # a whole epoch's
        if not trainer.should_stop:  # else training ends with this epoch
            self._replan(trainer, trainer.current_epoch + 1)

    def _replan(self, trainer: Trainer, done: int) -> None:
        """How many steps fit after ``done`` epochs, from the measured epoch and evaluation times."""
        batches = int(trainer.num_training_batches)
        epoch = max(statistics.median(self._epoch_seconds[-3:]), 1e-9)
        measured = bool(self._eval_seconds)
        evaluation = max(self._reserve if measured else epoch, 1e-9)  # unmeasured: an epoch's time
        left = self.seconds - self.elapsed() - evaluation  # the final evaluation follows the fit
        steps, every, evaluations = self._fit(left, epoch / batches, evaluation, done, batches)
        steps, every = trainer.strategy.broadcast((steps, every), src=0)  # every process alike
        whole, part = divmod(int(steps), batches)
        planned = done + whole + (1 if part else 0)
        self._plan = (planned, int(every), part or None)
        self._reserve = evaluation
        trainer.fit_loop.max_epochs = planned
        trainer.check_val_every_n_epoch = int(every)
        for config in trainer.lr_scheduler_configs:
            for factor in config.scheduler.lr_lambdas:  # on_fit_start refused any other kind
                factor.replan(trainer.global_step + int(steps))  # the schedule ends with training
        epochs = done + steps / batches
        if trainer.is_global_zero and (
            self._logged is None or abs(epochs - self._logged) > 0.1 * self._logged or not steps
        ):
            self._logged = epochs
            log.info(
                "time budget %.1f min, %.0f s left: %.1f s an epoch, %.1f s an evaluation (%s): "
                "%.2f epochs in all%s, %d more evaluation(s) before the final one",
                self.seconds / 60,
                max(0.0, self.seconds - self.elapsed()),
                epoch,
                evaluation,
                "measured" if measured else "not measured yet: taken as an epoch",
                epochs,
                f" (of the last, {part} of its {batches} batches)" if part else "",
                evaluations,
            )

    def _fit(
        self, left: float, batch: float, evaluation: float, done: int, batches: int
    ) -> tuple[int, int, int]:
        """(training steps that fit in ``left`` seconds, evaluation cadence, evaluations it places):
        evaluations stay within their share of the budget, and time no evaluation takes trains."""
        allowed = self.evaluations - 1 - len(self._eval_seconds)  # the final one is the last
        share = self.evaluation_share * self.seconds - sum(self._eval_seconds) - evaluation
        affordable = share // evaluation
        wanted = max(0, min(allowed, int(affordable)))
        while True:
            steps = max(0, int((left - wanted * evaluation) // batch))
            every, placed = evaluation_cadence(done, done + math.ceil(steps / batches), wanted)
            if placed == wanted:
                return steps, every, placed
            wanted = placed


def evaluation_cadence(done: int, last: int, wanted: int) -> tuple[int, int]:
    """The smallest ``check_val_every_n_epoch`` that evaluates after at most ``wanted`` of the
    epochs ``done + 1 .. last - 1`` (the final evaluation follows epoch ``last``), and how many."""
    if wanted > 0 and last - 1 > done:
        for every in range(1, last):
            placed = (last - 1) // every - done // every
            if placed <= wanted:
                return every, placed
    return NO_EVALUATION, 0
