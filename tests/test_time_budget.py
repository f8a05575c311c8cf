"""time_budget_minutes sizes the run to the budget: epochs, evaluation cadence and the cosine
schedule's length follow the measured epoch time (a fake clock: no timing in tests)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from vtcc.errors import ConfigError
from vtcc.optim import check_budget_can_move, warmup_cosine
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


def test_a_replan_that_shortens_the_run_shortens_the_warm_up_too():
    """10 % warm-up planned over 1,000 steps; the budget allows 200: the warm-up stays 10 % (20
    steps), the rate reaches its base value and the cosine still ends at the last step."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    factor = warmup_cosine(optimizer, total_steps=1000, warmup_steps=100).lr_lambdas[0]
    factor.replan(200)
    assert factor.warmup_steps == 20
    assert factor(19) == pytest.approx(1.0) and factor(20) == pytest.approx(1.0)
    assert factor(110) == pytest.approx(0.5)  # half-way through the 180 cosine steps: cos(pi/2)
    assert factor(199) == pytest.approx(0.5 * (1 + math.cos(math.pi * 179 / 180)))
    factor.replan(5000)  # a longer run never warms up for more steps than configured
    assert factor.warmup_steps == 100


def run_epoch(budget: TimeBudget, trainer, clock: Clock, seconds: float) -> None:
    budget.on_train_epoch_start(trainer, None)
    clock.now += seconds
    budget.on_train_epoch_end(trainer, None)
    trainer.current_epoch += 1


def test_a_resumed_run_keeps_its_budget_time_spent_and_plan(monkeypatch):
    """Stopped after 2 epochs and resumed (with another budget on the command line, an hour later
    on the clock): the third epoch plans exactly as in the uninterrupted run."""
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)

    def new_run(minutes: float):
        scheduler = warmup_cosine(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 420)
        return TimeBudget(minutes=minutes, evaluations=5), fake_trainer(scheduler)

    whole, whole_trainer = new_run(10)
    whole.on_fit_start(whole_trainer, None)
    for seconds in (10.0, 30.0, 20.0):
        run_epoch(whole, whole_trainer, clock, seconds)

    clock.now = 0.0
    first, first_trainer = new_run(10)
    first.on_fit_start(first_trainer, None)
    for seconds in (10.0, 30.0):
        run_epoch(first, first_trainer, clock, seconds)
    state = first.state_dict()
    clock.now += 3600.0  # the run was down for an hour: that is not time the run spent
    resumed, resumed_trainer = new_run(10)  # the same command, resumed
    resumed.load_state_dict(state)
    resumed_trainer.current_epoch = 2
    resumed_trainer.lr_scheduler_configs[0].scheduler.load_state_dict(
        first_trainer.lr_scheduler_configs[0].scheduler.state_dict()
    )
    resumed.on_fit_start(resumed_trainer, None)
    resumed.on_train_start(resumed_trainer, None)
    assert resumed_trainer.fit_loop.max_epochs == first_trainer.fit_loop.max_epochs  # the stored plan
    run_epoch(resumed, resumed_trainer, clock, 20.0)
    assert resumed.seconds == 600.0
    assert resumed_trainer.fit_loop.max_epochs == whole_trainer.fit_loop.max_epochs
    assert resumed_trainer.check_val_every_n_epoch == whole_trainer.check_val_every_n_epoch
    factor, expected = (
        t.lr_scheduler_configs[0].scheduler.lr_lambdas[0] for t in (resumed_trainer, whole_trainer)
    )
    assert (factor.total_steps, factor.warmup_steps) == (expected.total_steps, expected.warmup_steps)


def test_a_scheduler_the_budget_cannot_move_is_refused_before_any_work(train_in_process, tmp_path):
    from functools import partial

    check_budget_can_move(partial(warmup_cosine, warmup_steps=10))  # vtcc's: the budget moves it
    with pytest.raises(ConfigError, match="CosineAnnealingLR"):
        check_budget_can_move(partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=10))
    scheduler = "module.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:5}"
    code, stderr = train_in_process("time_budget_minutes=1", scheduler)
    assert code == 2 and "StepLR" in stderr and "time_budget_minutes" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "run").exists()


def test_a_torch_scheduler_keeps_its_own_length_without_a_budget(train_in_process, tmp_path):
    scheduler = "module.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:5}"
    code, stderr = train_in_process(scheduler, "trainer.max_epochs=1")
    assert code == 0, stderr[-2000:]


def test_a_larger_budget_given_on_resume_extends_the_run_counting_the_time_spent(monkeypatch):
    """Two epochs (10 s and 30 s) spent of a 10-minute run, resumed with 20 minutes: the plan is
    made again from the measured epochs, with the 40 s already spent counted (not the downtime)."""
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    scheduler = warmup_cosine(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 420)
    first, trainer = TimeBudget(minutes=10, evaluations=5), fake_trainer(scheduler)
    first.on_fit_start(trainer, None)
    for seconds in (10.0, 30.0):
        run_epoch(first, trainer, clock, seconds)
    state = first.state_dict()
    clock.now += 3600.0
    resumed, resumed_trainer = TimeBudget(minutes=20, evaluations=5), fake_trainer(scheduler)
    resumed.load_state_dict(state)
    resumed_trainer.current_epoch = 2
    resumed.on_fit_start(resumed_trainer, None)
    resumed.on_train_start(resumed_trainer, None)
    # 1200 s - 40 s spent - 40 s final evaluation (2 x the 20 s mean epoch) - 4 x 40 s evaluations
    # = 960 s: 48 more epochs of 20 s after the 2 done
    assert resumed_trainer.fit_loop.max_epochs == 50 and resumed_trainer.check_val_every_n_epoch == 10


@pytest.mark.parametrize(
    ("overrides", "heads"),
    [
        ([], 1),  # a fixed number of epochs: the papers' one head
        (["time_budget_minutes=10"], 5),  # a budgeted run: five, the lowest-loss one clusters
        (["time_budget_minutes=10", "module.num_cluster_heads=2"], 2),  # a value set wins
        (["time_budget_minutes=10", "experiment=vtcc_cifar10"], 1),  # a paper preset keeps one
    ],
)
def test_the_contrastive_heads_follow_the_time_budget(overrides, heads):
    from tests.conftest import compose_train

    cfg = compose_train("x", ["objective=contrastive", *overrides], tiny=False)
    assert cfg.module.num_cluster_heads == heads


def test_a_resumed_run_keeps_the_heads_of_its_checkpoint():
    """Resuming a budgeted run of five heads without naming the budget: auto takes the checkpoint's
    five (the budget itself comes back after), and a number set against it is still refused."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_train
    from vtcc.config.resolve import resolve_cluster_heads
    from vtcc.config.resume import resume_differences

    stored = OmegaConf.to_container(compose_train("x", ["time_budget_minutes=10"]), resolve=True)
    current = compose_train("x", ["resume=latest"], resolve=False)
    assert current.module.num_cluster_heads == "auto"
    as_given = OmegaConf.to_container(current, resolve=True)
    assert not [d for d in resume_differences(stored, as_given) if "num_cluster_heads" in d]
    resolve_cluster_heads(current, stored)
    assert current.module.num_cluster_heads == stored["module"]["num_cluster_heads"] == 5
    as_given["module"]["num_cluster_heads"] = 1
    assert "module.num_cluster_heads: 5 -> 1" in resume_differences(stored, as_given)


def test_resumed_and_started_from_runs_train_their_runs_heads(train_in_process, tmp_path):
    """Through vtcc-train's own resolve: a budgeted run (five heads) resumed without naming its
    budget keeps five; a budgeted run started from a one-head run (init_from) trains one."""
    import yaml

    from tests.conftest import compose_train
    from vtcc.train import train

    def heads(run) -> int:
        return yaml.safe_load((run / "config.yaml").read_text())["module"]["num_cluster_heads"]

    budgeted, fixed, started = tmp_path / "budgeted", tmp_path / "fixed", tmp_path / "started"
    train(compose_train(budgeted, ["time_budget_minutes=0.02"], resolve=False))
    train(compose_train(fixed, ["trainer.max_epochs=1"], resolve=False))
    assert (heads(budgeted), heads(fixed)) == (5, 1)
    code, stderr = train_in_process(f"ckpt_path={budgeted / 'checkpoints/last.ckpt'}")
    assert code == 0 and heads(tmp_path / "run") == 5, stderr[-2000:]
    init_from = f"init_from={fixed / 'checkpoints/last.ckpt'}"
    train(compose_train(started, [init_from, "time_budget_minutes=0.02"], resolve=False))
    assert heads(started) == 1
