"""Finding and safely loading vtcc checkpoints (restoring a run from one is the assembly's:
:func:`vtcc.build.restore_run`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import OmegaConf

from vtcc.config.stored import check_stored_config, upgrade_stored_config
from vtcc.config.validate import validate_config
from vtcc.errors import ConfigError
from vtcc.io.reader import check_regular, open_regular, reader
from vtcc.io.writer import Writer
from vtcc.models.pretrained import RUN_CHECKPOINTS
from vtcc.plugins import PLUGINS_KEY, require_plugins
from vtcc.utils.environment import ENVIRONMENT_KEY

CONFIG_KEY = "vtcc_config"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archive: each tensor's bytes checked against its record


def read_torch_file(path: str | Path) -> Any:
    """What a ``torch.save`` file holds, read as data (``weights_only=True``): only a regular file
    in torch.save's zip format, where torch checks every tensor's declared size against the
    bytes the archive holds before allocating it (the legacy format would allocate what the file
    declares). Refused in one line otherwise."""
    with open_regular(path) as handle:
        if handle.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            raise ConfigError(f"{path} is not a readable vtcc checkpoint (not an archive torch.save writes)")
        handle.seek(0)
        try:
            return torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as error:  # any unpickling failure means the file is unusable as given
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            raise ConfigError(f"{path} is not a readable vtcc checkpoint ({reason})") from error


@reader("checkpoint")
def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True`` (no code runs from the file; :func:`read_torch_file`) and
    check it is a vtcc checkpoint whose stored config is plain data of the kind vtcc writes."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"checkpoint {path} does not exist: pass ckpt_path=<file>.ckpt of a vtcc run")
    checkpoint = read_torch_file(path)
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise ConfigError(f"{path} is not a vtcc checkpoint: it has no stored training config")
    for key in (CONFIG_KEY, PLUGINS_KEY, ENVIRONMENT_KEY):  # before anything walks them
        check_stored_size(checkpoint.get(key), path, key)
    require_plugins(checkpoint[CONFIG_KEY], checkpoint.get(PLUGINS_KEY), path)  # one line: what to install
    check_stored_config(checkpoint[CONFIG_KEY], path)  # plain data of the kind vtcc writes, or refused
    checkpoint[CONFIG_KEY] = upgrade_stored_config(checkpoint[CONFIG_KEY])  # older names, today's
    check_stored_types(checkpoint[CONFIG_KEY], path)
    return checkpoint


# What vtcc stores beside the weights (config, plugins, environment) is a few hundred values, a
# few levels deep; the pickle's shared references could make a small file's record expand to
# billions of values (and nest past Python's recursion limit) for whatever walks it.
MAX_STORED_VALUES = 100_000
MAX_STORED_DEPTH = 64


def check_stored_size(value: Any, path: str | Path, key: str) -> None:
    """Refuse, in one line, a stored record larger or deeper than any vtcc writes, counting every
    value as the walks that check and use it will meet it (a shared one once per reference)."""
    stack, seen = [(value, 0)], 1
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: tuple[Any, ...] = (*node.keys(), *node.values())
        elif isinstance(node, list | tuple | set | frozenset):
            children = tuple(node)
        else:
            continue
        seen += len(children)
        if seen > MAX_STORED_VALUES or depth >= MAX_STORED_DEPTH:
            raise ConfigError(
                f"{path} stores a {key} larger or deeper than vtcc ever writes (over "
                f"{MAX_STORED_VALUES} values or {MAX_STORED_DEPTH} levels): this file was not written "
                "by vtcc as it is; do not use it"
            )
        stack.extend((child, depth + 1) for child in children)


def check_stored_types(config: dict[str, Any], path: str | Path) -> None:
    """Every stored value has the type its constructor takes (the schema a run is checked against)."""
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


def run_preprocessing(path: str | Path) -> dict[str, Any]:
    """The preprocessing a vtcc run (its ``.ckpt``) used: image size, mean, std, interpolation
    (for ``model.checkpoint=<run>.ckpt``: :data:`vtcc.models.pretrained.RUN_CHECKPOINTS`)."""
    data = load_checkpoint(path)[CONFIG_KEY]["data"]
    settings = {key: data[key] for key in ("image_size", "mean", "std") if key in data}
    return {**settings, "interpolation": data.get("interpolation", "bilinear")}


RUN_CHECKPOINTS.preprocessing = run_preprocessing


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes through :class:`vtcc.io.writer.Writer` over ``root`` (the run's folder; default: the
    checkpoint's own folder): a new file in the same folder, flushed to the disk, renamed over the
    target, never written through a link nor onto a file vtcc did not write; reads with
    ``weights_only=True``.

    A crash while saving leaves the previous checkpoint intact; a reader never sees a partial file.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__()
        self.root = root

    def load_checkpoint(
        self, path: Any, map_location: Any = lambda storage, loc: storage, weights_only: bool | None = True
    ) -> Any:
        """Resuming reads the file as data too (Lightning's default leaves it to torch's), and only
        a regular file (never a FIFO that would hang the read)."""
        if os.path.lexists(path):
            check_regular(path)
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)

    def writer(self, path: Path) -> Writer:
        return Writer(self.root if self.root is not None else path.parent)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        with self.writer(path).open(path, durable=True) as handle:  # the rename survives a power cut
            torch.save(checkpoint, handle)

    def remove_checkpoint(self, path: Any) -> None:
        """A checkpoint vtcc wrote (a link as a link); anything else is refused in one line."""
        path = Path(path)
        self.writer(path).remove(path)


def record_best_head(path: Path, head: int) -> None:
    """Write ``head`` as the best cluster head of the checkpoint at ``path`` (atomically; the rest
    of the checkpoint as it was), so evaluation, prediction and ``init_from`` use it."""
    checkpoint = load_checkpoint(path)
    key = "network.best_head"
    if int(checkpoint["state_dict"][key]) == head:
        return
    checkpoint["state_dict"][key] = torch.tensor(head, dtype=torch.long)
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)


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
