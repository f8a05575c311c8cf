"""Experiment loggers from the config, with one clear line when an optional extra is missing."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

from vtcc.errors import ConfigError

# logger class -> (module it needs, the vtcc extra that installs it)
NEEDS = {
    "lightning.pytorch.loggers.WandbLogger": ("wandb", "wandb"),
    "lightning.pytorch.loggers.MLFlowLogger": ("mlflow", "mlflow"),
    "lightning.pytorch.loggers.TensorBoardLogger": ("tensorboard", "tensorboard"),
}


def missing_extra(target: str) -> str | None:
    """The ``pip install`` that ``target`` needs, or None when it can be built here."""
    module, extra = NEEDS.get(target, (None, None))
    if module is None or find_spec(module) is not None:
        return None
    return f"pip install 'vtcc[{extra}]'"


def build_loggers(nodes: Any) -> list[Any]:
    """Every logger of ``cfg.logger``; a missing optional package stops before anything is trained."""
    from vtcc.build import build_object

    loggers = []
    for name, node in (nodes or {}).items():
        install = missing_extra(str(node.get("_target_", "")))
        if install:
            raise ConfigError(f"logger {name!r} needs a package that is not installed: {install}")
        loggers.append(build_object(node))
    return loggers
