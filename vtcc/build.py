"""Build: a resolved config -> the network, the objective (a LightningModule), the data it trains
on and the trainer. ``vtcc-train`` (new runs, resume, ``init_from``, the K search), ``vtcc-eval``,
``vtcc-predict`` and ``model.checkpoint=<run>.ckpt`` backbones all build through here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch import LightningDataModule, Trainer
from omegaconf import DictConfig, OmegaConf

from vtcc import registry
from vtcc.data.features import wrap_for_network
from vtcc.data.images import BUILD_STAGE
from vtcc.errors import ConfigError
from vtcc.io.writer import Writer
from vtcc.models import ClusteringNetwork
from vtcc.objectives import ClusteringModule


def build_object(node: Any, **kwargs: Any) -> Any:
    """Hydra's instantiate of a config node, from a detached, resolved copy: instantiating a node
    in place resolves the interpolations of the nodes it refers to (``data.train_transform:
    ${augment}`` would freeze ``augment``'s ``${data.*}``), and only the resolver writes a config."""
    if OmegaConf.is_config(node):
        node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    return instantiate(node, **kwargs)


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


def build_data(cfg: DictConfig, network: ClusteringNetwork, source: Any | None = None) -> LightningDataModule:
    """The data the objective trains on: the image datamodule (``source``, or the data node's), or
    what the network needs of it (a frozen backbone's cached features, mined neighbour pairs)."""
    source = build_object(cfg.data) if source is None else source
    datamodule = wrap_for_network(cfg, source, network)
    # a frozen backbone: its features are extracted or loaded now (a memory-mapped store's when
    # Lightning sets the data up, once every process of a distributed run is there to share it)
    datamodule.setup(BUILD_STAGE)
    return datamodule


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


def build_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Any], **settings: Any) -> Trainer:
    """The trainer node's Trainer with the run's callbacks (the config's, then vtcc's own),
    loggers and atomic, weights-only checkpoint files, written only inside the run's folder
    (a callback's ``dirpath`` elsewhere is refused before training)."""
    from vtcc.utils.checkpoint import AtomicCheckpointIO

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
