"""time_budget_minutes sizes the run to the budget: epochs, evaluation cadence and the cosine
schedule's length follow the measured epoch time (a fake clock: no timing in tests)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vtcc.errors import ConfigError
from vtcc.optim import warmup_cosine
from vtcc.utils import callbacks
from vtcc.utils.callbacks import TimeBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_trainer(scheduler) -> SimpleNamespace:
    return SimpleNamespace(
        current_epoch=0,
        fit_loop=SimpleNamespace(max_epochs=60),
        check_val_every_n_epoch=10,
        num_training_batches=7,
        lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler)],
        strategy=SimpleNamespace(broadcast=lambda value, src=0: value),
        sanity_checking=False,
        is_global_zero=True,
    )


def test_the_plan_follows_the_measured_epochs(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    scheduler = warmup_cosine(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), total_steps=420)
    trainer = fake_trainer(scheduler)
    budget = TimeBudget(minutes=10, evaluations=5)
    budget.on_fit_start(trainer, None)
    budget.on_train_epoch_start(trainer, None)
    clock.now = 10.0  # one 10 s epoch, no evaluation yet (assumed to cost two epochs: 20 s)
    budget.on_train_epoch_end(trainer, None)
    # 600 s - 10 s spent - 20 s final evaluation - 4 x 20 s other evaluations = 490 s: 49 more epochs
    assert trainer.fit_loop.max_epochs == 50 and trainer.check_val_every_n_epoch == 10
    assert scheduler.lr_lambdas[0].total_steps == 50 * 7  # the cosine ends at the budget

    trainer.current_epoch = 1  # the second epoch is slower (30 s) and an evaluation took 5 s
    budget.on_train_epoch_start(trainer, None)
    budget.on_validation_epoch_start(trainer, None)
    clock.now = 15.0
    budget.on_validation_epoch_end(trainer, None)
    clock.now = 45.0
    budget.on_train_epoch_end(trainer, None)
    # mean epoch 20 s; 600 - 45 - 5 (final) - 3 x 5 (evaluations to come) = 535 s: 26 more
    assert trainer.fit_loop.max_epochs == 28 and trainer.check_val_every_n_epoch == 5
    assert scheduler.lr_lambdas[0].total_steps == 28 * 7


def test_the_schedule_length_survives_a_checkpoint():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = warmup_cosine(optimizer, total_steps=100)
    scheduler.lr_lambdas[0].total_steps = 40
    restored = warmup_cosine(optimizer, total_steps=100)
    restored.load_state_dict(scheduler.state_dict())
    assert restored.lr_lambdas[0].total_steps == 40


def test_a_budget_must_be_positive():
    with pytest.raises(ConfigError, match="time_budget_minutes=0"):
        TimeBudget(minutes=0)
