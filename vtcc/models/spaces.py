"""Several pretrained backbones as one: representation spaces side by side, each backbone with its
own preprocessing (``model.backbones``).

The data are prepared once, at the largest backbone's image size and without normalisation
(pixels in [0, 1]); each member then resizes them to its own size, converts the channels it
takes and normalises by its own mean and std before its forward pass. The features of all
members are concatenated in ``model.backbones`` order (``space_dims`` gives each one's width):
a frozen run caches them once, TURTLE reads each space apart, and the other objectives read the
concatenation with each space L2-normalised (``model.normalize_spaces``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vtcc.errors import ConfigError

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
PREPROCESSING = ("image_size", "mean", "std", "interpolation")  # a member's own, resolved once


def normalize_each_space(features: torch.Tensor, space_dims: Sequence[int]) -> torch.Tensor:
    """``(B, sum d_s)`` features with each space's part L2-normalised (in at least float32): no
    backbone outweighs another by the scale of its features."""
    parts = torch.split(features.float(), list(space_dims), dim=-1)
    return torch.cat([F.normalize(part, dim=-1) for part in parts], dim=-1)


class SpaceMember(nn.Module):
    """One backbone behind its own preprocessing: ``(B, C, H, W)`` pixels in [0, 1] to ``(B, d)``."""

    def __init__(
        self,
        backbone: nn.Module,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        if len(mean) not in (1, 3) or len(std) != len(mean):
            raise ConfigError(f"a backbone's mean {list(mean)} and std {list(std)} must have 1 or 3 channels")
        self.backbone = backbone
        self.image_size = int(image_size)
        self.interpolation = interpolation if interpolation in INTERPOLATIONS else "bilinear"
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.num_features = int(backbone.num_features)

    @property
    def in_chans(self) -> int:
        return int(self.mean.shape[1])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[1] == 3 and self.in_chans == 1:
            weights = pixels.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
            pixels = (pixels * weights).sum(dim=1, keepdim=True)
        elif pixels.shape[1] == 1 and self.in_chans == 3:
            pixels = pixels.expand(-1, 3, -1, -1)
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            smooth = {} if self.interpolation == "nearest" else {"align_corners": False, "antialias": True}
            pixels = F.interpolate(
                pixels, size=(self.image_size, self.image_size), mode=self.interpolation, **smooth
            )
        return self.backbone((pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype))


class SpacesBackbone(nn.Module):
    """Backbones side by side: ``(B, C, H, W)`` pixels in [0, 1] to ``(B, sum d_s)``."""

    def __init__(self, members: Sequence[SpaceMember]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ConfigError("model.backbones is empty: give one or more backbones")
        self.members = nn.ModuleList(members)
        self.space_dims = [member.num_features for member in members]
        self.num_features = sum(self.space_dims)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.cat([member(pixels) for member in self.members], dim=1)


def backbone_entry(entry: Any, index: int) -> dict[str, Any]:
    """A ``model.backbones`` item as ``{name, checkpoint, pretrained, model_kwargs}``: a timm name
    (hub weights), a vtcc run's ``.ckpt``, or a mapping with those keys (a local ``.pth`` /
    ``.safetensors`` file as ``checkpoint`` beside its timm ``name``)."""
    key = f"model.backbones[{index}]"
    if isinstance(entry, str):
        if entry.endswith(".ckpt"):
            return {"name": "vtcc_run", "checkpoint": entry, "pretrained": True, "model_kwargs": None}
        if entry.endswith((".pth", ".pt", ".safetensors", ".bin")):
            raise ConfigError(
                f"{key}={entry} is a weights file without its architecture: give "
                f"{{name: <timm model>, checkpoint: {entry}}}"
            )
        return {"name": entry, "checkpoint": None, "pretrained": True, "model_kwargs": None}
    if isinstance(entry, dict) and isinstance(entry.get("name", "vtcc_run"), str):
        unknown = sorted(set(entry) - {"name", "checkpoint", "pretrained", "model_kwargs", *PREPROCESSING})
        if unknown:
            raise ConfigError(
                f"{key}.{unknown[0]} is not a backbone setting: use name, checkpoint, pretrained, "
                "model_kwargs"
            )
        checkpoint = entry.get("checkpoint")
        if "name" not in entry and not (isinstance(checkpoint, str) and checkpoint.endswith(".ckpt")):
            raise ConfigError(f"{key} has no name: give a timm model name (or a vtcc run's .ckpt)")
        return {
            "name": entry.get("name", "vtcc_run"),
            "checkpoint": checkpoint,
            "pretrained": bool(entry.get("pretrained", True)),
            "model_kwargs": entry.get("model_kwargs"),
            **{key: entry[key] for key in PREPROCESSING if key in entry},  # stored by the resolver
        }
    raise ConfigError(
        f"{key}={entry!r} is not a backbone: give a timm name, a vtcc run's .ckpt, or "
        "{name: <timm model>, checkpoint: <file>}"
    )


def plain(value: Any) -> Any:
    """A setting as plain data: mappings as dicts, sequences (not strings) as lists, whatever
    container the config system handed over (a component never reads the config system's types)."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(item) for item in value]
    return value


def backbone_entries(backbones: Any) -> list[dict[str, Any]]:
    """Every ``model.backbones`` item as :func:`backbone_entry` gives it."""
    backbones = plain(backbones)
    if not isinstance(backbones, list | tuple):
        raise ConfigError(
            f"model.backbones={backbones!r} must be a list, e.g. model.backbones=[<a>.ckpt,<b>.ckpt]"
        )
    return [backbone_entry(entry, index) for index, entry in enumerate(backbones)]
