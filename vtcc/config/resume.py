"""Which checkpoint a run resumes: ``ckpt_path=<file>`` or ``resume=latest``, refused when its
model, K, data or objective differ from this run's (it reads checkpoints; it writes nothing)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vtcc.config.data_defaults import LOOK_ALIKE
from vtcc.errors import ConfigError
from vtcc.utils.checkpoint import (
    CONFIG_KEY,
    NON_STRUCTURAL,
    config_differences,
    find_checkpoints,
    load_checkpoint,
    read_torch_file,
)
from vtcc.utils.environment import recorded_environment, slurm_job_id

log = logging.getLogger("vtcc")

# What identifies the data a run trains on (loader settings such as batch size may change).
DATA_IDENTITY = ("_target_", "root", "name", "dataset", "image_size", "in_chans", "eval_split")


# the augmentation ops the data decides: whether a layer is there shifts every later random draw
OPS = tuple(key for key, *_ in LOOK_ALIKE)


def requeued_job() -> bool:
    """This is a SLURM job the scheduler started again (requeued after a preemption, ``scontrol
    requeue`` or a node failure: ``SLURM_RESTART_COUNT`` >= 1), in the run folder it wrote before."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0")) >= 1
    except ValueError:
        return False


def own_run_folder(folder: Path) -> bool:
    """``folder`` is this requeued job's own run folder: the environment.yaml its first start wrote
    there records this SLURM job's id (a requeue keeps the id). Another run's folder, or one whose
    record names no job or another, is not: the overwrite guard stands there."""
    job = slurm_job_id()
    recorded = recorded_environment(folder).get("slurm_job_id")
    if type(recorded) not in (str, int):  # a job id is a string (or a number); nothing else is expanded
        return False
    return requeued_job() and job is not None and str(recorded) == job


def requeued_checkpoint(cfg: DictConfig) -> Path | None:
    """A requeued job's own ``checkpoints/last.ckpt`` (the end of its last finished epoch), which it
    continues from, whatever checkpoint it started from; None when it is not requeued, its folder
    is not its own (:func:`own_run_folder`) or it finished no epoch (it then starts over in its own
    folder)."""
    if not requeued_job():
        return None
    folder = Path(str(cfg.paths.output_dir))
    own = folder / "checkpoints" / "last.ckpt"
    return own if own.is_file() and own_run_folder(folder) else None


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=<file>`` resumes that checkpoint; ``resume=latest`` the newest run whose model,
    K, data and objective match this one (other runs under ``paths.log_dir`` are passed over). A
    newer checkpoint that cannot be resumed (unreadable, or refused) stops it with one line naming
    that one and the older match: it never falls back to an older checkpoint by itself."""
    return resumed_checkpoint(cfg)[0]


def resumed_checkpoint(cfg: DictConfig) -> tuple[str | None, dict[str, Any]]:
    """The checkpoint a run resumes (see :func:`resolve_ckpt_path`) and its stored config (``{}``
    for a new run), read once."""
    if cfg.get("resume") not in (None, "latest"):
        raise ConfigError(f"resume={cfg.resume!r} is unknown: use resume=latest or ckpt_path=<file>")
    current = OmegaConf.to_container(cfg, resolve=True)
    if cfg.get("ckpt_path"):
        return _given_checkpoint(Path(cfg.ckpt_path), current)
    if cfg.get("resume") != "latest":
        return None, {}
    return _latest_checkpoint(cfg, current)


def _given_checkpoint(path: Path, current: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``ckpt_path=<file>``: that checkpoint and its stored config, refused when it cannot be
    resumed or was trained with other settings than this run's."""
    stored = _resumable(path)
    differences = resume_differences(stored, current)
    if differences:
        raise ConfigError(
            f"{path} was trained with other settings: {'; '.join(differences)}. "
            "Resume with the checkpoint's settings (its config.yaml), or start a new run"
        )
    return str(path), stored


def _latest_checkpoint(cfg: DictConfig, current: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``resume=latest``: the newest checkpoint under the task's log folder whose settings match
    this run's, unless a newer one that cannot be resumed stands before it; raises when none does."""
    candidates = find_checkpoints(cfg.paths.log_dir, cfg.task_name)
    where = Path(cfg.paths.log_dir, cfg.task_name)
    readable = []  # other runs' checkpoints, newest first
    refused: list[tuple[Path, ConfigError]] = []  # newer than any match: each may be this run's newest
    for path in candidates:
        try:
            checkpoint = load_checkpoint(path)
        except ConfigError as error:
            if _other_run(path, current):
                log.warning("resume=latest passes over %s, another run's: %s", path, error)
            else:  # it may be this run's newest
                refused.append((path, error))
            continue
        stored = checkpoint[CONFIG_KEY]
        if resume_differences(stored, current):
            readable.append((path, stored))
            continue  # another run's settings: passed over
        try:
            _check_resumable(path, checkpoint)
        except ConfigError as error:
            refused.append((path, error))
            continue
        _stop_before_older_match(refused, path, where)
        log.info(
            "resume=latest: %s, the newest of %d run(s) with this model, data and objective",
            path,
            len(candidates),
        )
        return str(path), stored
    raise _no_latest_match(where, refused, readable, current)


def _stop_before_older_match(refused: list[tuple[Path, ConfigError]], path: Path, where: Path) -> None:
    """``path`` matches this run, but a newer checkpoint that cannot be resumed came first: never
    the older one by itself, the user chooses."""
    if refused:
        newest, why = refused[0]
        raise ConfigError(
            f"resume=latest stops at {newest}, the newest candidate under {where}, which cannot "
            f"be resumed ({why}); the older {path} matches this run: resume it with "
            f"ckpt_path={path}, or start a new run"
        )


def _no_latest_match(
    where: Path,
    refused: list[tuple[Path, ConfigError]],
    readable: list[tuple[Path, dict[str, Any]]],
    current: dict[str, Any],
) -> ConfigError:
    """Why ``resume=latest`` found nothing to resume: the newest candidate cannot be resumed, or
    else the newest readable one differs from this run (its first differences)."""
    if refused:
        newest, why = refused[0]
        return ConfigError(
            f"resume=latest found no checkpoint vtcc can resume under {where}: the newest candidate, "
            f"{newest}, cannot be resumed ({why}); pass ckpt_path=<file>, or start a new run"
        )
    newest_path, newest_stored = readable[0]
    newest = resume_differences(newest_stored, current)
    return ConfigError(
        f"resume=latest found no run with this model, data and objective under "
        f"{where} (the newest, {newest_path}, differs: "
        f"{'; '.join(newest[:3])}): pass ckpt_path=<file>, or start a new run"
    )


def _other_run(path: Path, current: dict[str, Any]) -> bool:
    """A checkpoint vtcc refuses to load is another run's when the config it stores, read as
    plain data (nothing in it resolved or built), differs from this run's in what a resume must
    match; False when it cannot tell (no readable stored config)."""
    try:
        stored = read_torch_file(path).get(CONFIG_KEY)  # a regular file only, read as data
    except Exception:  # noqa: BLE001 - unreadable as data: whose run it is, nobody knows
        return False
    if not isinstance(stored, dict):
        return False
    try:
        return bool(resume_differences(stored, current))
    except (AttributeError, TypeError):  # sections that are not mappings: not vtcc's layout
        return False


def _resumable(path: Path) -> dict[str, Any]:
    """A checkpoint's stored config, refusing one this vtcc can rebuild but not resume: a run of an
    objective that trains no instance projector, stored before the projector belonged only to the
    objectives that train one (its optimiser state still holds the projector's parameters)."""
    checkpoint = load_checkpoint(path)
    _check_resumable(path, checkpoint)
    return checkpoint[CONFIG_KEY]


def _check_resumable(path: Path, checkpoint: dict[str, Any]) -> None:
    """Refuse a loaded checkpoint that this vtcc can rebuild but not resume (see :func:`_resumable`)."""
    stored = checkpoint[CONFIG_KEY]
    projector = any(".instance_projector." in key for key in checkpoint["state_dict"])
    if projector and (stored.get("model") or {}).get("instance_dim") is None:
        raise ConfigError(
            f"{path} was saved by an earlier vtcc with an untrained instance projector, which runs of "
            "this objective no longer have: it cannot be resumed; evaluate it, or start a new run "
            f"from its weights with init_from={path}"
        )


def resume_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: stored -> current`` for each setting that must match to resume: the model and K, the
    data (its identity, not its loader settings), the objective (the module's class and its
    number of cluster heads, whose weights the checkpoint holds) and a curated run's file."""
    views = []
    stored_heads = (stored.get("module") or {}).get("num_cluster_heads", 1)
    stored_view = (stored.get("augment") or {}).get("view_a") or {}
    # an op the data decides that the stored recipe predates: the run keeps training without it
    # (vtcc.config.data_defaults.keep_resumed_recipe), so it is no difference
    predates = {key for key in (current.get("data_defaults") or {}) if key in OPS and key not in stored_view}
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
        # a flip or an inversion layer shifts every later draw
        augment = {f"view_a.{key}": 0.0 if key in predates else view_a.get(key, 0.0) for key in OPS}
        views.append(
            {
                "model": model,
                "num_clusters": config.get("num_clusters"),
                "data": data,
                "module": objective,
                "augment": augment,
                "curation": {"sha256": (config.get("curated") or {}).get("sha256")},  # its targets' file
            }
        )
    return config_differences(*views, ("model", "num_clusters", "data", "module", "augment", "curation"))
