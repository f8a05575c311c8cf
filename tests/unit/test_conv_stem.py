import pytest
import torch
from torch import nn

from vtcc.errors import ConfigError
from vtcc.models.conv_stem import ConvStem, default_stem_channels


@pytest.mark.parametrize(
    ("img_size", "patch_size", "in_chans", "embed_dim"),
    [(224, 16, 3, 384), (32, 4, 3, 64), (16, 4, 1, 32), (64, 8, 1, 48), (32, 2, 3, 16)],
)
def test_output_shape_and_grid(img_size, patch_size, in_chans, embed_dim):
    stem = ConvStem(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
    grid = img_size // patch_size
    assert stem.grid_size == (grid, grid)
    assert stem.num_patches == grid * grid
    out = stem(torch.randn(2, in_chans, img_size, img_size))
    assert out.shape == (2, grid * grid, embed_dim)


def test_vtcc_stem_layers_at_patch_16():
    stem = ConvStem(img_size=224, patch_size=16, in_chans=3, embed_dim=384)
    convs = [m for m in stem.proj if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (3, 48),
        (48, 96),
        (96, 192),
        (192, 384),
        (384, 384),
    ]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 4 + [(1, 1)]
    assert [c.stride for c in convs] == [(2, 2)] * 4 + [(1, 1)]
    assert all(c.bias is None for c in convs[:4]) and convs[-1].bias is not None
    assert sum(isinstance(m, nn.BatchNorm2d) for m in stem.proj) == 4
    assert sum(isinstance(m, nn.ReLU) for m in stem.proj) == 4


def test_default_channels_double_and_end_at_embed_dim():
    assert default_stem_channels(16, 384) == [48, 96, 192, 384]
    assert default_stem_channels(4, 64) == [32, 64]


@pytest.mark.parametrize("patch_size", [3, 6, 1])
def test_patch_size_must_be_power_of_two(patch_size):
    with pytest.raises(ConfigError, match="power of two"):
        ConvStem(img_size=24, patch_size=patch_size)


def test_image_size_must_divide_by_patch():
    with pytest.raises(ConfigError, match="not divisible"):
        ConvStem(img_size=30, patch_size=4)


def test_wrong_input_size_is_rejected():
    stem = ConvStem(img_size=32, patch_size=4, embed_dim=16)
    with pytest.raises(ValueError, match="input size"):
        stem(torch.randn(1, 3, 16, 16))
