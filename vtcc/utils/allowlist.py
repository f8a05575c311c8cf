"""What a stored run config may construct: a checkpoint is data, never code.

``vtcc-eval`` and ``vtcc-predict`` rebuild a run from the config inside its checkpoint. Hydra's
``instantiate`` would call any importable callable that a ``_target_`` names (``shutil.copyfile``
included), so every ``_target_`` of a stored config is checked against this list first, without
importing anything it names. vtcc's own names and its plugins' come from :mod:`vtcc.registry`, where
each kind registers once.
"""

from __future__ import annotations

from typing import Any

from vtcc import registry


def vtcc_targets() -> frozenset[str]:
    """Every ``_target_`` registered (:mod:`vtcc.registry`): vtcc's own kinds (and the older names
    of its objectives, ``vtcc.module.*``) and those of the installed plugins; nothing else."""
    return registry.targets()


def __getattr__(name: str) -> frozenset[str]:
    """``VTCC_TARGETS``: vtcc's own registered targets (generated from the registry)."""
    if name == "VTCC_TARGETS":
        return frozenset(t for e in registry.entries() if e.own for t in e.targets)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Lightning objects a run config lists (eval and predict never build them, but they are harmless).
LIGHTNING_TARGETS = frozenset(
    {
        "lightning.pytorch.Trainer",
        "lightning.pytorch.callbacks.LearningRateMonitor",
        "lightning.pytorch.callbacks.ModelCheckpoint",
        "lightning.pytorch.loggers.CSVLogger",
        "lightning.pytorch.loggers.MLFlowLogger",
        "lightning.pytorch.loggers.TensorBoardLogger",
        "lightning.pytorch.loggers.WandbLogger",
    }
)


def _class_in(namespace: Any, name: str, base: type) -> bool:
    """``namespace.name`` is a class derived from ``base`` (one attribute deep: no traversal)."""
    if not name.isidentifier():
        return False
    candidate = getattr(namespace, name, None)
    return isinstance(candidate, type) and issubclass(candidate, base)


def is_optimizer(target: str) -> bool:
    """A ``torch.optim`` optimiser class, named as ``torch.optim.<Class>``."""
    import torch.optim

    package, _, name = target.rpartition(".")
    return package == "torch.optim" and _class_in(torch.optim, name, torch.optim.Optimizer)


def is_scheduler(target: str) -> bool:
    """A ``torch.optim.lr_scheduler`` scheduler class."""
    import torch.optim.lr_scheduler as schedulers

    package, _, name = target.rpartition(".")
    return package == "torch.optim.lr_scheduler" and _class_in(schedulers, name, schedulers.LRScheduler)


def is_view_operation(target: str) -> bool:
    """A ``kornia.augmentation`` augmentation class."""
    import kornia.augmentation
    from kornia.augmentation.base import _BasicAugmentationBase

    package, _, name = target.rpartition(".")
    return package == "kornia.augmentation" and _class_in(kornia.augmentation, name, _BasicAugmentationBase)


def is_allowed(target: str) -> bool:
    """What is registered (vtcc's and its plugins'), torch optimisers and schedulers, kornia
    augmentations, Lightning's objects."""
    if target in vtcc_targets() or target in LIGHTNING_TARGETS:
        return True
    return is_optimizer(target) or is_scheduler(target) or is_view_operation(target)


def disallowed_targets(config: Any, where: str = "") -> list[tuple[str, str]]:
    """``(key path, target)`` of every ``_target_`` in a plain (container) config not allowed."""
    found: list[tuple[str, str]] = []
    if isinstance(config, dict):
        for key, value in config.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_" and not (isinstance(value, str) and is_allowed(value)):
                found.append((path, str(value)))
            else:
                found.extend(disallowed_targets(value, path))
    elif isinstance(config, list | tuple):
        for index, value in enumerate(config):
            found.extend(disallowed_targets(value, f"{where}[{index}]"))
    return found
