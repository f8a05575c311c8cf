"""time_budget_minutes sizes the run to the budget: epochs, evaluation cadence and the cosine
schedule's length follow the measured epoch and evaluation times, and every run records why its
training ended (a fake clock: no timing in tests)."""

from __future__ import annotations

import json
import math
import signal
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, TensorDataset

from vtcc.errors import ConfigError, TrainingDivergedError
from vtcc.objectives.contrastive import ContrastiveClustering
from vtcc.optim import check_budget_can_move, warmup_cosine
from vtcc.utils.callbacks import StopRecord, describe_stop, time_budget
from vtcc.utils.callbacks.time_budget import TimeBudget, evaluation_cadence


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_trainer(scheduler) -> SimpleNamespace:
    return SimpleNamespace(
        current_epoch=0,
        global_step=0,
        should_stop=False,
        world_size=1,
        state=SimpleNamespace(fn="fit"),
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
    monkeypatch.setattr(time_budget.time, "perf_counter", clock)
    scheduler = warmup_cosine(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), total_steps=420)
    trainer = fake_trainer(scheduler)
    budget = TimeBudget(minutes=10, evaluations=5)
    budget.on_fit_start(trainer, None)
    budget.on_train_start(trainer, None)
    assert trainer.check_val_every_n_epoch == 1  # the first epoch is evaluated: its time is measured
    budget.on_train_epoch_start(trainer, None)
    clock.now = 11.0  # one 11 s epoch of 7 steps, no evaluation (then taken as long as an epoch)
    trainer.global_step = 7
    budget.on_train_epoch_end(trainer, None)
    # 600 s - 11 s spent - 11 s final evaluation - 4 x 11 s evaluations (all within 10 % of the
    # budget) = 534 s: 339 steps of 11/7 s, 48 epochs and 3 steps of a 50th
    assert trainer.fit_loop.max_epochs == 50 and trainer.check_val_every_n_epoch == 10
    assert scheduler.lr_lambdas[0].total_steps == 7 + 339  # the cosine ends at the budget

    trainer.current_epoch = 1  # the second epoch is slower (29 s) and an evaluation took 5 s
    budget.on_train_epoch_start(trainer, None)
    budget.on_validation_epoch_start(trainer, None)
    clock.now = 16.0
    budget.on_validation_epoch_end(trainer, None)
    clock.now = 45.0
    trainer.global_step = 14
    budget.on_train_epoch_end(trainer, None)
    # median epoch 20 s; 600 - 45 - 5 (final) - 3 x 5 (evaluations to come) = 535 s: 187 steps,
    # 26 epochs and 5 steps of a 29th; three evaluations after epochs 8, 16 and 24
    assert trainer.fit_loop.max_epochs == 29 and trainer.check_val_every_n_epoch == 8
    assert scheduler.lr_lambdas[0].total_steps == 14 + 187


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
    trainer.global_step += trainer.num_training_batches
    budget.on_train_epoch_end(trainer, None)
    trainer.current_epoch += 1


def test_a_resumed_run_keeps_its_budget_time_spent_and_plan(monkeypatch):
    """Stopped after 2 epochs and resumed (with another budget on the command line, an hour later
    on the clock): the third epoch plans exactly as in the uninterrupted run."""
    clock = Clock()
    monkeypatch.setattr(time_budget.time, "perf_counter", clock)

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
    resumed_trainer.current_epoch, resumed_trainer.global_step = 2, 14
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


def test_a_run_resumed_in_mid_epoch_measures_that_epoch_from_the_resume():
    """Resumed from a checkpoint saved in mid-epoch (Ctrl-C), Lightning skips the epoch's start:
    the rest of the epoch, 3 of its 7 batches in 5 s, is measured from the resume, not from 0."""
    clock = Clock()
    clock.now = 5000.0
    scheduler = warmup_cosine(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 420)
    budget, trainer = TimeBudget(minutes=10, clock=clock), fake_trainer(scheduler)
    state = {"seconds": 600.0, "elapsed": 100.0, "epoch_seconds": [10.0], "eval_seconds": [1.0]}
    budget.load_state_dict({**state, "plan": [50, 10, None]})
    trainer.current_epoch, trainer.global_step = 1, 11
    budget.on_fit_start(trainer, None)
    budget.on_train_start(trainer, None)
    for batch_idx in (4, 5, 6):
        clock.now += 5.0 / 3
        trainer.global_step += 1
        budget.on_train_batch_end(trainer, None, None, None, batch_idx)
    budget.on_train_epoch_end(trainer, None)
    # a whole epoch of 11.7 s (median 10.8 s with the first); 600 - 105 spent - 1 (final
    # evaluation) - 3 x 1 (evaluations) = 491 s: 317 steps, 45 epochs and 2 steps after these 2
    assert trainer.fit_loop.max_epochs == 48


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
    """Two epochs (10 s and 31 s) spent of a 10-minute run, resumed with 20 minutes: the plan is
    made again from the measured epochs, with the 41 s already spent counted (not the downtime)."""
    clock = Clock()
    monkeypatch.setattr(time_budget.time, "perf_counter", clock)
    scheduler = warmup_cosine(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 420)
    first, trainer = TimeBudget(minutes=10, evaluations=5), fake_trainer(scheduler)
    first.on_fit_start(trainer, None)
    for seconds in (10.0, 31.0):
        run_epoch(first, trainer, clock, seconds)
    state = first.state_dict()
    clock.now += 3600.0
    resumed, resumed_trainer = TimeBudget(minutes=20, evaluations=5), fake_trainer(scheduler)
    resumed.load_state_dict(state)
    resumed_trainer.current_epoch, resumed_trainer.global_step = 2, 14
    resumed.on_fit_start(resumed_trainer, None)
    resumed.on_train_start(resumed_trainer, None)
    # 1200 s - 41 s spent - 20.5 s final evaluation (unmeasured: the 20.5 s median epoch) - 4 x 20.5 s
    # evaluations = 1056.5 s: 360 steps of 20.5/7 s, 51 epochs and 3 steps after the 2 done
    assert resumed_trainer.fit_loop.max_epochs == 54 and resumed_trainer.check_val_every_n_epoch == 11
    assert scheduler.lr_lambdas[0].total_steps == 14 + 360


@pytest.mark.parametrize(
    ("overrides", "heads"),
    [
        ([], 1),  # a fixed number of epochs: the papers' one head
        (["time_budget_minutes=10"], 5),  # a budgeted run: five, the lowest-loss one clusters
        (["time_budget_minutes=10", "module.num_cluster_heads=2"], 2),  # a value set wins
        (["time_budget_minutes=10", "experiment=vtcc_cifar10"], 1),  # a paper preset keeps one
        # heads on a frozen backbone's cached features: five, as SCAN's code trains several there
        (["model=pretrained"], 5),
        (["model=pretrained", "model.mode=partial"], 1),  # the backbone trains: end to end, one
        (["model=pretrained", "features.cache=false"], 5),  # the views go through it: still frozen
        (["model=pretrained", "module.num_cluster_heads=1"], 1),
    ],
)
def test_the_contrastive_heads_follow_the_time_budget_and_the_frozen_backbone(overrides, heads):
    from tests.conftest import compose_train

    cfg = compose_train("x", ["objective=contrastive", *overrides], tiny=False)
    assert cfg.module.num_cluster_heads == heads


@pytest.mark.parametrize(
    ("overrides", "rate"),
    [
        ([], 3e-4),  # a fixed number of epochs: the papers' (CC's and VTCC's config.yaml)
        (["time_budget_minutes=10"], 6e-4),  # a budgeted run: measured in docs/own-folder.md
        (["time_budget_minutes=10", "module.optimizer.lr=1e-3"], 1e-3),  # a value set wins
        (["time_budget_minutes=10", "experiment=vtcc_cifar10"], 3e-4),  # a paper preset keeps its own
        (["time_budget_minutes=10", "experiment=cc_cifar10"], 3e-4),
    ],
)
def test_the_contrastive_rate_follows_the_time_budget(overrides, rate):
    from tests.conftest import compose_train

    cfg = compose_train("x", ["objective=contrastive", *overrides], tiny=False)
    assert cfg.module.optimizer.lr == rate


def test_a_resumed_run_keeps_its_rate_and_an_objective_without_rates_refuses_auto():
    """Resuming a budgeted run trains at its checkpoint's rate, also one from before the budget's
    rate (3e-4); ``lr=auto`` for an objective that names no rates is one clear error."""
    from tests.conftest import compose_train
    from vtcc.config.recipe import resolve_learning_rate
    from vtcc.objectives import ContrastiveClustering, ScanClustering

    for kept in (3e-4, 6e-4):
        current = compose_train("x", ["resume=latest"], resolve=False)
        assert current.module.optimizer.lr == "auto"
        resolve_learning_rate(current, ContrastiveClustering, {"module": {"optimizer": {"lr": kept}}})
        assert current.module.optimizer.lr == kept
    overrides = ["model=pretrained", "objective=scan", "module.optimizer.lr=auto"]
    scan = compose_train("x", overrides, tiny=False, resolve=False)
    with pytest.raises(ConfigError, match=r"module.optimizer.lr=auto: objective ScanClustering has no rule"):
        resolve_learning_rate(scan, ScanClustering, {})


def test_a_frozen_run_of_one_head_from_before_keeps_one_when_resumed_or_started_from():
    """Frozen-backbone runs trained one head before five became their default: resuming one, or
    starting a run from it (init_from), keeps its one head."""
    from tests.conftest import compose_train
    from vtcc.config.resolve import resolve_cluster_heads
    from vtcc.utils.checkpoint import CONFIG_KEY

    old = {"module": {"num_cluster_heads": 1}}
    for stored, initial in ((old, None), ({}, {CONFIG_KEY: old})):
        cfg = compose_train("x", ["model=pretrained"], tiny=False, resolve=False)
        resolve_cluster_heads(cfg, stored, initial)
        assert cfg.module.num_cluster_heads == 1


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
    stopped = {
        run: json.loads((run / "final_metrics.json").read_text())["stopped"] for run in (budgeted, fixed)
    }
    assert stopped[fixed] == {
        "reason": "epochs_done",
        "epochs": 1.0,
        "training_seconds": stopped[fixed]["training_seconds"],
    }
    assert stopped[budgeted]["reason"] == "budget_spent" and stopped[budgeted]["budget_minutes"] == 0.02
    code, stderr = train_in_process(f"ckpt_path={budgeted / 'checkpoints/last.ckpt'}")
    assert code == 0 and heads(tmp_path / "run") == 5, stderr[-2000:]
    init_from = f"init_from={fixed / 'checkpoints/last.ckpt'}"
    train(compose_train(started, [init_from, "time_budget_minutes=0.02"], resolve=False))
    assert heads(started) == 1


def test_a_run_that_diverges_says_why_in_its_final_metrics(train_in_process, tmp_path, monkeypatch):
    losses = ContrastiveClustering.losses

    def diverging(self, *args, **kwargs):
        terms = losses(self, *args, **kwargs)
        return {**terms, "loss": terms["loss"] * float("nan")}

    monkeypatch.setattr(ContrastiveClustering, "losses", diverging)
    code, stderr = train_in_process("trainer.max_epochs=3")
    assert code == 2 and "NaN or infinite" in stderr
    final = json.loads((tmp_path / "run/final_metrics.json").read_text())
    assert final["stopped"]["reason"] == "nan" and final["stopped"]["epochs"] == 1.0


# A real Lightning fit whose training and evaluation advance a fake clock: every plan, cadence,
# part-epoch stop and schedule below is Lightning's own loop following the callbacks.
BATCHES = 10  # training batches an epoch


class Timed(LightningModule):
    """A tiny model: a training batch takes ``batch_seconds(epoch)`` on ``clock``, an evaluation
    ``eval_seconds``; ``fail`` is raised by the third epoch's fourth step."""

    def __init__(self, clock: Clock, batch_seconds, eval_seconds: float, fail: BaseException | None = None):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.clock, self.batch_seconds, self.eval_seconds, self.fail = (
            clock,
            batch_seconds,
            eval_seconds,
            fail,
        )
        self.evaluated_after: list[int] = []  # the epochs (from 1) the fit evaluated after

    def training_step(self, batch, batch_idx):
        if self.fail is not None and (self.current_epoch, batch_idx) == (2, 3):
            raise self.fail
        self.clock.now += self.batch_seconds(self.current_epoch)
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.clock.now += self.eval_seconds

    def on_validation_epoch_end(self):
        if self.trainer.state.fn == "fit":
            self.evaluated_after.append(self.current_epoch + 1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4 * BATCHES, 2)), batch_size=4)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=4)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.01)
        scheduler = warmup_cosine(optimizer, int(self.trainer.estimated_stepping_batches), warmup_steps=20)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def timed_fit(module: Timed, minutes: float | None, max_epochs: int = 60):
    """Fit ``module`` as vtcc-train does (the budget, if any, and the stop record): the trainer,
    the budget and the record."""
    budget = TimeBudget(minutes, clock=module.clock) if minutes is not None else None
    stop = StopRecord(budget, clock=module.clock)
    trainer = Trainer(
        max_epochs=max_epochs,
        check_val_every_n_epoch=10,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[c for c in (budget, stop) if c is not None],
    )
    trainer.fit(module)
    return trainer, budget, stop


def schedule(trainer):
    return trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]


def test_epochs_a_fifth_of_the_budget_train_for_the_budget():
    """The issue's case, scaled: an epoch is 12 s of a 60 s budget and an evaluation 0.3 s. The
    old plan took an evaluation for two epochs and reserved four: it trained one epoch and
    stopped. Measured, four epochs and most of a fifth fit; the fifth stops at its planned batch,
    in time for the final evaluation, and the cosine ends with it."""
    clock = Clock()
    module = Timed(clock, lambda epoch: 1.2, eval_seconds=0.3)
    trainer, budget, stop = timed_fit(module, minutes=1)
    assert trainer.global_step == 48  # 4 epochs and 8 of the fifth's 10 batches
    assert module.evaluated_after == [1, 2, 3, 4]  # the last, partial epoch: the final evaluation follows
    assert stop.record["reason"] == "budget_spent" and stop.record["epochs"] == pytest.approx(4.8)
    assert stop.record["training_seconds"] >= 0.9 * 60  # 57.6 s of training
    assert budget.elapsed() + 0.3 <= 60  # the final evaluation fits too
    assert schedule(trainer).total_steps == trainer.global_step  # the cosine ends where training ends


def test_an_epoch_longer_than_the_budget_stops_at_the_budget():
    clock = Clock()
    module = Timed(clock, lambda epoch: 10.0, eval_seconds=1.0)  # 100 s epochs, a 30 s budget
    trainer, budget, stop = timed_fit(module, minutes=0.5)
    assert trainer.global_step == 3 and module.evaluated_after == []
    assert stop.record["reason"] == "budget_spent" and stop.record["budget_used"] == pytest.approx(1.0)


def test_a_slow_first_epoch_is_re_planned_and_the_run_trains_on():
    """Another process slows the first epoch threefold (9 s, then 3 s epochs): the old plan
    stopped after it. Re-planned from the recent epochs, the run trains until the budget, losing
    only the time the slow epoch took."""
    runs = {}
    for name, slow in (("idle", 1.0), ("loaded", 3.0)):
        clock = Clock()
        module = Timed(clock, lambda epoch, slow=slow: 0.3 * (slow if epoch == 0 else 1.0), eval_seconds=0.1)
        runs[name] = timed_fit(module, minutes=1)
    (idle, _, _), (loaded, budget, stop) = runs["idle"], runs["loaded"]
    assert idle.global_step >= 180  # 60 s, less the evaluations: about 19 epochs of 3 s
    assert loaded.global_step >= idle.global_step - 2 * BATCHES - 1  # the 6 s lost, no more
    assert stop.record["training_seconds"] >= 0.9 * 60 and budget.elapsed() + 0.1 <= 60
    assert schedule(loaded).total_steps == loaded.global_step


@pytest.mark.parametrize("slow", [range(4, 9), range(16, 100), range(19, 100)])
def test_a_machine_loaded_during_the_run_keeps_the_budget(slow):
    """Epochs 5 to 9, every epoch from the 17th, or the last (the 20th, planned as 8 batches
    before the machine slowed down) take twice as long: the plans follow, and the clock stops a
    last epoch that would overrun. The run ends within the budget, having trained most of it, with
    the cosine near its end."""
    clock = Clock()
    module = Timed(clock, lambda epoch: 0.6 if epoch in slow else 0.3, eval_seconds=0.1)
    trainer, budget, stop = timed_fit(module, minutes=1)
    assert budget.elapsed() + 0.1 <= 60 + 0.6  # within a batch, the final evaluation included
    assert stop.record["training_seconds"] >= 0.85 * 60
    assert schedule(trainer)(trainer.global_step - 1) < 0.05  # the learning rate has decayed


def test_a_long_evaluation_means_fewer_evaluations_not_less_training():
    """An evaluation 1.8 s long, 60 % of an epoch: evaluations keep to a tenth of the budget (the
    first, one more and the final one) and the rest trains, where short ones evaluate four times
    in the fit. The old plan spent about a third of the budget on evaluating."""
    evaluated, trained = {}, {}
    for seconds in (0.1, 1.8):
        clock = Clock()
        module = Timed(clock, lambda epoch: 0.3, eval_seconds=seconds)
        trainer, budget, stop = timed_fit(module, minutes=1)
        evaluated[seconds], trained[seconds] = module.evaluated_after, stop.record["training_seconds"]
        assert budget.elapsed() + seconds <= 60
    assert len(evaluated[0.1]) == 4 and len(evaluated[1.8]) == 2
    assert trained[1.8] >= 0.9 * 60 - 0.3 and trained[0.1] >= 0.9 * 60


@pytest.mark.parametrize(
    ("fail", "reason", "raised"),
    [
        (None, "epochs_done", None),
        (TrainingDivergedError("the loss became NaN"), "nan", TrainingDivergedError),
        (SIGTERMException(), "signal", SIGTERMException),
        (KeyboardInterrupt(), "signal", SystemExit),  # Lightning exits after its graceful shutdown
        (RuntimeError("disk full\nmore"), "error", RuntimeError),
    ],
)
def test_every_run_records_why_its_training_ended(fail, reason, raised):
    clock = Clock()
    module = Timed(clock, lambda epoch: 0.5, eval_seconds=0.1, fail=fail)
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores Ctrl-C once it has seen one
    try:
        if raised is None:
            trainer, _, stop = timed_fit(module, minutes=None, max_epochs=4)
        else:
            with pytest.raises(raised):
                timed_fit(module, minutes=None, max_epochs=4)
            stop = next(c for c in module.trainer.callbacks if isinstance(c, StopRecord))
    finally:
        signal.signal(signal.SIGINT, handler)
    epochs = 4.0 if fail is None else 2.3  # two epochs and three steps of the third
    assert stop.record == {
        "reason": reason,
        "epochs": epochs,
        "training_seconds": pytest.approx(epochs * BATCHES * 0.5),
        **({"error": "RuntimeError: disk full"} if reason == "error" else {}),
    }
    assert describe_stop(stop.record).startswith(f"training stopped after {epochs:g} epochs because")


def test_a_budgeted_run_records_its_budget_and_a_setup_error_records_nothing():
    clock = Clock()
    trainer, budget, stop = timed_fit(Timed(clock, lambda epoch: 0.3, eval_seconds=0.1), minutes=1)
    assert stop.record["budget_minutes"] == 1 and 0.95 <= stop.record["budget_used"] <= 1
    assert "of the 1 min budget used" in describe_stop(stop.record)
    refused = StopRecord()
    refused.on_exception(SimpleNamespace(state=SimpleNamespace(fn="fit")), None, ConfigError("bad"))
    assert refused.record is None and describe_stop(None) is None


@pytest.mark.parametrize(
    ("done", "last", "wanted", "expected"),
    [
        (1, 20, 3, (5, 3)),  # after epochs 5, 10 and 15; the final evaluation follows epoch 20
        (1, 5, 3, (1, 3)),
        (1, 5, 0, (time_budget.NO_EVALUATION, 0)),
        (4, 5, 2, (time_budget.NO_EVALUATION, 0)),  # one epoch left: only the final evaluation
        (2, 2, 2, (time_budget.NO_EVALUATION, 0)),
    ],
)
def test_the_evaluation_cadence_never_evaluates_the_last_epoch(done, last, wanted, expected):
    assert evaluation_cadence(done, last, wanted) == expected
