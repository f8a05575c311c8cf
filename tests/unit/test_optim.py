import math

import pytest
import torch

from vtcc.errors import ConfigError
from vtcc.optim import warmup_cosine


def learning_rates(steps: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, total_steps=steps, **kwargs)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_then_cosine_to_floor():
    rates = learning_rates(12, warmup_steps=2, min_lr_ratio=0.1)
    assert rates[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert rates[2 + 5] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(rates[2:], rates[3:], strict=False))
    assert rates[-1] > 0.1


def test_invalid_schedule_is_rejected():
    with pytest.raises(ConfigError):
        learning_rates(5, min_lr_ratio=2.0)
