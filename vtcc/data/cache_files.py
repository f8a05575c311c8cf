"""The files of a frozen backbone's feature cache: the key that names one (:func:`extraction_key`,
over :func:`cache_key` and :func:`weights_digest`: what the features depend on) and the reading of
one (:func:`read_vtcc_cache`: a file vtcc wrote, with its :data:`CACHE_FORMAT` marker; anything else
at the path is refused). The datamodule that extracts, caches and serves the features:
:mod:`vtcc.data.feature_cache`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vtcc.data.images import ImageDataModule
from vtcc.data.pairings import pairing_for
from vtcc.errors import ConfigError
from vtcc.io.reader import check_regular

CACHE_FORMAT = "vtcc-feature-cache/1"  # stored in every cache: a file without it is not ours to replace


def cache_key(parts: dict[str, Any]) -> str:
    """A short hash of everything the cached features depend on (model, weights file, data, transform,
    and the torch and timm versions that computed them: another release may compute other numbers)."""
    import timm

    checkpoint = (parts.get("model") or {}).get("checkpoint")
    if checkpoint and Path(checkpoint).is_file():
        stat = Path(checkpoint).stat()
        parts = {
            **parts,
            "checkpoint_file": [str(Path(checkpoint).resolve()), stat.st_size, stat.st_mtime_ns],
        }
    parts = {**parts, "versions": {"torch": str(torch.__version__), "timm": str(timm.__version__)}}
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _not_a_vtcc_cache(path: Path, reason: str) -> ConfigError:
    return ConfigError(
        f"feature cache {path} exists and was not written by this vtcc's feature cache ({reason}): "
        "move it away or set features.cache_dir to another folder"
    )


def read_vtcc_cache(path: Path, mmap: bool = False) -> dict[str, torch.Tensor] | None:
    """The cache at ``path`` without its marker; None when there is none. Anything else there (a
    user's weights, a text file, another format's cache) is refused, never replaced."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        check_regular(path)  # never a FIFO or device (the read would hang) nor a folder
        cache = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # any failure: the file is not a cache we wrote
        raise _not_a_vtcc_cache(path, f"not a readable torch file: {type(error).__name__}") from error
    marker = cache.get("format") if isinstance(cache, dict) else None
    if marker != CACHE_FORMAT:
        reason = f"format {marker!r}, this vtcc writes {CACHE_FORMAT!r}" if marker else "no vtcc marker"
        raise _not_a_vtcc_cache(path, reason)
    return {k: v for k, v in cache.items() if k != "format"}


def weights_digest(module: nn.Module) -> str:
    """A hash of every tensor of ``module``'s state dict (names, shapes, dtypes and bytes): features
    cached for one set of weights are never served to another (a checkpoint's altered backbone
    cannot plant features under the key of an honest run)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def extraction_key(
    features: dict[str, Any],
    model: dict[str, Any],
    data: dict[str, Any],
    augment: Any,
    seed: int | None,
    datamodule: ImageDataModule,
    backbone: nn.Module,
) -> str:
    """The cache key of a frozen backbone's features: what changes them (the backbone's model
    settings and weights, the data's settings and contents, the views' recipe and seed) and nothing
    else. The nodes come resolved, as plain data, from the assembly (:func:`vtcc.build.build_data`);
    ``datamodule`` is set up (the key hashes its contents)."""
    views = int(features["num_views"]) if pairing_for(features.get("pairing", "views")).uses_views else 0
    ignored = {"batch_size", "eval_batch_size", "num_workers", *([] if views else ["train_transform"])}
    return cache_key(
        {
            "model": {
                k: v
                for k, v in model.items()
                if k in ("name", "checkpoint", "pretrained", "model_kwargs", "backbones")
            },
            "data_fingerprint": datamodule.fingerprint(),
            "backbone_weights": weights_digest(backbone),  # what computes the features
            "extraction": [features.get("device", "auto"), torch.cuda.is_available(), "float32"],
            "data": {k: v for k, v in data.items() if k not in ignored},
            # Augmented views depend on the recipe and the seed; the evaluation features alone do
            # not, so every objective that reads only them (TEMI, TURTLE, self-labelling) shares them.
            "augment": augment if views else None,
            "num_views": views,
            "seed": seed if views else None,
        }
    )
