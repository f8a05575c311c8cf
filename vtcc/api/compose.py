"""A run's config composed from Python as ``vtcc-train`` composes it: settings as Hydra overrides
(:func:`override_list`, :func:`override_value`), the composition (:func:`compose_config`), a new
run's folder (:func:`new_run_dir`)."""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from vtcc.errors import ConfigError
from vtcc.plugins import load_plugins
from vtcc.utils.cli import CONFIG_DIR

_PLAIN = re.compile(r"^[\w./:@+-]+$")


def override_value(value: Any) -> str:
    """A Python value as Hydra's override grammar reads it: ``true``, ``null``, ``0.5``, ``[a,b]``,
    ``{k:v}``, a word as it is, and any other string quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, numbers.Integral):
        return repr(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        if _PLAIN.match(value):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Sequence):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    raise ConfigError(
        f"{value!r} ({type(value).__name__}) cannot be a setting: use a number, text, list or dict"
    )


def override_list(
    overrides: Mapping[str, Any] | Sequence[str] | None, keywords: Mapping[str, Any]
) -> list[str]:
    """``key=value`` items from a dict (``{"model": "pretrained", "trainer.max_epochs": 5}``), a list
    of CLI items, and keywords with ``__`` for the dots (``trainer__max_epochs=5``)."""
    items: list[str] = []
    if isinstance(overrides, Mapping):
        items += [f"{key}={override_value(value)}" for key, value in overrides.items()]
    elif overrides is not None:
        if not isinstance(overrides, list | tuple) or not all(isinstance(item, str) for item in overrides):
            raise ConfigError(
                f"overrides={overrides!r}: give a dict ({{'trainer.max_epochs': 5}}) or a list of "
                "key=value texts (['trainer.max_epochs=5'])"
            )
        items += list(overrides)
    items += [f"{key.replace('__', '.')}={override_value(value)}" for key, value in keywords.items()]
    for item in items:
        key = re.sub(r"^[+~]+", "", item).split("=", 1)[0]
        if key == "hydra" or key.startswith("hydra.") or key.startswith("hydra/"):
            raise ConfigError(
                f"{item}: Hydra's own settings do not apply from Python; the run's folder is run_dir="
            )
        if key == "paths.output_dir":
            raise ConfigError(f"{item}: set the run's folder with run_dir=")
    return items


@contextmanager
def composing() -> Iterator[None]:
    """Hydra initialised on vtcc's configs for the duration, and cleared after."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    load_plugins()  # the installed plugins' kinds and config files (objective=iic)
    backup = get_gh_backup()  # inside a Hydra app, or after a compose of the caller's: kept
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            yield
    finally:
        restore_gh_from_backup(backup)


def compose_config(name: str, items: list[str]) -> Any:
    """The ``name`` config (train, eval, predict) with ``items``, a mistake as one line."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with composing():
            return compose(name, overrides=items)
    except (HydraException, OmegaConfBaseException) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{message} (overrides: {' '.join(items) or 'none'})") from None


def new_run_dir(items: list[str]) -> Path:
    """``<paths.log_dir>/train/<timestamp>``, as ``vtcc-train`` names its runs."""
    cfg = compose_config("train", items)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    return Path(str(cfg.paths.log_dir)) / str(cfg.task_name) / stamp
