"""The VTCC backbone: timm's ``VisionTransformer`` with a convolutional stem."""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import VisionTransformer

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
    pos_embed: str = "sincos",
    drop_path_rate: float = 0.0,
    stem_channels: list[int] | None = None,
    grad_checkpointing: bool = False,
) -> VisionTransformer:
    """Build a ViT whose forward returns the CLS token, shape ``(B, embed_dim)``.

    ``pos_embed="sincos"`` freezes a 2-D sin-cos position embedding (VTCC, MoCo v3);
    ``"learn"`` keeps timm's learned one. ``grad_checkpointing`` recomputes block activations in
    the backward pass: less memory for large models and images, about a third more compute.
    """
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
    model.set_grad_checkpointing(grad_checkpointing)
    return model
