"""Every user-facing value type-checked before any work: one line names the first wrong one.

A node with a ``_target_`` maps one to one onto what it builds: each of its keys is checked
against the annotation of the same-named parameter (``inspect.signature`` and
``typing.get_type_hints``, completed by :mod:`vtcc.config.schema`'s tables), and a key that is no
parameter is refused where the builder takes no other keywords. Only targets that
:func:`vtcc.utils.allowlist.is_allowed` names are imported; others are left to the checks that
refuse them. The keys outside any built object follow :class:`vtcc.config.schema.RunSettings`.
Every number has a range, from one table of rules by parameter name
(:data:`vtcc.config.schema.RANGES`): ``num_workers=-1`` stops here, not when a loader is made.
A key that was renamed is refused with its new name (:data:`vtcc.config.schema.RENAMED_KEYS`).

Values are checked as they will be used: interpolations and resolvers (``${oc.env:...}``) are
resolved first; a plain reference to another key (``${data.image_size}``) is checked at that key
(so that an ``auto`` there is not refused where it is copied to), and ``???`` is left to the entry
point that requires it.
"""

from __future__ import annotations

import inspect
import re
import typing
from contextvars import ContextVar
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from typing import Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from vtcc import registry
from vtcc.config import schema
from vtcc.config.types import SKIP, cli, describe, matches, only_choices
from vtcc.errors import ConfigError
from vtcc.utils.allowlist import is_allowed

REFERENCE = re.compile(r"\$\{[\w.\[\]-]*\}")  # ${key.path}: no resolver (no ':')
HYDRA_KEYS = {"_target_", "_recursive_", "_convert_", "_args_"}  # _partial_ is checked: a bool
_CHECKED: ContextVar[dict[str, Any] | None] = ContextVar("checked_types", default=None)


@dataclass(frozen=True)
class Parameter:
    annotation: Any
    default: Any
    owner: str


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`~vtcc.errors.ConfigError` naming the key, the value and what it must be, for
    the first value of the composed ``cfg`` whose type or range is wrong, or that a renamed key
    sets (:data:`vtcc.config.schema.RENAMED_KEYS`). Reads ``cfg``; changes nothing."""
    values = plain(cfg)
    _refuse_renamed(values)
    _check_settings(values, "", schema.RunSettings)


def checked_types(cfg: DictConfig) -> dict[str, Any]:
    """Every key of ``cfg`` that :func:`validate_config` checks, with the type it checks it
    against, ranges included (raises as it does)."""
    token = _CHECKED.set({})
    try:
        validate_config(cfg)
        return dict(_CHECKED.get())
    finally:
        _CHECKED.reset(token)


def _refuse_renamed(values: dict[str, Any]) -> None:
    for old, (new, _) in schema.RENAMED_KEYS.items():
        *parents, key = old.split(".")
        node: Any = values
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node:
            value = cli(node[key]) if node[key] is not SKIP else "..."
            raise ConfigError(f"{old}={value}: {old} was renamed {new}; use {new}={value}")


def plain(node: DictConfig | ListConfig) -> Any:
    """``node`` as plain data, interpolations resolved; references to other keys and ``???`` are
    :data:`~vtcc.config.types.SKIP`."""
    raw = OmegaConf.to_container(node, resolve=False)
    keys = range(len(raw)) if isinstance(raw, list) else list(raw)
    values = [_plain_child(node, key, raw[key]) for key in keys]
    return values if isinstance(raw, list) else dict(zip(keys, values, strict=True))


def _plain_child(parent: DictConfig | ListConfig, key: Any, raw: Any) -> Any:
    if isinstance(raw, str) and (raw == "???" or REFERENCE.fullmatch(raw)):
        return SKIP
    if isinstance(raw, str) and "${" in raw:
        try:
            value = parent[key]
        except Exception:  # noqa: BLE001 - not resolvable here (e.g. ${hydra:...} outside a run)
            return SKIP
        return plain(value) if isinstance(value, DictConfig | ListConfig) else value
    return plain(parent[key]) if isinstance(raw, dict | list) else raw


def _join(where: str, key: Any) -> str:
    return f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)


def _check_settings(values: dict[str, Any], where: str, settings: type) -> None:
    hints = typing.get_type_hints(settings, include_extras=True)
    known = {f.name: f.metadata for f in fields(settings)}
    for key, value in values.items():
        path = _join(where, key)
        if key not in known:
            if key in schema.PLAIN_TARGETS and isinstance(value, dict) and "_target_" not in value:
                _check_keywords(value, path, schema.PLAIN_TARGETS[key])
            else:
                _check_tree(value, path)
        elif is_dataclass(hints[key]):
            _expect(path, value, dict[str, Any], f"the {key}.* settings")
            if isinstance(value, dict):  # not a reference to another key
                _check_settings(value, path, hints[key])
        else:
            annotation = schema.ranged(settings, key, hints[key])
            _expect(path, value, annotation, known[key]["help"], known[key]["example"])
            _check_tree(value, path)


def _check_tree(value: Any, path: str) -> None:
    """Every built node under ``value``."""
    if isinstance(value, dict):
        if "_target_" in value and _builder(value["_target_"]) is not None:
            _check_keywords(value, path, value["_target_"])
            return
        for key, child in value.items():
            _check_tree(child, _join(path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _check_tree(child, _join(path, index))


def _check_keywords(node: dict[str, Any], path: str, target: str) -> None:
    """``node``'s keys as ``target``'s keywords (or, through ``**kwargs``, those it hands on)."""
    builder = _builder(target)
    parameters, open_keywords = signature(builder)
    for key, value in node.items():
        where = _join(path, key)
        if key in HYDRA_KEYS:
            continue
        if key == "_partial_":
            _expect(where, value, bool, "Hydra's partial flag", True)
            continue
        parameter = parameters.get(key)
        if parameter is None and not open_keywords:
            raise ConfigError(
                f"{where}={value!r} is not a setting of {target}: remove it, "
                f"or use one of {', '.join(sorted(parameters))}"
            )
        if parameter is not None:
            default = parameter.default if parameter.default is not inspect.Parameter.empty else None
            owner = target if parameter.owner == _name(builder) else parameter.owner
            _expect(where, value, parameter.annotation, f"{owner}'s {key}", default)
        _check_tree(value, where)


def _expect(path: str, value: Any, annotation: Any, what: str, example: Any = None) -> None:
    checked = _CHECKED.get()
    if checked is not None:
        checked[path] = annotation
    if matches(value, annotation):
        return
    expected = describe(annotation)
    if only_choices(annotation) and isinstance(value, str):
        raise ConfigError(f"{path}={value!r} is unknown: it must be {expected} ({what})")
    hint = f"; e.g. {path}={cli(example)}" if example is not None and matches(example, annotation) else ""
    raise ConfigError(f"{path}={value!r} must be {expected} ({what}{hint})")


def _name(builder: Any) -> str:
    return f"{builder.__module__}.{builder.__qualname__}"


def _builder(target: Any) -> Any:
    """What ``target`` names, when vtcc may build it: a registered kind's own object (looked up,
    not imported), or the torch, kornia or Lightning object that imports; else None."""
    found = registry.entry(target)
    if found is not None:
        return found.obj
    return _import(target) if isinstance(target, str) and is_allowed(target) else None


@cache
def _import(target: str) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception:  # noqa: BLE001 - an optional extra not installed: its own check reports it
        return None


@cache
def signature(builder: Any) -> tuple[dict[str, Parameter], bool]:
    """``builder``'s parameters with their config types, following ``**kwargs`` that it hands on
    (:func:`vtcc.config.schema.forwards`); and whether it takes keywords beyond them."""
    found: dict[str, Parameter] = {}
    current = builder
    while True:
        function = current.__init__ if isinstance(current, type) else current
        try:
            hints = typing.get_type_hints(function, include_extras=True)
        except Exception:  # noqa: BLE001 - an annotation naming an uninstalled package
            hints = {}
        try:
            parameters = inspect.signature(current).parameters
        except (TypeError, ValueError):  # no signature to read: its keys are not checked here
            return found, True
        open_keywords = False
        for name, parameter in parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                open_keywords = True
            elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL and name not in found:
                annotation = _config_type(current, name, hints.get(name, parameter.annotation))
                found[name] = Parameter(annotation, parameter.default, _name(current))
        for (owner, key), annotation in schema.extra_keys().items():
            if owner is current:
                found[key] = Parameter(annotation, inspect.Parameter.empty, _name(current))
        following = schema.forwards().get(current) if open_keywords else None
        if following is None:
            return found, open_keywords
        current = following


def _config_type(owner: Any, name: str, annotation: Any) -> Any:
    """The parameter's annotation as a config gives it: tightened (:func:`schema.overrides`), its
    numbers' range (:func:`schema.ranged`), and ``| "auto"`` where vtcc resolves an ``auto`` before
    building (:func:`schema.resolved_auto`, and an optimiser's rate: :func:`schema.auto_rate`)."""
    if annotation is inspect.Parameter.empty:
        annotation = Any
    annotation = schema.ranged(owner, name, schema.overrides().get((owner, name), annotation))
    if (owner, name) in schema.resolved_auto() or schema.auto_rate(owner, name):
        annotation = Union[annotation, Literal["auto"]]  # noqa: UP007 - annotations of any kind
    return annotation
