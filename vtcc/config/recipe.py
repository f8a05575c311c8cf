"""An objective's recipe in the other nodes: what its method needs of the cached features and the heads.

An objective's config file holds its own node only (``# @package module``). What its method
needs of other nodes is declared on its class, beside its other traits
(:class:`vtcc.objectives.base.ClusteringModule`): ``feature_recipe``, the cached-features settings
(``features.pairing``, ``num_neighbors``, ``sampling``, ``batch_size``, ``steps_per_epoch``), and
``head_style``, the cluster heads (``model.head_style``). Those keys are ``auto`` in their own
group's config (train.yaml's ``features`` node, ``model=pretrained``, ``model=features``);
:func:`take_recipe` fills each ``auto`` from the objective's class, before anything reads them. A
value the user gave (the command line, an experiment file) is kept as it is, and a stored config
(a checkpoint's: every value concrete) is never changed. Its own node's one ``auto``,
``module.optimizer.lr``, takes the class's ``auto_rates`` (:func:`resolve_learning_rate`, once the
time budget is known).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from omegaconf import DictConfig

from vtcc import registry
from vtcc.config.validate import signature
from vtcc.errors import ConfigError
from vtcc.objectives import ClusteringModule, feature_recipe

log = logging.getLogger("vtcc")

AUTO = "auto"
# The features node's keys an objective's recipe sets (ClusteringModule.feature_recipe's keys).
RECIPE_KEYS = ("pairing", "num_neighbors", "sampling", "batch_size", "steps_per_epoch")


def take_recipe(cfg: DictConfig, objective: type[ClusteringModule]) -> None:
    """Each ``auto`` of ``features.<recipe key>`` and ``model.head_style`` in ``cfg``: the
    ``objective`` class's (``head_style`` None: the model's own, its builder's default). Idempotent:
    run again after the model node is replaced (``model=auto`` under ``data=features``)."""
    taken = []
    features = cfg.get("features")
    if features:
        recipe = feature_recipe(objective)
        for key in RECIPE_KEYS:
            if key in features and features.get(key) == AUTO:
                features[key] = recipe[key]
                taken.append(f"features.{key}={features[key]}")
    model = cfg.get("model")
    if model and model.get("head_style") == AUTO:
        model.head_style = objective.head_style or _own_head_style(model)
        taken.append(f"model.head_style={model.head_style}")
    if taken:
        log.debug("%s's recipe: %s", objective.__name__, ", ".join(taken))


def _own_head_style(model: DictConfig) -> str:
    """The head style a model builds when not told (its builder's ``head_style`` default)."""
    found = registry.node_entry(model)
    parameter = signature(found.obj)[0].get("head_style") if found is not None else None
    default = parameter.default if parameter is not None else inspect.Parameter.empty
    if not isinstance(default, str):
        raise ConfigError(
            f"model.head_style=auto: model._target_={model.get('_target_')!r} has no head style of "
            "its own and the objective names none: set model.head_style (vtcc, cc, linear, temi, turtle)"
        )
    return default


def resolve_learning_rate(cfg: DictConfig, objective: type[ClusteringModule], stored: dict[str, Any]) -> None:
    """``module.optimizer.lr=auto``: the objective's rate for a run a time budget plans, or for a
    fixed number of epochs (its ``auto_rates``); a resumed run keeps its checkpoint's rate."""
    optimizer = cfg.module.get("optimizer")
    if not optimizer or optimizer.get("lr") != "auto":
        return
    kept = ((stored.get("module") or {}).get("optimizer") or {}).get("lr")
    rates = objective.auto_rates
    if isinstance(kept, (int, float)):
        optimizer.lr = kept
    elif rates is None:
        raise ConfigError(
            f"module.optimizer.lr=auto: objective {objective.__name__} has no rule for its rate: "
            "set a number, e.g. module.optimizer.lr=1e-4"
        )
    else:
        budgeted = cfg.get("time_budget_minutes") is not None
        optimizer.lr = rates.budget if budgeted else rates.epochs
        if budgeted:
            log.info("module.optimizer.lr=%g for a run a time budget plans (set it to change)", optimizer.lr)
