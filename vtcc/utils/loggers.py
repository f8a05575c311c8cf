"""Which experiment loggers need an optional extra, and the ``pip install`` that brings it (the
assembly builds them: :func:`vtcc.build.build_loggers`)."""

from __future__ import annotations

from importlib.util import find_spec

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
