"""Every user-facing value is type-checked before any work (vtcc/config/validate.py): each
composed config passes, and a wrong-typed value at any of its keys is one ConfigError naming it."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from tests.conftest import TINY, compose_train, run_cli
from vtcc.config.validate import validate_config
from vtcc.errors import ConfigError
from vtcc.utils.cli import CONFIG_DIR

RUN = Path("/nonexistent/vtcc-run")  # composed, never built: nothing is written
GROUPS = ("data", "model", "objective", "augment", "trainer", "strategy", "callbacks", "logger", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in Path(CONFIG_DIR, group).glob("*.yaml"))


CONFIGS = [
    ("train", ()),
    *(("train", (f"{group}={option}",)) for group in GROUPS for option in options(group)),
    ("eval", ()),
    ("predict", ()),
]


@cache
def composed(name: str, overrides: tuple[str, ...]) -> DictConfig:
    """The config as the entry point receives it (no ``auto`` resolved yet)."""
    if name == "train":
        return compose_train(RUN, list(overrides), tiny=False, resolve=False)
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=[*overrides, f"paths.output_dir={RUN}"])


def config_id(value: str | tuple[str, ...]) -> str:
    return value if isinstance(value, str) else ",".join(value)


@pytest.mark.parametrize(("name", "overrides"), CONFIGS, ids=config_id)
def test_every_shipped_config_passes(name, overrides):
    validate_config(composed(name, overrides))


# Keys whose value is text of the user's choosing (paths, names, labels): any word is right, so a
# number stands for the wrong type there. Every other string key is a choice: an unknown word is wrong.
FREE_TEXT = {
    "task_name": "the runs' folder name",
    "ckpt_path": "a checkpoint file",
    "init_from": "a checkpoint file",
    "input": "vtcc-predict's images",
    "output": "vtcc-predict's folder",
    "paths.log_dir": "a folder",
    "paths.output_dir": "a folder",
    "features.cache_dir": "a folder",
    "data.root": "the data's folder or file",
    "data.name": "a label for logs and reports",
    "data.dataset.name": "a label for logs and reports",
    "data.dataset.subdir": "a folder under data.root",
    "model.name": "a timm model name (timm checks it)",
    "model.checkpoint": "a weights file",
    "trainer.default_root_dir": "a folder",
    "callbacks.last_checkpoint.dirpath": "a folder",
    "callbacks.last_checkpoint.filename": "a file name pattern",
    "callbacks.last_checkpoint.monitor": "a logged metric's name",
    "callbacks.best_by_labels.dirpath": "a folder",
    "callbacks.best_by_labels.filename": "a file name pattern",
    "callbacks.best_by_labels.monitor": "a logged metric's name",
    "callbacks.save_on_interrupt.dirpath": "a folder",
    "logger.csv.save_dir": "a folder",
    "logger.csv.name": "a folder name",
    "logger.tensorboard.save_dir": "a folder",
    "logger.tensorboard.name": "a folder name",
    "logger.mlflow.experiment_name": "MLflow's experiment name",
    "logger.mlflow.run_name": "MLflow's run name",
    "logger.mlflow.save_dir": "a folder",
    "logger.wandb.project": "W&B's project name",
    "logger.wandb.save_dir": "a folder",
}
# Keys that accept any value at all, so no wrong type exists to try.
ANY_VALUE = {
    "model.model_kwargs.zero_init_last": "model_kwargs go to timm.create_model as they are; timm checks them",
    "logger.csv.version": "Lightning's version: a number or a folder name (int | str | None)",
    "logger.tensorboard.version": "Lightning's version: a number or a folder name (int | str | None)",
}
UNKNOWN_WORD = "no_such_choice"


def leaves(raw: Any, where: str = "", owner: str = ""):
    """``(dotted key, the target of the node it belongs to)`` of every leaf; lists are leaves."""
    if not isinstance(raw, dict) or not raw:
        yield where, owner
        return
    owner = raw.get("_target_", owner if where else "")
    for key, value in raw.items():
        if key != "_target_":  # which targets may be built is the allowlist's check
            yield from leaves(value, f"{where}.{key}" if where else key, owner)


def wrong_value(key: str, current: Any) -> Any:
    if key in FREE_TEXT:
        return 7
    return UNKNOWN_WORD if isinstance(current, str) else "ten"


def refusal(cfg: DictConfig, key: str, value: Any) -> str | None:
    """The message of the ConfigError for ``key=value`` in ``cfg``, or None when it is accepted."""
    changed = copy.deepcopy(cfg)
    OmegaConf.update(changed, key, value, merge=False)
    try:
        validate_config(changed)
    except ConfigError as error:
        return str(error)
    return None


def test_a_wrong_type_at_every_key_is_refused_with_that_key():
    seen, problems = set(), []
    for name, overrides in CONFIGS:
        cfg = composed(name, overrides)
        for key, owner in leaves(OmegaConf.to_container(cfg, resolve=False)):
            if (key, owner) in seen:
                continue
            seen.add((key, owner))
            if key in ANY_VALUE:
                continue
            current = OmegaConf.select(cfg, key, throw_on_resolution_failure=False, throw_on_missing=False)
            bad = wrong_value(key, current)
            message = refusal(cfg, key, bad)
            where = f"{name} {' '.join(overrides)}: {key}={bad!r}"
            if message is None or not message.startswith(f"{key}={bad!r} "):
                problems.append(f"{where} gave {message!r}")
            elif "\n" in message:
                problems.append(f"{where} gave more than one line")
            if key in FREE_TEXT and refusal(cfg, key, UNKNOWN_WORD) is not None:
                problems.append(f"{where}: a word is refused, so {key} is no free text")
    assert not problems, "\n".join(problems)
    walked = {key for key, _ in seen}
    assert set(FREE_TEXT) | set(ANY_VALUE) <= walked  # the lists name keys that exist
    assert len(walked) > 150  # every group was walked


@pytest.mark.parametrize("override", ["time_budget_minutes=ten"])  # every key: in process, above
def test_a_wrong_type_on_the_command_line_is_one_line_before_any_work(tmp_path, override):
    key = override.split("=")[0]
    result = run_cli("train", *TINY, override, "hydra.run.dir=outputs/run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(f"vtcc: error: {key}='ten' must be ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    # Only what Hydra records before vtcc starts: no config.yaml, checkpoints, logs or caches.
    written = {p.relative_to(tmp_path / "outputs/run").as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert {p for p in written if not p.startswith(".hydra/")} <= {"train.log"}
