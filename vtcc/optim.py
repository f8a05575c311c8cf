"""Learning-rate schedules, built as partials by Hydra and completed in ``configure_optimizers``."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from vtcc.errors import ConfigError
from vtcc.registry import register


@register(
    "scheduler",
    "warmup_cosine",
    configless="set as module.scheduler on the command line (objective/contrastive.yaml shows how)",
)
def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    decay_fraction: float = 1.0,
) -> LambdaLR:
    """Linear warm-up for ``warmup_steps``, then cosine decay to ``min_lr_ratio`` of the base rate
    over the last ``decay_fraction`` of the steps after the warm-up, the base rate held before it
    (1: the decay spans them all; 0.2: warm-up, stable, decay, the cool-down of budgeted training,
    Hagele et al. 2024, *Scaling Laws and Compute-Optimal Training Beyond Fixed Training
    Durations*)."""
    if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0 or not 0.0 < decay_fraction <= 1.0:
        raise ConfigError(
            "warmup_steps must be >= 0, min_lr_ratio within [0, 1] and decay_fraction within (0, 1]"
        )
    return LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps, min_lr_ratio, decay_fraction))


class WarmupCosine:
    """The factor of :func:`warmup_cosine`. An object, not a closure: a time budget can move
    ``total_steps`` once it knows how many steps fit (the schedule then ends at the budget), and
    LambdaLR's state dict keeps its attributes, so a resumed run has the same schedule."""

    def __init__(
        self, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0, decay_fraction: float = 1.0
    ) -> None:
        self.total_steps = total_steps
        self.warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
        self.min_lr_ratio = min_lr_ratio
        self.decay_fraction = decay_fraction  # kept in the state dict: a resumed run decays alike
        self.planned_total_steps = total_steps  # the first plan: a re-plan keeps its warm-up share
        self.planned_warmup_steps = self.warmup_steps

    def replan(self, total_steps: int) -> None:
        """The run now has ``total_steps``: the cosine ends there, and the warm-up keeps its share
        of the run (never more steps than configured), so a shortened run still reaches its base
        rate and decays instead of ending mid-warm-up."""
        share = self.planned_warmup_steps / max(1, self.planned_total_steps)
        self.total_steps = total_steps
        warmup = min(self.planned_warmup_steps, round(share * total_steps))
        self.warmup_steps = min(warmup, max(total_steps - 1, 0))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        after = self.total_steps - self.warmup_steps  # steps after the warm-up; the decay takes its share
        decay = max(1.0, self.decay_fraction * after)
        progress = min(1.0, max(0.0, step - self.warmup_steps - (after - decay)) / decay)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def follows_a_replan(scheduler: object) -> bool:
    """Whether a time budget can move the schedule's length: vtcc's warm-up cosine can; a torch
    scheduler with its own fixed length (``T_max``, ``total_iters``) cannot."""
    return isinstance(scheduler, LambdaLR) and all(isinstance(f, WarmupCosine) for f in scheduler.lr_lambdas)


def build_scheduler(
    factory: Callable[..., LRScheduler], optimizer: Optimizer, total_steps: int
) -> LRScheduler:
    """The scheduler of ``module.scheduler``: vtcc's schedules are told the run's ``total_steps``;
    a torch scheduler keeps the length its own settings give it (``T_max``, ``total_iters``)."""
    import inspect

    takes_steps = "total_steps" in inspect.signature(factory).parameters
    return factory(optimizer, total_steps=total_steps) if takes_steps else factory(optimizer)


def check_budget_can_move(factory: Callable[..., LRScheduler] | None) -> None:
    """Before any work: a time budget re-plans the run, so its schedule must be one it can move."""
    import torch

    if factory is None:
        return
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = build_scheduler(factory, optimizer, total_steps=100)
    if not follows_a_replan(scheduler):
        raise ConfigError(refused_scheduler(type(scheduler).__name__))


def refused_scheduler(name: str) -> str:
    """Why a time budget cannot move the scheduler ``name``: one line."""
    return (
        f"time_budget_minutes re-plans the run's length, which the scheduler {name} (its length fixed "
        "in its settings) cannot follow: use module.scheduler's vtcc.optim.warmup_cosine, or drop "
        "time_budget_minutes"
    )
