"""Convolutional patch embedding (Xiao et al. 2021), the stem that makes VTCC train stably."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vtcc.errors import ConfigError


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    height, width = value
    return int(height), int(width)


def default_stem_channels(patch_size: int, embed_dim: int) -> list[int]:
    """Channel widths of the stride-2 convs: doubling and ending at ``embed_dim``.

    With patch 16 and width 384 this is VTCC's 48 -> 96 -> 192 -> 384.
    """
    num_convs = int(math.log2(patch_size))
    return [max(1, embed_dim // 2 ** (num_convs - 1 - i)) for i in range(num_convs)]


class ConvStem(nn.Module):
    """``log2(patch_size)`` stride-2 3x3 conv + BN + ReLU blocks, then a 1x1 conv to ``embed_dim``.

    It replaces timm's ``PatchEmbed`` through ``VisionTransformer(embed_layer=ConvStem)``,
    so it accepts the keywords timm passes and exposes ``num_patches`` and ``grid_size``.
    Input ``(B, C, H, W)``; output ``(B, N, D)`` with ``N = (H / P) * (W / P)``.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        embed_dim: int = 384,
        bias: bool = True,
        stem_channels: Sequence[int] | None = None,
        flatten: bool = True,
        output_fmt: str | None = None,
        strict_img_size: bool = True,
        dynamic_img_pad: bool = False,
        norm_layer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        patch_h, patch_w = _pair(patch_size)
        if patch_h != patch_w or patch_h < 2 or patch_h & (patch_h - 1):
            raise ConfigError(
                f"patch_size={patch_size} cannot be built from stride-2 convs: "
                "use a power of two such as 4, 8 or 16"
            )
        self.img_size = _pair(img_size)
        self.patch_size = (patch_h, patch_w)
        if any(size % patch_h for size in self.img_size):
            raise ConfigError(
                f"image size {self.img_size} is not divisible by patch size {patch_h}: "
                "change the image size or the patch size"
            )
        if dynamic_img_pad or output_fmt not in (None, "NCHW", "NLC"):
            raise ConfigError("ConvStem supports neither dynamic padding nor NHWC output")
        self.grid_size = (self.img_size[0] // patch_h, self.img_size[1] // patch_w)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten = flatten and output_fmt != "NCHW"
        self.strict_img_size = strict_img_size
        channels = list(stem_channels or default_stem_channels(patch_h, embed_dim))
        if len(channels) != int(math.log2(patch_h)):
            raise ConfigError(
                f"stem_channels has {len(channels)} entries; patch size {patch_h} "
                f"needs {int(math.log2(patch_h))} stride-2 convs"
            )
        layers: list[nn.Module] = []
        previous = in_chans
        for width in channels:
            layers += [
                nn.Conv2d(previous, width, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            previous = width
        layers.append(nn.Conv2d(previous, embed_dim, kernel_size=1, bias=bias))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return self.patch_size[0] if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.strict_img_size and tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input size {tuple(x.shape[-2:])} != model image size {self.img_size}")
        x = self.proj(x)
        if self.flatten:
            x = x.flatten(2).transpose(1, 2)
        return self.norm(x)
