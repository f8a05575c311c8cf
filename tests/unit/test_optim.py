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


def test_decay_over_the_last_fraction_holds_the_base_rate_before_it():
    """decay_fraction=0.5 of the 10 steps after a 2-step warm-up: the base rate through step 7,
    then the cosine over steps 7-12 (its value at step 7 + i is 0.5 * (1 + cos(pi * i / 5)))."""
    rates = learning_rates(12, warmup_steps=2, decay_fraction=0.5)
    assert rates[:8] == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert rates[8:] == pytest.approx([0.5 * (1 + math.cos(math.pi * i / 5)) for i in range(1, 5)])
    whole = learning_rates(12, warmup_steps=2, min_lr_ratio=0.1)
    assert whole == pytest.approx(learning_rates(12, warmup_steps=2, min_lr_ratio=0.1, decay_fraction=1.0))


def test_a_replan_moves_the_decay_with_the_end():
    """A time budget that finds room for 22 steps: the decay keeps its share (half of the 20 after
    the warm-up), so it starts at step 12, not at the first plan's step 7."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    factor = warmup_cosine(optimizer, total_steps=12, warmup_steps=2, decay_fraction=0.5).lr_lambdas[0]
    factor.replan(22)
    assert [factor(step) for step in (7, 12)] == [1.0, 1.0]
    assert factor(17) == pytest.approx(0.5) and factor(22) == pytest.approx(0.0)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_a_decay_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ConfigError, match="decay_fraction"):
        learning_rates(5, decay_fraction=fraction)
