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
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
