"""Each way of pairing cached features (vtcc/data/pairings.py) draws what its name says."""

from __future__ import annotations

import pytest
import torch

from vtcc.data.pairings import PAIRINGS, pairing_for
from vtcc.errors import ConfigError

V, N, D = 4, 6, 3


def cache() -> dict[str, torch.Tensor]:
    """Feature value = 100 * view + image (views) or image (evaluation): a drawn row names itself."""
    views = (100 * torch.arange(V)[:, None] + torch.arange(N)[None, :]).float()
    return {
        "views": views[:, :, None].expand(V, N, D).clone(),
        "eval": torch.arange(N).float()[:, None].expand(N, D),
    }


def neighbor(index: torch.Tensor) -> torch.Tensor:
    return (index + 1) % N  # each image's one neighbour: the next one


@pytest.mark.parametrize("name", PAIRINGS)
def test_each_pairing_draws_what_its_name_says(name):
    torch.manual_seed(0)
    pairing = pairing_for(name)
    index = torch.arange(N).repeat(20)
    pair = pairing.pair(cache(), index, neighbor)
    first, second = pair.first[:, 0].long(), pair.second[:, 0].long()
    view_a, image_a, view_b, image_b = first // 100, first % 100, second // 100, second % 100
    assert torch.equal(image_a, index) and pair.cluster
    expected_partner = neighbor(index) if pairing.uses_neighbors else index
    assert torch.equal(image_b, expected_partner)
    if name == "views":
        assert (view_a != view_b).all()  # two distinct views of one image
    if name == "weak_strong":
        assert (view_a % 2 == 0).all() and torch.equal(view_b, view_a + 1)  # one augmentation pass
    if not pairing.uses_views:
        assert (view_a == 0).all() and (view_b == 0).all()  # evaluation features only


def test_an_unknown_pairing_is_named():
    with pytest.raises(ConfigError, match="features.pairing='nearest' is unknown"):
        pairing_for("nearest")
