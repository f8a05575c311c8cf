"""What vtcc can build: every objective, loss, model, data source and augmentation registers once,
where it is defined, and says there what it needs.

``@register("objective", "turtle", target="vtcc.objectives.TurtleClustering")`` above a class (or a
builder function) records an :class:`Entry`: its kind, its name (the config option that selects it,
``objective=turtle``), the ``_target_`` a config names it by (and older names, ``aliases``), the
traits the rest of vtcc reads instead of comparing names (the ``auto`` keys it lets a config leave
for vtcc to fill, marker keys a config may add, the callable its ``**kwargs`` go on to, tighter
types for some keys, a config-less role), and the plugin distribution that registered it (None for
vtcc's own kinds). What checkpoints may build (:mod:`vtcc.utils.allowlist`), where in a stored config
each kind may stand (:mod:`vtcc.config.stored`) and the config schema's tables
(:mod:`vtcc.config.schema`) are read from here.

Lookups never import what a config or a checkpoint names: a target is looked up among what is
registered. Before the first lookup the registry completes itself: it imports vtcc's own modules
that register kinds (:data:`BUILTIN_MODULES`, a fixed list checked against the sources by
``tests/e2e/test_imports.py``) and loads the installed plugins, the entry points of the group
``vtcc.plugins`` (:func:`load_entry_points`; see :mod:`vtcc.plugins` and ``docs/extending.md``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar

from vtcc.errors import ConfigError

T = TypeVar("T")

# The kinds, and what a config node of each builds.
KINDS: dict[str, str] = {
    "objective": "the module node: a ClusteringModule (objective=<name>)",
    "loss": "a loss an objective's node holds (module.<name>_loss)",
    "model": "the model node: a network builder (model=<name>)",
    "datamodule": "the data node: a datamodule that reads images or features (data=<name>)",
    "loader": "data.dataset: the function that loads a dataset's images",
    "augmentation": "the augment node: two augmented views (augment=<name>)",
    "view": "one augmented view (augment.view_a / view_b), or the evaluation transform",
    "feature_cache": "the features node: a frozen backbone's cached features",
    "scheduler": "module.scheduler: a learning-rate schedule",
    "callback": "a callbacks.<name> node",
}
# The entry-point group a plugin declares (pyproject.toml: [project.entry-points."vtcc.plugins"]).
GROUP = "vtcc.plugins"
# vtcc's own modules that register kinds: imported before the first lookup, so every table is
# complete whatever was imported first (tests/e2e/test_imports.py checks it against the sources).
BUILTIN_MODULES = (
    "vtcc.objectives",
    "vtcc.losses",
    "vtcc.models",
    "vtcc.models.pretrained",
    "vtcc.data",
    "vtcc.data.feature_cache",
    "vtcc.data.feature_file",
    "vtcc.data.shards",
    "vtcc.optim",
    "vtcc.utils.callbacks",
)
# A distribution name as PEP 508 spells it: all a checkpoint may name as a plugin to install.
DISTRIBUTION = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class Entry:
    """One registered kind."""

    kind: str
    name: str
    target: str  # the _target_ a config names it by
    obj: Any  # the class or builder function itself
    aliases: tuple[str, ...] = ()  # older targets that name the same object (old checkpoints)
    traits: Mapping[str, Any] = field(default_factory=dict)
    plugin: str | None = None  # the plugin distribution that provides it; None: not a plugin's
    configless: str | None = None  # why no config file names it (None: one does)

    @property
    def own(self) -> bool:
        """One of vtcc's own kinds (defined in the vtcc package)."""
        return self.plugin is None and _package(self.obj) == "vtcc"

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target, *self.aliases)

    def trait(self, name: str, default: Any = None) -> Any:
        return self.traits.get(name, default)

    def describe(self) -> str:
        """``the objective iic`` (as a message names it)."""
        return f"the {self.kind} {self.name}"


@dataclass
class Plugin:
    """An installed plugin: its distribution and the modules its entry points loaded."""

    distribution: str
    version: str
    modules: list[Any] = field(default_factory=list)


_entries: dict[str, Entry] = {}  # by target and by alias
_names: dict[tuple[str, str], Entry] = {}
_plugins: dict[str, Plugin] = {}
_loading: list[str] = []  # the distribution whose entry point is being loaded
_generation = 0  # bumped by every registration: tables built from the registry are cached per generation
_lock = threading.RLock()
_complete = False
_builtins_imported = False
_loaded_points: set[str] = set()  # the entry points loaded, as distribution:name:value
_failed: dict[str, ConfigError] = {}  # the entry points that failed to load, and why


def register(
    kind: str,
    name: str,
    *,
    target: str | None = None,
    aliases: Iterable[str] = (),
    configless: str | None = None,
    **traits: Any,
) -> Callable[[T], T]:
    """Register the decorated class or builder function as ``kind`` ``name``; returns it unchanged.

    ``target``: the ``_target_`` configs name it by (default: where it is defined, ``module.Name``;
    vtcc's own give the public re-export, ``vtcc.objectives.TemiClustering``). ``aliases``: older
    targets of the same object. ``configless``: why no config file names it (e.g. a loss only an
    objective builds). ``traits``: what the kind needs, read by the rest of vtcc:

    - ``auto``: keys a config may leave ``auto``, which vtcc fills before building it;
    - ``extra_keys``: ``{key: type}`` a config node may hold that vtcc consumes before building;
    - ``forwards``: the callable its ``**kwargs`` go on to (its keys are checked against that one's);
    - ``types``: ``{key: type}`` tighter than the signature says (choices kept in a constant);
    - what config code asks of a kind instead of testing its name: ``reads_features`` (a model or
      datamodule of feature vectors, not images), ``pretrained`` (a model whose backbone brings its
      preprocessing), ``probe`` (how a data source's images are sampled before loading: ``folder``,
      ``npz`` or ``shards``), ``strong_view_base`` (a view self-labelling keeps under Cutout).

    An objective states what it needs as class attributes instead (``ClusteringModule``).
    """
    if kind not in KINDS:
        raise ValueError(f"register({kind!r}, {name!r}): the kind must be one of {', '.join(KINDS)}")

    def decorate(obj: T) -> T:
        # a plugin's own kinds are its distribution's (vtcc's, imported while it loads, stay vtcc's)
        plugin = _loading[-1] if _loading and _package(obj) != "vtcc" else None
        default = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', name)}"
        entry = Entry(
            kind,
            name,
            target or default,
            obj,
            tuple(aliases),
            MappingProxyType(dict(traits)),
            plugin,
            configless,
        )
        _add(entry)
        return obj

    return decorate


def _same(old: Entry, new: Entry) -> bool:
    """The same kind registered again (its module imported anew, e.g. reloaded)."""
    return (old.kind, old.name, old.target, old.plugin) == (new.kind, new.name, new.target, new.plugin)


def _add(entry: Entry) -> None:
    global _generation
    with _lock:
        if entry.plugin is not None and any(t.split(".")[0] == "vtcc" for t in entry.targets):
            raise ConfigError(
                f"the vtcc plugin {entry.plugin!r} registers {entry.target!r} under vtcc's own package: "
                "a plugin's kinds live in its own package"
            )
        for key in entry.targets:
            old = _entries.get(key)
            if old is not None and not _same(old, entry):
                raise ConfigError(
                    f"{entry.describe()} ({entry.plugin or 'vtcc'}) names {key!r}, already "
                    f"{old.describe()} ({old.plugin or 'vtcc'}): give it another target"
                )
        old = _names.get((entry.kind, entry.name))
        if old is not None and not _same(old, entry):
            raise ConfigError(
                f"{entry.describe()} of {entry.plugin or 'vtcc'} ({entry.target}) is already registered "
                f"by {old.plugin or 'vtcc'} ({old.target}): choose another name"
            )
        for key in entry.targets:
            _entries[key] = entry
        _names[(entry.kind, entry.name)] = entry
        _generation += 1


def _ensure_complete() -> None:
    """vtcc's own kinds and the installed plugins' are registered (once)."""
    global _complete
    if _complete:
        return
    with _lock:
        if _complete:
            return
        _complete = True  # a lookup while these import sees what is registered so far
        try:
            load_entry_points()
        except ConfigError:
            pass  # a plugin that failed to load: vtcc.plugins.load_plugins reports it at start


def _import_builtins() -> None:
    """vtcc's own kinds registered (once): before any plugin, so none is taken for a plugin's."""
    global _builtins_imported
    if not _builtins_imported:
        _builtins_imported = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def _package(obj: Any) -> str:
    """The top-level package that defines ``obj`` (``vtcc``, ``vtcc_iic``)."""
    return str(getattr(obj, "__module__", None) or "").split(".")[0]


def _attribute(package: str, distribution: str) -> None:
    """Kinds of ``package`` registered before its plugin loaded (its module imported first, e.g.
    by a test or a script) become that plugin's."""
    global _generation
    for old in {id(e): e for e in _entries.values()}.values():
        if old.plugin is None and package != "vtcc" and _package(old.obj) == package:
            new = replace(old, plugin=distribution)
            for key in old.targets:
                _entries[key] = new
            _names[(old.kind, old.name)] = new
            _generation += 1


def load_entry_points() -> dict[str, Plugin]:
    """Load every entry point of the group ``vtcc.plugins`` not loaded yet; what each registers is
    recorded as its distribution's. Every plugin that loads is kept; then a plugin that failed to
    load (now or before) is one line naming it (:class:`~vtcc.errors.ConfigError`)."""
    with _lock:
        _import_builtins()
        for point in importlib.metadata.entry_points(group=GROUP):
            dist = point.dist
            distribution = dist.metadata["Name"] if dist is not None else point.module
            key = f"{distribution}:{point.name}:{point.value}"
            if key in _loaded_points:
                continue
            _loaded_points.add(key)
            _loading.append(distribution)
            try:
                loaded = point.load()
            except ConfigError as error:
                _failed[key] = error
                continue
            except Exception as error:  # noqa: BLE001 - any failure of third-party code: one line
                _failed[key] = ConfigError(
                    f"the vtcc plugin {distribution!r} (entry point {point.name} = {point.value}) failed "
                    f"to load ({type(error).__name__}: {error}): fix or uninstall it "
                    f"(pip uninstall {distribution})"
                )
                continue
            finally:
                _loading.pop()
            plugin = _plugins.setdefault(
                distribution, Plugin(distribution, dist.version if dist is not None else "?")
            )
            plugin.modules.append(loaded)
            _attribute(point.module.split(".")[0], distribution)
        if _failed:
            raise next(iter(_failed.values()))
        return dict(_plugins)


def generation() -> int:
    """Changes whenever something registers: a table built from the registry is cached per value."""
    _ensure_complete()
    return _generation


def entries(kind: str | None = None) -> list[Entry]:
    """Every registered kind (of ``kind``), each once."""
    _ensure_complete()
    unique = {id(e): e for e in _entries.values()}.values()
    return sorted((e for e in unique if kind is None or e.kind == kind), key=lambda e: (e.kind, e.name))


def targets(kind: str | None = None) -> frozenset[str]:
    """The ``_target_`` names (and aliases) of every registered kind (of ``kind``)."""
    _ensure_complete()
    return frozenset(key for key, e in _entries.items() if kind is None or e.kind == kind)


def entry(target: Any) -> Entry | None:
    """The entry a ``_target_`` names, or None: looked up, never imported."""
    _ensure_complete()
    return _entries.get(target) if isinstance(target, str) else None


def named(kind: str, name: str) -> Entry | None:
    """The entry of ``kind`` called ``name`` (``named("objective", "iic")``), or None."""
    _ensure_complete()
    return _names.get((kind, name))


def entry_of(obj: Any) -> Entry | None:
    """The entry of a registered class or builder function itself, or None."""
    _ensure_complete()
    return next((e for e in _entries.values() if e.obj is obj), None)


def node_entry(node: Any) -> Entry | None:
    """The entry a config node's ``_target_`` names, or None (no node, no target, not registered)."""
    target = node.get("_target_") if hasattr(node, "get") else None
    return entry(str(target)) if target is not None else None


def builds(node: Any, kind: str | None = None, **traits: Any) -> bool:
    """Whether a config node builds a registered kind (of ``kind``) whose traits are ``traits``."""
    found = node_entry(node)
    if found is None or (kind is not None and found.kind != kind):
        return False
    return all(found.trait(name) == value for name, value in traits.items())


def plugins() -> dict[str, Plugin]:
    """The installed plugins that loaded, by distribution."""
    _ensure_complete()
    return dict(_plugins)
