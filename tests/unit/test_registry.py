"""The registry: every kind vtcc builds registers once where it is defined, and what checkpoints may
build, where each kind may stand in a stored config and the schema's tables are generated from it."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from vtcc import registry
from vtcc.config import schema
from vtcc.config.recipe import RECIPE_KEYS
from vtcc.config.stored import check_stored_config
from vtcc.config.validate import signature
from vtcc.data import (
    ImageDataModule,
    ImageSettings,
    InMemoryDataModule,
    StreamingFolderDataModule,
    TwinViewAugmentation,
    strong_view,
)
from vtcc.data.feature_cache import CachedFeatureDataModule
from vtcc.data.pairings import PAIRINGS
from vtcc.data.shards import ShardDataModule
from vtcc.data.transforms import small_image_view
from vtcc.errors import ConfigError
from vtcc.losses import ConfidenceCrossEntropy
from vtcc.models.network import vtcc_network
from vtcc.models.pretrained import PretrainedClusteringNetwork, features_network, pretrained_network
from vtcc.models.vit import vit_conv_stem
from vtcc.objectives import ContrastiveClustering
from vtcc.utils import allowlist
from vtcc.utils.cli import CONFIG_DIR

PACKAGE = Path(CONFIG_DIR).parent
TESTS = Path(__file__).parents[1]  # tests/: every level (unit/, integration/, e2e/) below it
# Modules that are gone whose names old checkpoints still store (registered aliases, which
# vtcc.config.stored rewrites to today's target on load): module -> where its kinds are now.
RETIRED_MODULES = {"vtcc.data.features": "vtcc.data.feature_cache"}


def targets_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["_target_"]] if isinstance(node.get("_target_"), str) else []
        return found + [t for key, value in node.items() if key != "_target_" for t in targets_in(value)]
    if isinstance(node, list):
        return [t for value in node for t in targets_in(value)]
    return []


def config_targets() -> dict[str, list[Path]]:
    """Every ``_target_`` of vtcc's config files, with the files that name it."""
    found: dict[str, list[Path]] = {}
    for path in sorted(Path(CONFIG_DIR).rglob("*.yaml")):
        for target in targets_in(yaml.safe_load(path.read_text())):
            found.setdefault(target, []).append(path.relative_to(CONFIG_DIR))
    return found


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch):
    """What a test registers is gone after it (the generation only grows: no table is stale)."""
    registry.entries()  # vtcc's own kinds first
    for name in ("_entries", "_names", "_plugins", "_failed"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    monkeypatch.setattr(registry, "_loaded_points", set(registry._loaded_points))
    yield registry
    monkeypatch.undo()
    registry._generation += 1


def own_entries() -> list[registry.Entry]:
    return [entry for entry in registry.entries() if entry.own]


def test_the_allowlist_is_every_vtcc_target_of_the_configs_and_nothing_else():
    """A config naming a vtcc kind that is not registered fails here; so does a registered kind
    no config names (unless it says why none does), and an old name that is no alias."""
    in_configs = {target for target in config_targets() if target.split(".")[0] == "vtcc"}
    aliases = {alias for entry in own_entries() for alias in entry.aliases}
    configless = {entry.target for entry in own_entries() if entry.configless}
    assert allowlist.VTCC_TARGETS - aliases - configless == in_configs
    assert aliases == {
        f"vtcc.module.{name}Clustering" for name in ("Contrastive", "Scan", "SelfLabel", "Temi")
    } | {"vtcc.data.features.CachedFeatureDataModule"}  # vtcc/data/features.py, now feature_cache.py
    assert configless == {"vtcc.optim.warmup_cosine"}  # objective/contrastive.yaml's comment names it


def test_every_registered_kind_has_a_config_and_a_test():
    """Each of vtcc's kinds: a config file under vtcc/conf names it (or it says why none does),
    and a test at any level (tests/**/test_*.py) names it, its target or an option that selects it."""
    configs = config_targets()
    files = [path for path in sorted(TESTS.rglob("test_*.py")) if path.resolve() != Path(__file__).resolve()]
    assert {path.parent.name for path in files} >= {"unit", "integration", "e2e"}  # every level is read
    tests = "\n".join(path.read_text() for path in files)
    missing_config, untested = [], []
    for entry in own_entries():
        files = [file for target in entry.targets for file in configs.get(target, [])]
        if not files and not entry.configless:
            missing_config.append(entry.target)
        options = [f"{file.parent.as_posix()}={file.stem}" for file in files]
        names = [entry.obj.__name__, *entry.targets, *options]
        if not any(re.search(rf"\b{re.escape(name)}\b", tests) for name in names):
            untested.append(entry.target)
    assert missing_config == [] and untested == []


def test_each_target_names_the_object_registered_under_it():
    """Imported here (a test may; vtcc never imports what a config names): the public target
    and every alias are the registered object itself, and each kind's name is unique."""
    for entry in own_entries():
        for target in entry.targets:
            module, _, name = target.rpartition(".")
            if module in RETIRED_MODULES:  # gone: a stored config naming it loads under today's target
                assert target in entry.aliases and importlib.util.find_spec(module) is None, target
                continue
            assert getattr(importlib.import_module(module), name) is entry.obj, target
    names = [(entry.kind, entry.name) for entry in registry.entries()]
    assert len(names) == len(set(names))


def test_the_schema_tables_come_from_the_kinds_traits():
    """The tables vtcc kept by hand before the registry, pinned: the same pairs, now generated."""
    images = (InMemoryDataModule, StreamingFolderDataModule, ShardDataModule)
    owners = (*images, ImageSettings)  # the image datamodules' shared keys are checked on ImageSettings
    expected_auto = {(kind, key) for kind in owners for key in ("image_size", "in_chans", "mean", "std")} | {
        (vit_conv_stem, "patch_size"),
        (strong_view, "hflip_p"),
        (small_image_view, "hflip_p"),
        (small_image_view, "invert_p"),
        (strong_view, "base"),
        (ConfidenceCrossEntropy, "threshold"),
        (CachedFeatureDataModule, "num_views"),
        (CachedFeatureDataModule, "store"),
        # the objective's recipe (vtcc.config.recipe): its class's feature_recipe and head_style
        *((CachedFeatureDataModule, key) for key in RECIPE_KEYS),
        (features_network, "head_style"),
        (pretrained_network, "head_style"),
        (PretrainedClusteringNetwork, "head_style"),  # what both builders' **kwargs go on to
        (features_network, "num_features"),
        (PretrainedClusteringNetwork, "num_features"),  # what features_network's **kwargs go on to
        (ContrastiveClustering, "num_cluster_heads"),
        (vtcc_network, "patch_size"),  # the builder itself takes it on through **backbone
    }
    assert schema.resolved_auto() == expected_auto
    assert schema.forwards() == {
        vtcc_network: vit_conv_stem,
        pretrained_network: PretrainedClusteringNetwork,
        features_network: PretrainedClusteringNetwork,
        **dict.fromkeys(images, ImageSettings),  # **settings: the keys every image datamodule shares
    }
    assert schema.extra_keys() == {
        (vtcc_network, "size"): Literal["auto"],
        (TwinViewAugmentation, "family"): Literal["auto"],
        (CachedFeatureDataModule, "cache"): bool,
    }
    assert schema.overrides()[(CachedFeatureDataModule, "pairing")] == Literal[PAIRINGS]
    assert schema.overrides()[(CachedFeatureDataModule, "device")] is schema.DEVICE


def test_every_image_datamodule_takes_the_shared_settings_once_and_forwards_them():
    """Each registered image datamodule names only its own keywords and hands the shared ones on
    as **settings (ImageSettings, collected by ImageDataModule): its registration forwards them
    there, so the validator knows every key of its config node and refuses any other."""
    shared = {field.name for field in fields(ImageSettings)}
    image_kinds = [e for e in registry.entries("datamodule") if issubclass(e.obj, ImageDataModule)]
    assert {e.obj for e in image_kinds} >= {InMemoryDataModule, StreamingFolderDataModule, ShardDataModule}
    for entry in image_kinds:
        own = inspect.signature(entry.obj).parameters
        assert entry.trait("forwards") is ImageSettings, entry.name
        assert not shared & set(own), f"{entry.name} repeats {sorted(shared & set(own))}"
        assert [p.kind for p in own.values()][-1] is inspect.Parameter.VAR_KEYWORD, entry.name
        named = {name for name, p in own.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
        keys, open_keywords = signature(entry.obj)  # what vtcc.config.validate checks a node against
        assert not open_keywords and set(keys) == named | shared, entry.name


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("model._target_", "model"),
        ("module._target_", "objective"),
        ("module.cluster_loss._target_", "loss"),
        ("data._target_", "datamodule"),
        ("data.dataset._target_", "loader"),
        ("augment._target_", "augmentation"),
        ("augment.view_a._target_", "view"),
        ("features._target_", "feature_cache"),
    ],
)
def test_a_stored_place_takes_every_registered_kind_of_its_kind_and_no_other(key, kind):
    """Where a stored config may name what (vtcc.config.stored.PLACES), from the registry."""

    def stored(target: str) -> dict:
        config: dict = {}
        node = config
        *parents, _ = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node["_target_"] = target
        return config

    for entry in registry.entries():
        for target in entry.targets:
            if entry.kind == kind:
                check_stored_config(stored(target), "x.ckpt")
            elif not (kind == "view" and entry.kind == "augmentation"):
                with pytest.raises(ConfigError, match=rf"at {re.escape(key)}"):
                    check_stored_config(stored(target), "x.ckpt")


def test_registering_a_taken_target_or_name_or_an_unknown_kind_is_refused(isolated_registry):
    def builder() -> None: ...

    with pytest.raises(ConfigError, match="already"):
        registry.register("objective", "mine", target="vtcc.objectives.TemiClustering")(builder)
    with pytest.raises(ConfigError, match="already registered"):
        registry.register("objective", "temi", target="mine.Temi")(builder)
    with pytest.raises(ValueError, match="kind must be one of"):
        registry.register("optimiser", "mine")
    registry.register("objective", "mine", target="mine.Mine")(builder)
    assert registry.entry("mine.Mine").obj is builder and registry.named("objective", "mine").plugin is None
    assert not registry.entry("mine.Mine").own  # defined outside vtcc, registered by no plugin


def test_no_module_but_a_kinds_own_names_its_target_or_imports_a_target_by_name():
    """Kinds are told apart by their registered traits and class attributes: a registered target
    written as a string appears only in the file that defines that kind (its @register), and only
    validate.py imports by name (torch, kornia and Lightning objects the allowlist admits)."""
    defining = {
        entry.target: Path(sys.modules[entry.obj.__module__].__file__).resolve() for entry in own_entries()
    }
    for entry in own_entries():
        for alias in entry.aliases:
            defining[alias] = defining[entry.target]
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in defining and defining[node.value] != path:
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
            if name in ("get_method", "get_class", "get_object") and path.name != "validate.py":
                found.append(f"{path.name}:{node.lineno}: {name}")
    assert found == []
