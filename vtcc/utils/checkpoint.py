"""Finding and safely loading vtcc checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from vtcc.config.stored import check_stored_config, upgrade_stored_config
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
    check_stored_config(checkpoint[CONFIG_KEY], path)  # plain data of the kind vtcc writes, or refused
    checkpoint[CONFIG_KEY] = upgrade_stored_config(checkpoint[CONFIG_KEY])  # older names, today's
    check_stored_types(checkpoint[CONFIG_KEY], path)
    return checkpoint


def check_stored_types(config: dict[str, Any], path: str | Path) -> None:
    """Every stored value has the type its constructor takes (the schema a run is checked against)."""
    from omegaconf import OmegaConf

    from vtcc.config.validate import validate_config

    try:
        validate_config(OmegaConf.create(config))
    except ConfigError as error:
        raise ConfigError(f"{path} stores a setting vtcc would not write: {error}") from error


def find_checkpoints(log_dir: str | Path, task_name: str = "train") -> list[Path]:
    """Every run's ``last.ckpt`` or ``interrupted.ckpt`` under ``log_dir/task_name``, newest first."""
    runs = Path(log_dir, task_name)
    candidates = [*runs.glob("*/checkpoints/last.ckpt"), *runs.glob("*/checkpoints/interrupted.ckpt")]
    if not candidates:
        raise ConfigError(
            f"resume=latest found no checkpoints/last.ckpt under {Path(log_dir, task_name)}: "
            "train first, or pass ckpt_path=<file>"
        )
    return sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True)


def own_cache_dir(cfg: Any) -> str:
    """The feature cache folder of the current command's settings (as ``features.cache_dir`` of a
    training run with these paths): eval and predict cache features there, never where a checkpoint says."""
    return str(Path(str(cfg.paths.log_dir)) / "cache" / "features")


_RESTORING: set[Path] = set()  # checkpoints being restored now: a run's backbone may be another run's


def restore_run(path: str | Path, cache_dir: str | None = None) -> tuple[Any, Any]:
    """The run's config and its LightningModule with the checkpoint's weights, on the CPU.

    The config is rebuilt from the checked description the checkpoint stores
    (:func:`vtcc.config.stored.rebuild_settings`): no downloads, and a frozen backbone's
    features are cached in ``cache_dir`` (the current command's) when given."""
    from omegaconf import OmegaConf

    from vtcc.build import build_module, build_network
    from vtcc.config.stored import rebuild_settings
    from vtcc.utils.environment import ENVIRONMENT_KEY, warn_if_environment_changed

    resolved = Path(path).resolve()
    if resolved in _RESTORING:
        raise ConfigError(f"{path} names itself as its own backbone (model.checkpoint): do not use it")
    checkpoint = load_checkpoint(path)
    warn_if_environment_changed(checkpoint.get(ENVIRONMENT_KEY), str(path))
    settings = checkpoint[CONFIG_KEY]
    if cache_dir is not None:
        settings = rebuild_settings(settings, cache_dir)
    run_cfg = OmegaConf.create(settings)
    _RESTORING.add(resolved)
    try:  # the checkpoint holds the weights: no download, no weights file needed
        network = build_network(run_cfg, weights_in_checkpoint=True)
        module = build_module(run_cfg, network, for_training=False)
    finally:
        _RESTORING.discard(resolved)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise ConfigError(f"{path} does not match the model its config describes: {error}") from error
    return run_cfg, module


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes to a temporary file in the same folder, then renames it over the target; reads with
    ``weights_only=True``.

    A crash while saving leaves the previous checkpoint intact; a reader never sees a partial file.
    """

    def load_checkpoint(
        self, path: Any, map_location: Any = lambda storage, loc: storage, weights_only: bool | None = True
    ) -> Any:
        """Resuming reads the file as data too (Lightning's default leaves it to torch's)."""
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            sync_directory(path.parent)  # the rename itself survives a power cut
        finally:
            temporary.unlink(missing_ok=True)


def record_best_head(path: Path, head: int) -> None:
    """Write ``head`` as the best cluster head of the checkpoint at ``path`` (atomically; the rest
    of the checkpoint as it was), so evaluation, prediction and ``init_from`` use it."""
    checkpoint = load_checkpoint(path)
    key = "network.best_head"
    if int(checkpoint["state_dict"][key]) == head:
        return
    checkpoint["state_dict"][key] = torch.tensor(head, dtype=torch.long)
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)


def sync_directory(folder: Path) -> None:
    """fsync a directory, so a rename into it is durable (a no-op where directories cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


# Model settings that change no weight's shape: a run may resume or start from weights trained with others.
NON_STRUCTURAL = {"grad_checkpointing", "drop_path_rate", "pretrained", "checkpoint", "weight_init"}


def config_differences(stored: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """``section.key: stored -> current`` for every setting under ``keys`` that differs."""
    differences = []
    for section in keys:
        old, new = stored.get(section), current.get(section)
        if not isinstance(old, dict) or not isinstance(new, dict):
            if old != new:
                differences.append(f"{section}: {old!r} -> {new!r}")
            continue
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key) and not key.startswith("_partial"):
                differences.append(f"{section}.{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return differences
