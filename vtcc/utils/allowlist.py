"""What a stored run config may construct: a checkpoint is data, never code.

``vtcc-eval`` and ``vtcc-predict`` rebuild a run from the config inside its checkpoint. Hydra's
``instantiate`` would call any importable callable that a ``_target_`` names (``shutil.copyfile``
included), so every ``_target_`` of a stored config is checked against this list first, without
importing anything it names.
"""

from __future__ import annotations

from typing import Any

# Every callable that vtcc's own configs construct (conf/**/*.yaml), and nothing else of vtcc.
VTCC_TARGETS = frozenset(
    {
        "vtcc.data.EvalTransform",
        "vtcc.data.InMemoryDataModule",
        "vtcc.data.StreamingFolderDataModule",
        "vtcc.data.TwinViewAugmentation",
        "vtcc.data.features.CachedFeatureDataModule",
        "vtcc.data.feature_file.FeatureDataModule",
        "vtcc.data.shards.ShardDataModule",
        "vtcc.data.load_cifar10",
        "vtcc.data.load_cifar100_20",
        "vtcc.data.load_digits",
        "vtcc.data.load_fashion_mnist",
        "vtcc.data.load_image_folder",
        "vtcc.data.load_mnist",
        "vtcc.data.load_npz",
        "vtcc.data.load_stl10",
        "vtcc.data.rgb_view",
        "vtcc.data.small_image_view",
        "vtcc.data.strong_view",
        "vtcc.losses.ClusterLoss",
        "vtcc.losses.ConfidenceCrossEntropy",
        "vtcc.losses.InstanceLoss",
        "vtcc.losses.ScanLoss",
        "vtcc.losses.TemiLoss",
        "vtcc.models.pretrained.features_network",
        "vtcc.models.pretrained.pretrained_network",
        "vtcc.models.timm_network",
        "vtcc.models.vtcc_network",
        "vtcc.objectives.ContrastiveClustering",
        "vtcc.objectives.ScanClustering",
        "vtcc.objectives.SelfLabelClustering",
        "vtcc.objectives.TemiClustering",
        "vtcc.objectives.TurtleClustering",
        # where checkpoints written before vtcc/objectives/ name them (vtcc/module.py: the same classes)
        "vtcc.module.ContrastiveClustering",
        "vtcc.module.ScanClustering",
        "vtcc.module.SelfLabelClustering",
        "vtcc.module.TemiClustering",
        "vtcc.optim.warmup_cosine",
        "vtcc.utils.callbacks.EpochThroughput",
        "vtcc.utils.callbacks.SaveOnInterrupt",
    }
)
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
    """vtcc's own builders, torch optimisers and schedulers, kornia augmentations."""
    if target in VTCC_TARGETS or target in LIGHTNING_TARGETS:
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
