"""A run's spec: what :func:`vtcc.config.resolve.resolve` returns, frozen.

:class:`DataFacts` is what resolving needs to know of the data (its length, classes, the size and
channels images are held at, the width of precomputed features), found out by the assembly
(:func:`vtcc.build.data_facts`), which sets the data source up; resolving itself builds nothing.
:class:`RunSpec` holds the resolved config read-only, with what resolving found out beside it.
Nothing edits a spec: the K search's choice is a new spec (:meth:`RunSpec.with_k`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict


@dataclass(frozen=True)
class DataFacts:
    """What a run's data is, as its source set up for fitting says."""

    length: int  # images (or feature vectors) in all
    train_length: int  # of them, the training images
    num_classes: int | None  # the default K (None: the data does not say)
    labeled: bool  # labels exist (they only score)
    stored_size: int | None  # the side images are held at (None: not images)
    in_chans: int | None  # the channels images are held with (None: not images)
    feature_width: int | None = None  # precomputed features' width (None: images)


def frozen_config(cfg: DictConfig) -> DictConfig:
    """A read-only copy of ``cfg`` (interpolations kept: ``${hydra:...}`` resolves in a run only)."""
    config = copy.deepcopy(cfg)
    OmegaConf.set_readonly(config, True)
    return config


def refine_epochs(cfg: DictConfig) -> int:
    """Epochs of the fresh cluster head at the chosen K: ``k_search.refine_epochs``, or half the run's."""
    epochs = cfg.k_search.get("refine_epochs")
    return int(epochs) if epochs is not None else max(1, int(cfg.trainer.max_epochs) // 2)


@dataclass(frozen=True, eq=False)
class RunSpec:
    """A resolved run: its config (read-only; what ``config.yaml`` records and checkpoints store)
    and what resolving found out."""

    config: DictConfig
    initial: Mapping[str, Any] | None = None  # init_from's checkpoint, read
    candidates: tuple[int, ...] | None = None  # num_clusters=auto: the Ks the search scores
    ckpt_path: str | None = None  # the checkpoint this run resumes
    budget: float | None = None  # time_budget_minutes

    def __post_init__(self) -> None:
        if not OmegaConf.is_readonly(self.config):
            object.__setattr__(self, "config", frozen_config(self.config))

    @property
    def num_clusters(self) -> int:
        return int(self.config.num_clusters)

    @property
    def refines(self) -> bool:
        """num_clusters=auto's refine phase, or a resumed one: it follows the refine plan."""
        return bool(self.candidates) or self.config.k_search.get("chosen") is not None

    @property
    def refine_epochs(self) -> int:
        return refine_epochs(self.config)

    def with_k(self, k: int) -> RunSpec:
        """The K search's result, a new spec: ``num_clusters`` the chosen integer, and ``k_search``
        recording the choice and the refine plan, which a resumed refine phase follows."""
        config = copy.deepcopy(self.config)
        OmegaConf.set_readonly(config, False)
        config.num_clusters = int(k)
        with open_dict(config.k_search):
            config.k_search.refine_epochs = refine_epochs(config)
            config.k_search.chosen = int(k)
        return replace(self, config=frozen_config(config))

    def container(self) -> dict[str, Any]:
        """The config as plain data, interpolations resolved (``config.yaml``, checkpoints)."""
        return OmegaConf.to_container(self.config, resolve=True)
