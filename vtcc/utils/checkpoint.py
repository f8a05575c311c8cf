"""Finding and safely loading vtcc checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vtcc.errors import ConfigError

CONFIG_KEY = "vtcc_config"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True`` (no code runs from the file) and check it is a vtcc checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist: pass ckpt_path=<file>.ckpt of a vtcc run")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unpickling failure means the file is unusable as given
        raise ConfigError(
            f"{path} is not a readable vtcc checkpoint ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise ConfigError(f"{path} is not a vtcc checkpoint: it has no stored training config")
    return checkpoint


def find_latest_checkpoint(log_dir: str | Path, task_name: str = "train") -> Path:
    """The newest ``last.ckpt`` among the runs under ``log_dir/task_name``."""
    candidates = list(Path(log_dir, task_name).glob("*/checkpoints/last.ckpt"))
    if not candidates:
        raise ConfigError(
            f"resume=latest found no checkpoints/last.ckpt under {Path(log_dir, task_name)}: "
            "train first, or pass ckpt_path=<file>"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime)
