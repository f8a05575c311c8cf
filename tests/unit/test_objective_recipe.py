"""An objective's config file is its own node (``# @package module``) and nothing else; what its
method needs of other nodes (the cached features' pairing, neighbours, sampling, batch and steps,
the heads' style) is its class's recipe (``feature_recipe``, ``head_style``), which the resolver
puts where the composed config says ``auto``, keeping any value the user gave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import compose_train
from vtcc import registry
from vtcc.config.recipe import RECIPE_KEYS, take_recipe
from vtcc.config.resolve import resolve
from vtcc.config.spec import DataFacts
from vtcc.config.validate import signature, validate_config
from vtcc.objectives import ClusteringModule, TemiClustering, feature_recipe, objective_class
from vtcc.utils.cli import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVE_FILES = [
    *sorted(Path(CONFIG_DIR, "objective").glob("*.yaml")),
    *sorted((ROOT / "examples/plugin/vtcc_iic/conf/objective").glob("*.yaml")),
]
# The architecture only (no download), small enough for a CPU.
PRETRAINED = [
    "model=pretrained",
    "model.pretrained=false",
    "model.name=vit_tiny_patch16_224",
    "model.model_kwargs={img_size:32,patch_size:8,depth:1}",
]
FACTS = DataFacts(length=40, train_length=40, num_classes=4, labeled=True, stored_size=32, in_chans=3)


def header_package(text: str) -> str | None:
    for line in text.splitlines():
        if not line.startswith("#"):
            return None
        if line.startswith("# @package"):
            return line.split()[-1]
    return None


@pytest.mark.parametrize("path", OBJECTIVE_FILES, ids=lambda p: f"{p.parent.parent.parent.name}/{p.stem}")
def test_an_objective_file_holds_its_own_node_only(path):
    """``# @package module``, never ``_global_``: each top-level key is a setting of the objective
    class it names (a ``features:`` or ``model:`` written there would be ``module.features``); its
    defaults list may only choose options of other groups (``override /augment@_global_.augment``)."""
    text = path.read_text()
    assert "_global_:" not in text and "@package _global_" not in text
    assert header_package(text) == "module"
    node = yaml.safe_load(text)
    defaults = node.pop("defaults", [])
    assert all(entry == "_self_" or next(iter(entry)).startswith("override /") for entry in defaults)
    target = node["_target_"]
    if target.startswith("vtcc_iic."):  # the plugin, not installed here: its class read from its source
        assert "class IICClustering(ClusteringModule)" in (path.parents[2] / "__init__.py").read_text()
        return
    parameters, _ = signature(registry.entry(target).obj)
    foreign = sorted(key for key in node if key != "_target_" and key not in parameters)
    assert foreign == [], f"{path.name}: not settings of {target} (another node's keys belong on its class)"


def resolved(tmp_path: Path, *overrides: str) -> dict[str, Any]:
    """The run config vtcc-train would record for ``overrides`` (facts made up: 40 images, 4 classes)."""
    cfg = compose_train(tmp_path / "run", [*PRETRAINED, *overrides], tiny=False, resolve=False)
    validate_config(cfg)  # the composed config's auto values pass the type check
    return resolve(cfg, list(overrides), lambda data: FACTS).container()


@pytest.mark.parametrize(
    ("overrides", "features", "head_style"),
    [
        ([], {"pairing": "views", "num_neighbors": 20, "sampling": "epoch", "batch_size": 256}, "vtcc"),
        (["objective=scan"], {"pairing": "neighbors", "num_neighbors": 20}, "vtcc"),
        (["objective=temi"], {"pairing": "eval_neighbors", "num_neighbors": 50, "sampling": "epoch"}, "temi"),
        (
            ["objective=turtle"],
            {"pairing": "eval", "sampling": "independent", "batch_size": 10000, "steps_per_epoch": 100},
            "turtle",
        ),
        # what the user gives is kept
        (
            ["objective=scan", "features.num_neighbors=7"],
            {"pairing": "neighbors", "num_neighbors": 7},
            "vtcc",
        ),
        (["objective=temi", "model.head_style=linear"], {"pairing": "eval_neighbors"}, "linear"),
        (
            ["objective=turtle", "features.batch_size=64"],
            {"batch_size": 64, "steps_per_epoch": 100},
            "turtle",
        ),
        (["data.batch_size=32"], {"batch_size": 32, "steps_per_epoch": None}, "vtcc"),
    ],
)
def test_each_objectives_recipe_reaches_the_resolved_config(tmp_path, overrides, features, head_style):
    config = resolved(tmp_path, *overrides)
    assert {key: config["features"][key] for key in features} == features
    assert config["model"]["head_style"] == head_style
    assert all(config["features"][key] != "auto" for key in RECIPE_KEYS)  # concrete, as stored


def test_the_composed_config_leaves_the_recipe_auto_and_take_recipe_fills_only_auto(tmp_path):
    overrides = [*PRETRAINED, "objective=temi", "features.sampling=epoch"]
    cfg = compose_train(tmp_path, overrides, tiny=False, resolve=False)
    assert cfg.features.pairing == cfg.features.num_neighbors == cfg.model.head_style == "auto"
    take_recipe(cfg, objective_class(cfg))
    assert (cfg.features.pairing, cfg.features.num_neighbors, cfg.model.head_style) == (
        "eval_neighbors",
        50,
        "temi",
    )
    assert cfg.features.sampling == "epoch" and cfg.features.batch_size == cfg.data.batch_size
    stored = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # a run's stored config
    take_recipe(stored, ClusteringModule)  # nothing auto: nothing changes
    assert stored.features.pairing == "eval_neighbors" and stored.model.head_style == "temi"


def test_a_class_names_only_what_differs_from_its_bases_recipe():
    class Wider(TemiClustering):
        feature_recipe = {"num_neighbors": 10}

    assert feature_recipe(Wider) == {**feature_recipe(TemiClustering), "num_neighbors": 10}
    assert feature_recipe(ClusteringModule) == {
        "pairing": "views",
        "num_neighbors": 20,
        "sampling": "epoch",
        "batch_size": "${data.batch_size}",
        "steps_per_epoch": None,
    }
    assert set(feature_recipe(ClusteringModule)) == set(RECIPE_KEYS)
