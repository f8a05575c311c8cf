"""Plugins: a Python package adds its own objectives, losses, data sources or backbones to vtcc.

A plugin declares an entry point in the group ``vtcc.plugins`` naming its module (``iic =
"vtcc_iic"``); importing that module registers its kinds (``@register("objective", "iic")``,
:mod:`vtcc.registry`). Its config files lie in a ``conf/`` folder beside that module, laid out as
vtcc's own (``conf/objective/iic.yaml``), or where the module's ``VTCC_CONFIG_DIR`` says.

:func:`load_plugins` runs at the start of ``vtcc-train``, ``vtcc-eval`` and ``vtcc-predict``
(:mod:`vtcc.utils.cli`) and of every :class:`vtcc.Clusterer` composition: it loads each plugin once
and stores its config files in Hydra's ConfigStore, under their group with their ``# @package``
header, so ``objective=iic`` composes like a file of vtcc's own, for ``@hydra.main`` and for
``compose`` alike (no search path to add, nothing to install into Hydra's plugin namespace).

A checkpoint records which plugin provided each of its kinds (:data:`PLUGINS_KEY`, written by
:class:`vtcc.utils.callbacks.StoreConfig`). Loading one whose plugin is not installed is refused in
one line naming the package to install (:func:`require_plugins`); nothing is ever imported because
a checkpoint names it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from vtcc import registry
from vtcc.errors import ConfigError

# In a checkpoint beside the stored config: {target: {"distribution", "version", "kind", "name"}}.
PLUGINS_KEY = "vtcc_plugins"
VTCC_CONFIG_DIR = Path(__file__).resolve().parent / "conf"
PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)\s*$")
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # a kind's name, as a checkpoint's record may give it

_stored: set[Path] = set()  # config folders already in the ConfigStore
_options: dict[str, list[Path]] = {}  # group -> the plugins' config files stored for it


def load_plugins() -> dict[str, registry.Plugin]:
    """Load every installed plugin not loaded yet (idempotent) and make its config files
    selectable (``objective=iic``); returns the plugins by distribution."""
    registry.plugins()  # vtcc's own kinds first, then every plugin's
    failure = None
    try:
        registry.load_entry_points()
    except ConfigError as error:  # reported after the plugins that did load are usable
        failure = error
    found = registry.plugins()
    for plugin in found.values():
        for loaded in plugin.modules:
            folder = config_dir(loaded)
            if folder is not None:
                store_configs(folder, plugin.distribution)
    if failure is not None:
        raise failure
    return found


def config_dir(loaded: Any) -> Path | None:
    """Where a plugin module's config files lie: its ``VTCC_CONFIG_DIR``, else ``conf/`` beside it."""
    declared = getattr(loaded, "VTCC_CONFIG_DIR", None)
    if declared is not None:
        return Path(declared)
    source = getattr(loaded, "__file__", None)
    folder = Path(source).parent / "conf" if source else None
    return folder if folder is not None and folder.is_dir() else None


def store_configs(folder: Path, distribution: str) -> list[str]:
    """Every ``<group>/<name>.yaml`` under ``folder`` into Hydra's ConfigStore as ``group=name``,
    with its ``# @package`` header; returns the options stored. An option vtcc has is refused."""
    folder = Path(folder).resolve()
    if folder in _stored:
        return []
    if not folder.is_dir():
        raise ConfigError(
            f"the vtcc plugin {distribution!r} names the config folder {folder}, which does not exist"
        )
    stored = []
    store = ConfigStore.instance()
    for path in sorted(folder.rglob("*.yaml")):
        relative = path.relative_to(folder)
        group = relative.parent.as_posix()
        option = f"{group}={path.stem}" if group != "." else path.stem
        if (VTCC_CONFIG_DIR / relative).exists():
            raise ConfigError(
                f"the vtcc plugin {distribution!r} ships {relative}, which vtcc has: rename it "
                f"(e.g. {group}/{distribution.replace('-', '_')}_{path.stem}.yaml)"
            )
        store.store(
            name=path.stem,
            node=OmegaConf.load(path),
            group=None if group == "." else group,
            package=_package(path),
            provider=distribution,
        )
        stored.append(option)
        _options.setdefault(group, []).append(path)
    _stored.add(folder)
    return stored


def plugin_options(group: str) -> list[Path]:
    """The installed plugins' config files of ``group`` (``objective``): options beside vtcc's own."""
    return list(_options.get(group, []))


def _package(path: Path) -> str | None:
    """The ``# @package`` header of a config file (the comment lines before its first key)."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        match = PACKAGE_HEADER.match(line)
        if match:
            return match.group(1)
    return None


def config_targets(node: Any) -> list[str]:
    """Every ``_target_`` string in a plain config, in order."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(config_targets(value))
    elif isinstance(node, list | tuple):
        for value in node:
            found.extend(config_targets(value))
    return found


def plugin_record(config: Any) -> dict[str, dict[str, str]]:
    """Which plugin provides each plugin kind a run config builds (for its checkpoints)."""
    record = {}
    plugins = registry.plugins()
    for target in config_targets(config):
        found = registry.entry(target)
        if found is not None and found.plugin is not None:
            record[target] = {
                "distribution": found.plugin,
                "version": plugins[found.plugin].version if found.plugin in plugins else "?",
                "kind": found.kind,
                "name": found.name,
            }
    return record


def _recorded(record: Any, target: str) -> dict[str, str] | None:
    """A checkpoint's record of ``target``'s plugin, when it is well formed (the file is data: a
    malformed record is ignored, and the target is then refused as any unknown one)."""
    if not isinstance(record, dict) or not isinstance(record.get(target), dict):
        return None
    item = record[target]
    distribution, kind, name = item.get("distribution"), item.get("kind"), item.get("name")
    if not (isinstance(distribution, str) and registry.DISTRIBUTION.fullmatch(distribution)):
        return None
    if kind not in registry.KINDS or not (isinstance(name, str) and NAME.fullmatch(name)):
        return None
    return {"distribution": distribution, "kind": kind, "name": name}


def require_plugins(config: Any, record: Any, path: Any) -> None:
    """Refuse, in one line naming the package to install, a checkpoint that builds a kind no
    installed plugin registers but its record says a plugin provided. Looked up, never imported."""
    for target in config_targets(config):
        if registry.entry(target) is not None:
            continue
        recorded = _recorded(record, target)
        if recorded is None:
            continue  # not a plugin's: the stored-config check refuses it
        distribution = recorded["distribution"]
        installed = distribution in registry.plugins()
        raise ConfigError(
            f"{path} needs the vtcc plugin '{distribution}' (its {recorded['kind']} {recorded['name']})"
            + (
                ": it is installed but registers no such kind; pip install --upgrade "
                if installed
                else ": pip install "
            )
            + distribution
        )
