"""The types of the settings: a schema for the keys outside any built object, and what the
constructors' signatures do not say by themselves.

A node with a ``_target_`` is checked against the signature of what it builds (see
:mod:`vtcc.config.validate`); the tables here complete those signatures where a config says more
than a constructor sees: ``auto`` values that vtcc resolves before building, marker keys that
vtcc consumes, ``**kwargs`` that a builder hands on, and Lightning's names it accepts as ``str``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Literal

from vtcc.config.types import Check
from vtcc.k_selection import CRITERIA, EMBEDDINGS

POSITIVE = Check(lambda v: v > 0, "> 0")
AT_LEAST_1 = Check(lambda v: v >= 1, ">= 1")
AT_LEAST_2 = Check(lambda v: v >= 2, ">= 2")


def _is_device(value: str) -> bool:
    import torch

    if value == "auto":
        return True
    try:
        torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


DEVICE = Annotated[str, Check(_is_device, name="auto or a torch device such as cpu, cuda, cuda:1 or mps")]
# Lightning parses a devices string: "auto", "-1" (all), "2" (a count), "0,1" (these indices).
DEVICES_TEXT = re.compile(r"auto|-1|\s*\d+\s*(,\s*\d+\s*)*,?")
LIGHTNING_DEVICES = (
    list[int] | int | Annotated[str, Check(DEVICES_TEXT.fullmatch, name="a string such as auto, -1 or '0,1'")]
)
Criterion = Literal[tuple(CRITERIA)]
Embedding = Literal[EMBEDDINGS]


def setting(help: str, example: Any = None) -> Any:
    """A schema field: what it is, and a valid value for the error message's ``e.g.``."""
    return field(metadata={"help": help, "example": example})


@dataclass
class KSearch:
    min: Annotated[int, AT_LEAST_2] = setting("the smallest K tried", 2)
    max: Annotated[int, AT_LEAST_2] | None = setting("the largest K tried; null: 50, or N/10", 20)
    criterion: Criterion = setting("what chooses K", "davies_bouldin")
    embedding: Embedding = setting("what k-means partitions", "backbone")
    refine_epochs: Annotated[int, AT_LEAST_1] | None = setting("epochs at the chosen K", 10)
    chosen: Annotated[int, AT_LEAST_2] | None = setting("the K a search chose (vtcc writes it)", 10)


@dataclass
class Paths:
    log_dir: str = setting("where runs go", "outputs")
    output_dir: str = setting("this run's folder", "outputs/train/run")


@dataclass
class RunSettings:
    """The settings of train.yaml, eval.yaml and predict.yaml that no ``_target_`` builds."""

    task_name: str = setting("the runs' folder under paths.log_dir", "train")
    seed: int | None = setting("the random seed", 42)
    num_clusters: int | Literal["auto"] | None = setting("K; auto: chosen without labels", 10)
    time_budget_minutes: Annotated[float, POSITIVE] | None = setting("minutes of training", 30)
    ckpt_path: str | None = setting("a checkpoint file", "<run>/checkpoints/last.ckpt")
    resume: Literal["latest"] | None = setting("resume the newest matching run")
    init_from: str | None = setting("a finished run's checkpoint", "<run>/checkpoints/last.ckpt")
    overwrite: bool = setting("allow a folder that already holds outputs", False)
    k_search: KSearch = setting("num_clusters=auto's search")
    paths: Paths = setting("where outputs go")
    callbacks: dict[str, Any] | None = setting("the callbacks group's nodes", {})
    logger: dict[str, Any] | None = setting("the logger group's nodes", {})
    report: bool = setting("write the report (train: at the end, on by default; eval: report=true)", False)
    input: str = setting("the images to assign", "<folder of images>")  # vtcc-predict
    output: str = setting("where clusters.csv goes", "<new folder>")
    batch_size: Annotated[int, AT_LEAST_1] = setting("images per batch", 256)
    device: DEVICE = setting("where the model runs", "auto")
    embeddings: bool = setting("write embeddings.npy and paths.txt", False)
    parquet: bool = setting("write clusters.parquet (path, cluster, confidence, 2-D map)", False)
    copy_images: Literal["none", "copy", "link"] = setting("one folder per cluster", "none")


# Nodes without a _target_ that are one object's keywords: eval.yaml's trainer.
PLAIN_TARGETS = {"trainer": "lightning.pytorch.Trainer"}


@cache
def forwards() -> dict[Any, Any]:
    """A builder whose ``**kwargs`` go on to another callable: the keys are that callable's."""
    from vtcc.models.network import vtcc_network
    from vtcc.models.pretrained import PretrainedClusteringNetwork, features_network, pretrained_network
    from vtcc.models.vit import vit_conv_stem

    return {
        vtcc_network: vit_conv_stem,
        pretrained_network: PretrainedClusteringNetwork,
        features_network: PretrainedClusteringNetwork,
    }


@cache
def resolved_auto() -> frozenset[tuple[Any, str]]:
    """Parameters a config may leave ``auto``: vtcc replaces it before building (the constructor
    never sees it): the data's from the images (vtcc.config.data_defaults), the strong view's and the
    self-labelling threshold from init_from's run (vtcc.config.init_from), the cached views from the device
    (vtcc.data.features.wrap_for_network), the contrastive heads from the time budget
    (vtcc.config.resolve)."""
    from vtcc.data import InMemoryDataModule, StreamingFolderDataModule, small_image_view, strong_view
    from vtcc.data.features import CachedFeatureDataModule
    from vtcc.data.shards import ShardDataModule
    from vtcc.losses import ConfidenceCrossEntropy
    from vtcc.models.pretrained import features_network
    from vtcc.models.vit import vit_conv_stem
    from vtcc.objectives import ContrastiveClustering

    data = [
        (kind, key)
        for kind in (InMemoryDataModule, StreamingFolderDataModule, ShardDataModule)
        for key in ("image_size", "in_chans", "mean", "std")
    ]
    return frozenset(
        [
            *data,
            (vit_conv_stem, "patch_size"),
            (strong_view, "hflip_p"),
            (small_image_view, "hflip_p"),
            (strong_view, "base"),
            (ConfidenceCrossEntropy, "threshold"),
            (CachedFeatureDataModule, "num_views"),
            (CachedFeatureDataModule, "store"),
            (features_network, "num_features"),  # the feature file's width (vtcc.config.resolve)
            (ContrastiveClustering, "num_cluster_heads"),  # 5 with a time budget, else 1 (resolve)
        ]
    )


@cache
def extra_keys() -> dict[tuple[Any, str], Any]:
    """Keys of a node that vtcc consumes before building it: ``model=auto`` and ``augment=auto``'s
    markers (vtcc.config.data_defaults), and ``features.cache`` (whether the feature node is used)."""
    from vtcc.data import TwinViewAugmentation
    from vtcc.data.features import CachedFeatureDataModule
    from vtcc.models.network import vtcc_network

    return {
        (vtcc_network, "size"): Literal["auto"],
        (TwinViewAugmentation, "family"): Literal["auto"],
        (CachedFeatureDataModule, "cache"): bool,
    }


@cache
def overrides() -> dict[tuple[Any, str], Any]:
    """Tighter types than a signature says: choices kept in a module's constant, and the names
    Lightning accepts as any ``str`` (it would refuse a wrong one only when the trainer is built,
    after the data and the model)."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import Strategy, StrategyRegistry

    from vtcc.data.features import CachedFeatureDataModule
    from vtcc.data.pairings import PAIRINGS

    accelerators = ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))
    strategies = ("auto", *StrategyRegistry.available_strategies())
    return {
        (CachedFeatureDataModule, "pairing"): Literal[PAIRINGS],
        (CachedFeatureDataModule, "device"): DEVICE,
        (Trainer, "accelerator"): Literal[accelerators],
        (Trainer, "strategy"): Literal[strategies] | Strategy,
        (Trainer, "devices"): LIGHTNING_DEVICES,
        (Trainer, "gradient_clip_algorithm"): Literal["norm", "value"] | None,
        (Trainer, "profiler"): Literal["simple", "advanced", "pytorch", "xla"] | None,
        (ModelCheckpoint, "mode"): Literal["min", "max"],
    }
