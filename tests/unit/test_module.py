import random

import numpy as np
import torch
from hydra.utils import instantiate

from vtcc.data.batch import TrainingPair
from vtcc.utils.rng import capture_rng_states, restore_rng_states


def test_training_steps_lower_the_loss_on_a_fixed_batch(tiny_cfg):
    torch.manual_seed(0)
    module = instantiate(tiny_cfg.module, network=instantiate(tiny_cfg.model))
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    images, noise = torch.randn(32, 1, 8, 8), torch.randn(32, 1, 8, 8)
    views = TrainingPair(images, images + 0.1 * noise)
    module.log = module.log_dict = lambda *args, **kwargs: None  # no trainer attached
    losses = []
    for _ in range(15):
        loss = module.training_step(views, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_rng_states_round_trip():
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    states = capture_rng_states()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_states(states)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1]) and first[2] == second[2]
