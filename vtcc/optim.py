"""Learning-rate schedules, built as partials by Hydra and completed in ``configure_optimizers``."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from vtcc.errors import ConfigError


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up for ``warmup_steps``, then cosine decay to ``min_lr_ratio`` of the base rate."""
    if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError("warmup_steps must be >= 0 and min_lr_ratio within [0, 1]")
    return LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps, min_lr_ratio))


class WarmupCosine:
    """The factor of :func:`warmup_cosine`. An object, not a closure: a time budget can move
    ``total_steps`` once it knows how many steps fit (the schedule then ends at the budget), and
    LambdaLR's state dict keeps its attributes, so a resumed run has the same schedule."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> None:
        self.total_steps = total_steps
        self.warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
