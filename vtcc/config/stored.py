"""The config a checkpoint stores is a description of a run, checked before anything uses it.

A vtcc checkpoint records its run's resolved config: plain values, every ``auto`` and every
interpolation already replaced by what the run used. Before ``vtcc-eval``, ``vtcc-predict``,
resume, ``init_from`` or a ``model.checkpoint=<run>.ckpt`` backbone read it, :func:`check_stored_config`
refuses anything vtcc itself never writes there:

1. anything but plain data (``None``, bool, int, float, str, lists, string-keyed mappings), and any
   ``${...}`` in a key or value: an interpolation or resolver (``${oc.create:...}``) would be
   evaluated when the config is resolved, and could build objects no check has seen;
2. a ``_target_`` at a place where vtcc builds no such kind of object (:data:`PLACES`): the data
   node builds a datamodule that reads images or features, never a feature cache that writes
   files; the model node a vtcc model builder; and so on;
3. Hydra's other special keys (``_args_``, ``_recursive_``, ``_convert_``): vtcc writes none;
4. as the second wall, any ``_target_`` outside :mod:`vtcc.utils.allowlist`.

:func:`rebuild_settings` then turns the checked description into the config eval and predict
build from, with what decides where files are written taken from the current command.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from vtcc import registry
from vtcc.errors import ConfigError
from vtcc.utils.allowlist import disallowed_targets, is_optimizer, is_scheduler, is_view_operation

LIGHTNING_CALLBACKS = {
    "lightning.pytorch.callbacks.ModelCheckpoint",
    "lightning.pytorch.callbacks.LearningRateMonitor",
}
LOGGERS = {f"lightning.pytorch.loggers.{name}Logger" for name in ("CSV", "TensorBoard", "MLFlow", "Wandb")}


def registered(kind: str) -> Callable[[str], bool]:
    """A target registered as ``kind`` (:mod:`vtcc.registry`: vtcc's own and its plugins')."""
    return lambda target: target in registry.targets(kind)


def _view_part(target: str) -> bool:
    return registered("view")(target) or is_view_operation(target)


# Where vtcc builds what: (key path pattern, what a _target_ there may name). The first match decides.
# The datamodules a data node builds only read where the config points (registered as "datamodule");
# the feature cache, which writes files, stands only at features.
PLACES: list[tuple[str, Callable[[str], bool]]] = [
    ("model", registered("model")),
    ("module", registered("objective")),
    ("module.*_loss", registered("loss")),
    ("module.optimizer", is_optimizer),
    ("module.scheduler", lambda t: registered("scheduler")(t) or is_scheduler(t)),
    ("data", registered("datamodule")),
    ("data.dataset", registered("loader")),
    ("data.train_transform", registered("augmentation")),
    ("data.train_transform.*", _view_part),
    ("augment", registered("augmentation")),
    ("augment.*", _view_part),
    ("features", registered("feature_cache")),
    ("trainer", lambda t: t == "lightning.pytorch.Trainer"),
    ("callbacks.*", lambda t: t in LIGHTNING_CALLBACKS or registered("callback")(t)),
    ("logger.*", lambda t: t in LOGGERS),
]
# The registered targets of each kind, as tables (generated: each kind registers where it is defined).
TABLES = {
    "MODELS": "model",
    "OBJECTIVES": "objective",
    "LOSSES": "loss",
    "DATAMODULES": "datamodule",
    "LOADERS": "loader",
    "VIEWS": "view",
}


def __getattr__(name: str) -> frozenset[str]:
    """``MODELS``, ``OBJECTIVES``, ... and ``CALLBACKS``: the targets each place may name."""
    if name in TABLES:
        return registry.targets(TABLES[name])
    if name == "CALLBACKS":
        return frozenset(LIGHTNING_CALLBACKS) | registry.targets("callback")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SPECIAL_KEYS = {"_target_", "_partial_"}
PLAIN = (str, int, float, bool, type(None))


def _refuse(path: Any, key: str, problem: str) -> ConfigError:
    return ConfigError(
        f"{path} stores {problem} at {key or 'its top level'}, which vtcc never writes into a checkpoint: "
        "this file was not written by vtcc as it is; do not use it"
    )


def _place_allows(key: str, target: str) -> bool:
    for pattern, allows in PLACES:
        if fnmatchcase(key, pattern):
            return bool(allows(target))
    return False


def _check_node(node: Any, key: str, path: Any) -> None:
    if isinstance(node, dict):
        for name, value in node.items():
            if not isinstance(name, str):
                raise _refuse(path, key, f"a non-string key {name!r}")
            child = f"{key}.{name}" if key else name
            if "${" in name:
                raise _refuse(path, child, "an interpolation")
            if name.startswith("_") and name.endswith("_") and name not in SPECIAL_KEYS:
                raise _refuse(path, child, f"Hydra's special key {name}")
            if name == "_target_":
                if not isinstance(value, str) or not _place_allows(key, value):
                    raise _refuse(path, child, f"a _target_ {value!r} where vtcc builds no such object")
                continue
            _check_node(value, child, path)
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            _check_node(value, f"{key}[{index}]", path)
    elif not isinstance(node, PLAIN):
        raise _refuse(path, key, f"a {type(node).__name__} value")
    elif isinstance(node, str) and "${" in node:
        raise _refuse(path, key, f"an interpolation ({node[:60]!r})")


def check_stored_config(config: Any, path: Any) -> None:
    """Refuse, with one line naming the key, a stored config that is not a plain run description
    of the kind vtcc writes (see the module docstring); nothing in it is resolved or imported."""
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is not a vtcc checkpoint: its stored config is not a mapping")
    _check_node(config, "", path)
    refused = disallowed_targets(config)  # the second wall: vtcc's allowlist, by name
    if refused:
        key, target = refused[0]
        raise ConfigError(
            f"{path} asks to build {target!r} (at {key}), which vtcc never builds from a checkpoint "
            "(only what vtcc and its installed plugins register, torch optimisers and schedulers, "
            "kornia augmentations): "
            "this file was not written by vtcc as it is; do not use it"
        )


# Settings renamed since a checkpoint may have been written: (section, old key, new key).
RENAMED = [("module", "num_heads", "num_cluster_heads")]  # model.num_heads are attention heads


def upgrade_stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """A checked stored config under today's names (a copy): older checkpoints keep working."""
    import copy

    config = copy.deepcopy(config)
    for section, old, new in RENAMED:
        node = config.get(section)
        if isinstance(node, dict) and old in node and new not in node:
            node[new] = node.pop(old)
    _current_targets(config)
    _untrained_instance_projector(config)
    return config


def _current_targets(node: Any) -> None:
    """Every ``_target_`` that names a kind by an older name (``vtcc.module.*``) under today's."""
    if isinstance(node, dict):
        found = registry.entry(node.get("_target_"))
        if found is not None:
            node["_target_"] = found.target
        for value in node.values():
            _current_targets(value)
    elif isinstance(node, list):
        for value in node:
            _current_targets(value)


def _untrained_instance_projector(config: dict[str, Any]) -> None:
    """Runs from before the instance projector belonged to its objectives stored one for every
    objective: for those that never trained it the model is upgraded to none (its weights are
    dropped on load), as a new run of that objective is built."""
    model = config.get("model")
    if not isinstance(model, dict) or model.get("instance_dim") is None:
        return
    objective = registry.node_entry(config.get("module"))
    if objective is None or objective.kind != "objective":
        return  # no module node or an unknown objective: refused where the module is built
    if not objective.obj.trains_instance_projector:
        model["instance_dim"] = None


def without_downloads(data: dict[str, Any]) -> dict[str, Any]:
    """A stored data section (a copy) that reads its files where they lie, never downloading."""
    import copy

    data = copy.deepcopy(data)
    _no_downloads(data)
    return data


def _no_downloads(node: Any) -> None:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "download":
                node[name] = False
            else:
                _no_downloads(value)


def rebuild_settings(stored: dict[str, Any], cache_dir: str) -> dict[str, Any]:
    """The checked run description as eval and predict build it: the data is read where it lies,
    never downloaded (a download writes under the data's root), and a frozen backbone's features
    are cached in ``cache_dir``, the current command's cache folder, not where the checkpoint says."""
    settings = dict(stored)
    if isinstance(stored.get("data"), dict):
        settings["data"] = without_downloads(stored["data"])
    if isinstance(stored.get("features"), dict):
        settings["features"] = {**stored["features"], "cache_dir": cache_dir}
    return settings
