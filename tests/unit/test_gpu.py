"""What only a CUDA device can check; skipped elsewhere (`pytest -m gpu` runs them on a GPU machine)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import compose_train
from vtcc.utils.rng import capture_rng_states, restore_rng_states

pytestmark = pytest.mark.gpu


def test_vtcc_augmentation_runs_on_the_device_with_per_image_parameters():
    cfg = compose_train("x", ["augment=vtcc", "data=cifar10", "data.image_size=64"], tiny=False)
    augment = instantiate(cfg.augment).cuda()
    images = torch.full((16, 3, 96, 96), 128, dtype=torch.uint8, device="cuda")
    images[:, :, :48] = 255  # a bright top half: crops differ image to image
    view_a, view_b = augment(images)
    assert view_a.device.type == "cuda" and view_a.dtype == torch.float32 and view_a.shape == (16, 3, 64, 64)
    assert len({round(v, 4) for v in view_a.mean(dim=(1, 2, 3)).tolist()}) > 8  # not one draw for all


def test_cuda_random_state_round_trips():
    torch.cuda.manual_seed_all(3)
    states = capture_rng_states()
    first = torch.rand(4, device="cuda")
    restore_rng_states(states)
    assert torch.equal(first, torch.rand(4, device="cuda"))


def test_the_exact_neighbour_search_on_the_gpu_finds_the_cpus_neighbours():
    from vtcc.knn import nearest_neighbors

    features = torch.randn(3000, 64, generator=torch.Generator().manual_seed(0))
    on_gpu = nearest_neighbors(features, 10, chunk=700, device="cuda")
    on_cpu = nearest_neighbors(features, 10, chunk=700, device="cpu")
    assert on_gpu.device.type == "cpu" and (on_gpu == on_cpu).float().mean() > 0.999  # float ties aside
