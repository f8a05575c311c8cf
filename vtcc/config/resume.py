"""Which checkpoint a run resumes: ``ckpt_path=<file>`` or ``resume=latest``, refused when its
model, K, data or objective differ from this run's (it reads checkpoints; it writes nothing)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vtcc.errors import ConfigError
from vtcc.utils.checkpoint import (
    CONFIG_KEY,
    NON_STRUCTURAL,
    config_differences,
    find_checkpoints,
    load_checkpoint,
)

log = logging.getLogger("vtcc")

# What identifies the data a run trains on (loader settings such as batch size may change).
DATA_IDENTITY = ("_target_", "root", "name", "dataset", "image_size", "in_chans", "eval_split")


def requeued_job() -> bool:
    """This is a SLURM job the scheduler started again (requeued after a preemption, ``scontrol
    requeue`` or a node failure: ``SLURM_RESTART_COUNT`` >= 1), in the run folder it wrote before."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0")) >= 1
    except ValueError:
        return False


def requeued_checkpoint(cfg: DictConfig) -> Path | None:
    """A requeued job's own ``checkpoints/last.ckpt`` (the end of its last finished epoch), which it
    continues from, whatever checkpoint it started from; None when it is not requeued or finished no
    epoch (it then starts over in its own folder)."""
    if not requeued_job():
        return None
    own = Path(str(cfg.paths.output_dir)) / "checkpoints" / "last.ckpt"
    return own if own.is_file() else None


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=<file>`` resumes that checkpoint; ``resume=latest`` the newest run whose model,
    K, data and objective match this one (other runs under ``paths.log_dir`` are passed over)."""
    return resumed_checkpoint(cfg)[0]


def resumed_checkpoint(cfg: DictConfig) -> tuple[str | None, dict[str, Any]]:
    """The checkpoint a run resumes (see :func:`resolve_ckpt_path`) and its stored config (``{}``
    for a new run), read once."""
    if cfg.get("resume") not in (None, "latest"):
        raise ConfigError(f"resume={cfg.resume!r} is unknown: use resume=latest or ckpt_path=<file>")
    current = OmegaConf.to_container(cfg, resolve=True)
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        stored = _resumable(path)
        differences = resume_differences(stored, current)
        if differences:
            raise ConfigError(
                f"{path} was trained with other settings: {'; '.join(differences)}. "
                "Resume with the checkpoint's settings (its config.yaml), or start a new run"
            )
        return str(path), stored
    if cfg.get("resume") != "latest":
        return None, {}
    candidates = find_checkpoints(cfg.paths.log_dir, cfg.task_name)
    readable = []
    for path in candidates:
        try:
            stored = _resumable(path)
        except ConfigError as error:  # not one to resume (refused, or not vtcc's): the next one
            log.warning("resume=latest passes over %s: %s", path, error)
            continue
        readable.append((path, stored))
        if not resume_differences(stored, current):
            log.info(
                "resume=latest: %s, the newest of %d run(s) with this model, data and objective",
                path,
                len(candidates),
            )
            return str(path), stored
    where = Path(cfg.paths.log_dir, cfg.task_name)
    if not readable:
        raise ConfigError(
            f"resume=latest found no checkpoint vtcc can resume under {where} (see the warnings): "
            "pass ckpt_path=<file>, or start a new run"
        )
    newest_path, newest_stored = readable[0]
    newest = resume_differences(newest_stored, current)
    raise ConfigError(
        f"resume=latest found no run with this model, data and objective under "
        f"{where} (the newest, {newest_path}, differs: "
        f"{'; '.join(newest[:3])}): pass ckpt_path=<file>, or start a new run"
    )


def _resumable(path: Path) -> dict[str, Any]:
    """A checkpoint's stored config, refusing one this vtcc can rebuild but not resume: a run of an
    objective that trains no instance projector, stored before the projector belonged only to the
    objectives that train one (its optimiser state still holds the projector's parameters)."""
    checkpoint = load_checkpoint(path)
    stored = checkpoint[CONFIG_KEY]
    projector = any(".instance_projector." in key for key in checkpoint["state_dict"])
    if projector and (stored.get("model") or {}).get("instance_dim") is None:
        raise ConfigError(
            f"{path} was saved by an earlier vtcc with an untrained instance projector, which runs of "
            "this objective no longer have: it cannot be resumed; evaluate it, or start a new run "
            f"from its weights with init_from={path}"
        )
    return stored


def resume_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: stored -> current`` for each setting that must match to resume: the model and K, the
    data (its identity, not its loader settings) and the objective (the module's class and its
    number of cluster heads, whose weights the checkpoint holds)."""
    views = []
    stored_heads = (stored.get("module") or {}).get("num_cluster_heads", 1)
    for config in (stored, current):
        model = {k: v for k, v in (config.get("model") or {}).items() if k not in NON_STRUCTURAL}
        data = {k: v for k, v in (config.get("data") or {}).items() if k in DATA_IDENTITY}
        module = config.get("module") or {}
        heads = module.get("num_cluster_heads", 1)
        objective = {
            "_target_": module.get("_target_"),
            "num_cluster_heads": stored_heads if heads == "auto" else heads,  # auto: the checkpoint's
        }
        view_a = (config.get("augment") or {}).get("view_a") or {}
        augment = {"view_a.hflip_p": view_a.get("hflip_p", 0.0)}  # a flip layer shifts every later draw
        views.append(
            {
                "model": model,
                "num_clusters": config.get("num_clusters"),
                "data": data,
                "module": objective,
                "augment": augment,
            }
        )
    return config_differences(*views, ("model", "num_clusters", "data", "module", "augment"))
