"""The assembly, the one layer that builds: a composed config -> a run spec (resolved with the
facts of the data, which it gathers), and a resolved config -> the network, the objective (a
LightningModule), the data it trains on, the loggers and the trainer. ``vtcc-train`` (new runs,
resume, ``init_from``, the K search), ``vtcc-eval``, ``vtcc-predict`` and
``model.checkpoint=<run>.ckpt`` backbones all build through here (docs/architecture.md).

Each component gets its own node: the model node builds the network, the module node the
objective, the data node the data source, the features node the cached features (with the key
this layer computes from the resolved nodes the features depend on).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch import LightningDataModule, Trainer
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vtcc import registry
from vtcc.config.init_from import load_run_weights
from vtcc.config.resolve import resolve
from vtcc.config.spec import DataFacts, RunSpec
from vtcc.config.stored import rebuild_settings
from vtcc.curation import read_curation
from vtcc.data.cache_files import extraction_key
from vtcc.data.images import BUILD_STAGE
from vtcc.data.neighbors import NeighborPairsDataModule
from vtcc.data.pairings import pairing_for
from vtcc.errors import ConfigError
from vtcc.io.writer import Writer
from vtcc.models import ClusteringNetwork
from vtcc.models.pretrained import RUN_CHECKPOINTS
from vtcc.objectives import ClusteringModule, objective_class
from vtcc.optim import check_budget_can_move
from vtcc.utils.checkpoint import CONFIG_KEY, AtomicCheckpointIO, load_checkpoint
from vtcc.utils.environment import ENVIRONMENT_KEY, warn_if_environment_changed
from vtcc.utils.loggers import missing_extra


def build_object(node: Any, **kwargs: Any) -> Any:
    """Hydra's instantiate of a config node, from a detached, resolved copy: instantiating a node
    in place resolves the interpolations of the nodes it refers to (``data.train_transform:
    ${augment}`` would freeze ``augment``'s ``${data.*}``), and only the resolver writes a config."""
    if OmegaConf.is_config(node):
        node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    return instantiate(node, **kwargs)


def data_facts(source: Any) -> DataFacts:
    """What resolving needs to know of a data source that is set up for fitting."""
    return DataFacts(
        length=len(source),
        train_length=len(getattr(source, "train_indices", range(len(source)))),
        num_classes=source.num_classes,
        labeled=bool(source.labeled),
        stored_size=source.stored_size,
        in_chans=source.in_chans,
        feature_width=getattr(source, "feature_dim", None),
    )


@dataclass(frozen=True)
class Prepared:
    """A run resolved (its frozen spec) and the data source it was resolved from, set up: the
    data a run builds on (:func:`build_run`), loaded once."""

    spec: RunSpec
    source: Any

    @property
    def cfg(self) -> DictConfig:
        """The resolved config (read-only)."""
        return self.spec.config


def prepare_run(cfg: DictConfig, overrides: list[str]) -> Prepared:
    """Resolve the composed ``cfg`` (left as it is) into a frozen spec: before any work, a time
    budget's scheduler is checked; then the data node, as resolving leaves it, builds the data
    source, set up for fitting (its errors and its class count come before the model), whose facts
    resolving takes. ``overrides``: the ``key=value`` items ``cfg`` was composed with."""
    if cfg.get("time_budget_minutes") is not None and cfg.module.get("scheduler"):
        check_budget_can_move(build_object(cfg.module.scheduler))
    sources: list[Any] = []

    def gather(data: DictConfig) -> DataFacts:
        source = build_object(data)
        source.setup("fit")
        sources.append(source)
        return data_facts(source)

    spec = resolve(cfg, overrides, gather)
    return Prepared(spec, sources[-1])


@dataclass
class Run:
    """What a run trains and evaluates: the objective (holding the network) and its data."""

    module: ClusteringModule
    datamodule: LightningDataModule

    @property
    def network(self) -> ClusteringNetwork:
        return self.module.network


def build_network(cfg: DictConfig, weights_in_checkpoint: bool = False) -> ClusteringNetwork:
    """The model node's network. ``weights_in_checkpoint``: a checkpoint will supply every weight,
    so a pretrained backbone is built without fetching or reading its own weights."""
    model = registry.node_entry(cfg.model)  # looked up among the registered models, not imported
    if (
        weights_in_checkpoint
        and model is not None
        and "pretrained" in inspect.signature(model.obj).parameters
    ):
        return build_object(cfg.model, pretrained=False)  # whether the node says so or leaves the default
    return build_object(cfg.model)


def build_module(cfg: DictConfig, network: ClusteringNetwork, for_training: bool = True) -> ClusteringModule:
    """The objective node's LightningModule around ``network``; for evaluation and prediction the
    backbone is not compiled (a stored ``compile: true`` would write torch's code cache)."""
    if not for_training:
        return build_object(cfg.module, network=network, compile=False)
    return build_object(cfg.module, network=network)


def wrap_for_network(cfg: DictConfig, datamodule: Any, network: ClusteringNetwork) -> LightningDataModule:
    """With a frozen pretrained backbone and ``features.cache=true``, the heads train on cached
    features (the features node builds them; the network then reads them in place of images);
    SCAN with a training pretrained backbone trains on pairs of fresh views of mined neighbours."""
    features = cfg.get("features")
    if not network.frozen or not features or not features.cache:
        if features and pairing_for(features.get("pairing", "views")).uses_neighbors:
            if network.pretrained and not objective_class(cfg).requires_frozen_backbone:
                return NeighborPairsDataModule(
                    datamodule,
                    network.backbone,
                    features.num_neighbors,
                    features.get("device", "auto"),
                    features.get("neighbor_search", "auto"),
                )
            raise ConfigError(
                "objective=scan needs neighbours from a pretrained backbone (model=pretrained, any "
                "model.mode); objective=temi trains on frozen features: use model.mode=frozen"
            )
        return datamodule
    settings = {k: v for k, v in features.items() if k != "cache"}
    spaces = network.space_dims if network.normalize_spaces else None
    if datamodule.precomputed_features() is not None:  # data=features: nothing to extract or cache
        cached = build_object(
            settings, source=datamodule, backbone=network.backbone, key="", neighbor_spaces=spaces
        )
        network.read_cached_features()
        return cached
    datamodule.setup("fit")  # the key hashes the data's contents
    parts = OmegaConf.to_container(cfg, resolve=True)
    key = extraction_key(
        parts["features"],
        parts["model"],
        parts["data"],
        parts.get("augment"),
        parts.get("seed"),
        datamodule,
        network.backbone,
    )
    cached = build_object(
        settings,
        source=datamodule,
        backbone=network.backbone,
        key=key,
        neighbor_spaces=spaces,
        seed=parts.get("seed"),  # a mapped store's views: the run's seed, which the key holds
    )
    network.read_cached_features()
    return cached


def build_data(cfg: DictConfig, network: ClusteringNetwork, source: Any | None = None) -> LightningDataModule:
    """The data the objective trains on: the image datamodule (``source``, or the data node's), or
    what the network needs of it (a frozen backbone's cached features, mined neighbour pairs)."""
    source = build_object(cfg.data) if source is None else source
    datamodule = wrap_for_network(cfg, source, network)
    # a frozen backbone: its features are extracted or loaded now (a memory-mapped store's when
    # Lightning sets the data up, once every process of a distributed run is there to share it)
    datamodule.setup(BUILD_STAGE)
    return datamodule


def start_from_run(
    cfg: DictConfig, initial: Mapping[str, Any] | None, source: Any
) -> Callable[[ClusteringModule], None] | None:
    """What a new run's objective takes from ``init_from``'s checkpoint ``initial`` (None: nothing,
    e.g. for a resumed run, which has its own weights): its network's weights; or, for an objective
    that trains with a person's curation (``takes_curation``), what its ``start_from`` makes of the
    whole source run on the training images of ``source`` (the data, set up) and the file."""
    if not initial:
        return None
    path = str(cfg.init_from)
    if not objective_class(cfg).takes_curation:
        return lambda module: load_run_weights(module, initial, path)

    def start(module: ClusteringModule) -> None:
        curation = read_curation(str(cfg.curation))
        if curation.sha256 != cfg.curated.sha256:  # resolving read it a moment ago
            raise ConfigError(f"{cfg.curation} changed while the run started: start it again")
        module.start_from(restore_run(path)[1].network, source, curation)

    return start


def build_run(
    cfg: DictConfig,
    source: Any | None = None,
    weights: Callable[[ClusteringModule], None] | None = None,
) -> Run:
    """Network, objective, then data: ``weights`` (e.g. a checkpoint's state dict, ``init_from``'s
    run) go into the objective before the data is built, so cached features are the weights' own."""
    module = build_module(cfg, build_network(cfg))
    if weights is not None:
        weights(module)
    return Run(module, build_data(cfg, module.network, source))


_RESTORING: set[Path] = set()  # checkpoints being restored now: a run's backbone may be another run's


def restore_run(path: str | Path, cache_dir: str | None = None) -> tuple[Any, Any]:
    """The run's config and its LightningModule with the checkpoint's weights, on the CPU.

    The config is rebuilt from the checked description the checkpoint stores
    (:func:`vtcc.config.stored.rebuild_settings`): no downloads, and a frozen backbone's
    features are cached in ``cache_dir`` (the current command's) when given."""
    resolved = Path(path).resolve()
    if resolved in _RESTORING:
        raise ConfigError(f"{path} names itself as its own backbone (model.checkpoint): do not use it")
    checkpoint = load_checkpoint(path)
    warn_if_environment_changed(checkpoint.get(ENVIRONMENT_KEY), str(path))
    settings = checkpoint[CONFIG_KEY]
    if cache_dir is not None:
        settings = rebuild_settings(settings, cache_dir)
    run_cfg = OmegaConf.create(settings)
    _RESTORING.add(resolved)
    try:  # the checkpoint holds the weights: no download, no weights file needed
        network = build_network(run_cfg, weights_in_checkpoint=True)
        module = build_module(run_cfg, network, for_training=False)
    finally:
        _RESTORING.discard(resolved)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise ConfigError(f"{path} does not match the model its config describes: {error}") from error
    return run_cfg, module


def run_backbone(path: str | Path) -> nn.Module:
    """The trained backbone of a vtcc run's ``.ckpt`` (``model.checkpoint=<run>.ckpt``)."""
    _, module = restore_run(path)
    return module.network.backbone


RUN_CHECKPOINTS.backbone = run_backbone  # the models read a run's .ckpt backbone through here


def build_loggers(nodes: Any) -> list[Any]:
    """Every logger of ``cfg.logger``; a missing optional package stops before anything is trained."""
    loggers = []
    for name, node in (nodes or {}).items():
        install = missing_extra(str(node.get("_target_", "")))
        if install:
            raise ConfigError(f"logger {name!r} needs a package that is not installed: {install}")
        loggers.append(build_object(node))
    return loggers


def build_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Any], **settings: Any) -> Trainer:
    """The trainer node's Trainer with the run's callbacks (the config's, then vtcc's own),
    loggers and atomic, weights-only checkpoint files, written only inside the run's folder
    (a callback's ``dirpath`` elsewhere is refused before training)."""
    configured = [build_object(node) for node in (cfg.get("callbacks") or {}).values()]
    root = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_resolution_failure=False)
    if root is not None:
        writer = Writer(str(root))
        for callback in [*configured, *callbacks]:
            if getattr(callback, "dirpath", None):
                try:
                    writer.check_folder(callback.dirpath)
                except ConfigError as error:
                    raise ConfigError(f"callbacks' {type(callback).__name__}.dirpath: {error}") from None
    return build_object(
        cfg.trainer,
        callbacks=[*configured, *callbacks],
        logger=loggers or False,
        plugins=[AtomicCheckpointIO(None if root is None else str(root))],
        **settings,
    )
