"""The VTCC backbone: timm's ``VisionTransformer`` with a convolutional stem."""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import torch
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vtcc.errors import ConfigError
from vtcc.models.conv_stem import ConvStem


def vit_conv_stem(
    img_size: int = 224,
    patch_size: int = 16,
    in_chans: int = 3,
    embed_dim: int = 384,
    depth: int = 8,
    num_heads: int = 12,
    mlp_ratio: float = 4.0,
    pos_embed: Literal["sincos", "learn"] = "sincos",
    drop_path_rate: float = 0.0,
    stem_channels: list[int] | None = None,
    grad_checkpointing: bool = False,
    weight_init: Literal["vtcc", "timm"] = "vtcc",
) -> VisionTransformer:
    """Build a ViT whose forward returns the CLS token, shape ``(B, embed_dim)``.

    ``pos_embed="sincos"`` freezes a 2-D sin-cos position embedding (VTCC, MoCo v3);
    ``"learn"`` keeps timm's learned one. ``grad_checkpointing`` recomputes block activations in
    the backward pass: less memory for large models and images, about a third more compute.
    ``weight_init="vtcc"`` is VTCC's (MoCo v3's) initialisation, part of its stable training from
    scratch (:func:`init_vtcc_weights`); ``"timm"`` keeps timm's truncated normal (std 0.02).
    """
    if weight_init not in ("vtcc", "timm"):
        raise ConfigError(f"weight_init={weight_init!r} is unknown: use 'vtcc' or 'timm'")
    if pos_embed not in ("sincos", "learn"):
        raise ConfigError(f"pos_embed={pos_embed!r} is unknown: use 'sincos' or 'learn'")
    if embed_dim % num_heads:
        raise ConfigError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
    if pos_embed == "sincos" and embed_dim % 4:
        raise ConfigError(f"sin-cos position embedding needs embed_dim divisible by 4, got {embed_dim}")
    model = VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=0,
        global_pool="token",
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        drop_path_rate=drop_path_rate,
        embed_layer=partial(ConvStem, stem_channels=stem_channels),
    )
    if pos_embed == "sincos":
        grid = build_sincos2d_pos_embed(list(model.patch_embed.grid_size), dim=embed_dim)
        cls_position = torch.zeros(1, embed_dim)
        with torch.no_grad():
            model.pos_embed.copy_(torch.cat([cls_position, grid]).unsqueeze(0))
        model.pos_embed.requires_grad_(False)
    if weight_init == "vtcc":
        init_vtcc_weights(model)
    model.set_grad_checkpointing(grad_checkpointing)
    return model


def init_vtcc_weights(model: VisionTransformer) -> None:
    """VTCC's ``ViT_VTCC.__init__`` (modules/vtcc.py): every Linear xavier-uniform, with Q, K and V of
    ``qkv`` as three matrices (bound sqrt(6 / (D + D))), zero biases, CLS token N(0, 1e-6).

    Convolutions and norms keep PyTorch's defaults, as in the official code.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            if "qkv" in name:
                fan_out, fan_in = module.weight.shape
                bound = math.sqrt(6.0 / (fan_out // 3 + fan_in))
                nn.init.uniform_(module.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    nn.init.normal_(model.cls_token, std=1e-6)
