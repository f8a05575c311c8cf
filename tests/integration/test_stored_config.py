"""A checkpoint's stored config is a plain run description, checked before anything uses it:
interpolations, objects at places vtcc builds none, Hydra's special keys and non-plain values are
refused; eval and predict write only into the current command's folders."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import compose_train
from tests.integration.test_pretrained import overrides, weights  # noqa: F401  (a module-scoped fixture)
from tests.matrices import options
from vtcc.config.recipe import RECIPE_KEYS, take_recipe
from vtcc.config.stored import check_stored_config, rebuild_settings, upgrade_stored_config
from vtcc.errors import ConfigError
from vtcc.objectives import TemiClustering, objective_class
from vtcc.train import train
from vtcc.utils.checkpoint import load_checkpoint
from vtcc.utils.cli import CONFIG_DIR, run_safely, user_error


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> dict:
    """What vtcc-train stores for the default run: its resolved config."""
    cfg = compose_train(tmp_path_factory.mktemp("stored") / "run")
    take_recipe(cfg, objective_class(cfg))  # the features node's auto settings: the objective's
    return OmegaConf.to_container(cfg, resolve=True)


def crafted(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "crafted.ckpt"
    torch.save({"vtcc_config": config, "state_dict": {}}, path)
    return path


def with_value(config: dict, key: str, value) -> dict:
    config = copy.deepcopy(config)
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return config


def victim_writer(victim: Path) -> str:
    """A resolver that, if evaluated and built, would copy a file to ``victim``."""
    return f"${{oc.create:{{_target_: shutil.copyfile, src: {__file__}, dst: {victim}}}}}"


@pytest.mark.parametrize(
    "key",
    ["data.root", "module.optimizer.lr", "trainer.logger", "seed", "model.name", "preprocessing.in_chans"],
)
def test_an_interpolation_anywhere_is_refused_before_anything_resolves(tmp_path, stored, key):
    victim = tmp_path / "written"
    path = crafted(tmp_path, with_value(stored, key, victim_writer(victim)))
    with pytest.raises(ConfigError, match=rf"interpolation.* at {key}\b"):
        load_checkpoint(path)
    assert not victim.exists()


@pytest.mark.parametrize(
    "value", ["${oc.env:HOME}", "${data.image_size}", "prefix ${now:%H}", ["a", "${seed}"]]
)
def test_every_kind_of_interpolation_is_refused(tmp_path, stored, value):
    with pytest.raises(ConfigError, match="interpolation"):
        check_stored_config(with_value(stored, "data.name", value), "x.ckpt")


def test_an_interpolated_key_is_refused(stored):
    config = copy.deepcopy(stored)
    config["data"]["${oc.env:HOME}"] = 1
    with pytest.raises(ConfigError, match="interpolation"):
        check_stored_config(config, "x.ckpt")


@pytest.mark.parametrize(
    ("key", "target"),
    [
        ("data._target_", "vtcc.data.feature_cache.CachedFeatureDataModule"),  # allowlisted, but writes files
        ("data._target_", "vtcc.data.features.CachedFeatureDataModule"),  # its older name: the same
        ("data._target_", "vtcc.data.load_digits"),
        ("model._target_", "vtcc.data.InMemoryDataModule"),
        ("module._target_", "vtcc.models.vtcc_network"),
        ("module.optimizer._target_", "torch.optim.lr_scheduler.StepLR"),
        ("data.dataset._target_", "vtcc.utils.callbacks.SaveOnInterrupt"),
        ("features._target_", "vtcc.data.InMemoryDataModule"),
        ("k_search._target_", "vtcc.data.load_digits"),  # a node vtcc never builds
    ],
)
def test_a_target_where_vtcc_builds_no_such_object_is_refused(stored, key, target):
    with pytest.raises(ConfigError, match=rf"at {key}"):
        check_stored_config(with_value(stored, key, target), "x.ckpt")


def test_the_feature_caches_older_target_still_loads(tmp_path, stored):
    """Checkpoints written before vtcc/data/feature_cache.py name the features node
    ``vtcc.data.features.CachedFeatureDataModule`` (a registered alias; that module is gone):
    accepted, and loaded under today's target, which is what builds."""
    old = with_value(stored, "features._target_", "vtcc.data.features.CachedFeatureDataModule")
    check_stored_config(old, "x.ckpt")
    today = "vtcc.data.feature_cache.CachedFeatureDataModule"
    assert stored["features"]["_target_"] == today
    assert upgrade_stored_config(old)["features"]["_target_"] == today
    assert load_checkpoint(crafted(tmp_path, old))["vtcc_config"]["features"]["_target_"] == today


def test_an_older_runs_concrete_recipe_loads_unchanged(tmp_path, stored):
    """Runs store their resolved config: the features node's recipe settings as values (written
    when the objective files set them, or filled from the objective's class since). A checkpoint
    loads them as they are, and no ``auto`` is left there for anything to fill."""
    old = copy.deepcopy(stored)
    recipe = {"pairing": "eval_neighbors", "num_neighbors": 50, "sampling": "epoch", "batch_size": 256}
    old["features"].update({**recipe, "steps_per_epoch": None})
    assert all(old["features"][key] != "auto" for key in RECIPE_KEYS)
    loaded = load_checkpoint(crafted(tmp_path, old))["vtcc_config"]
    assert loaded == old
    config = OmegaConf.create(loaded)
    take_recipe(config, TemiClustering)
    assert OmegaConf.to_container(config) == old  # nothing auto: nothing changes


@pytest.mark.parametrize("key", ["module.optimizer._args_", "data._recursive_", "model._convert_"])
def test_hydras_other_special_keys_are_refused(stored, key):
    with pytest.raises(ConfigError, match="special key"):
        check_stored_config(with_value(stored, key, ["x"]), "x.ckpt")


def test_only_plain_values_are_accepted(tmp_path, stored):
    path = crafted(tmp_path, with_value(stored, "data.mean", torch.ones(1)))
    with pytest.raises(ConfigError, match="Tensor value at data.mean"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "choice",
    [f"{g}={o}" for g in ("model", "objective", "augment", "callbacks", "logger") for o in options(g)],
)  # the experiments: resolved on written data, in integration/test_presets_build.py
def test_what_vtcc_stores_for_every_option_passes(tmp_path, choice):
    """The check refuses nothing vtcc-train writes: every group option's resolved config passes."""
    cfg = compose_train(tmp_path / "run", [choice], tiny=False, resolve=False)
    take_recipe(cfg, objective_class(cfg))  # the objective's recipe where the config says auto
    OmegaConf.update(cfg, "data.image_size", 32 if "pretrained" not in choice else 224)
    for key in ("augment.view_b.base", "augment.view_b.hflip_p", "module.selflabel_loss.threshold"):
        if OmegaConf.select(cfg, key) == "auto":  # resolved from init_from's run
            OmegaConf.update(cfg, key, None if key.endswith("base") else 0.9)
    check_stored_config(OmegaConf.to_container(cfg, resolve=True), "x.ckpt")


def test_eval_and_predict_never_download_and_cache_where_the_command_says(stored):
    config = with_value(with_value(stored, "data.download", True), "features.cache_dir", "/elsewhere")
    config["data"]["dataset"]["download"] = True
    settings = rebuild_settings(config, "own/cache")
    assert settings["data"]["download"] is False and settings["data"]["dataset"]["download"] is False
    assert settings["features"]["cache_dir"] == "own/cache"
    assert config["features"]["cache_dir"] == "/elsewhere"  # the stored description is left as it was


def test_eval_of_a_frozen_run_writes_no_cache_where_its_checkpoint_says(
    tmp_path,
    weights,  # noqa: F811
    monkeypatch,
):
    """A checkpoint whose features.cache_dir names a user's folder: eval caches in its own folder."""
    from vtcc.evaluate import evaluate

    run = tmp_path / "run"
    train(compose_train(run, overrides(weights), tiny=False, resolve=False))
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    victim = tmp_path / "user_weights"
    victim.mkdir()
    (victim / "model.pt").write_bytes(b"the user's own weights")
    checkpoint["vtcc_config"]["features"]["cache_dir"] = str(victim)
    torch.save(checkpoint, tmp_path / "moved.ckpt")
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "eval",
            [
                f"ckpt_path={tmp_path / 'moved.ckpt'}",
                f"paths.output_dir={tmp_path / 'eval'}",
                f"paths.log_dir={tmp_path / 'eval_outputs'}",
                "trainer.accelerator=cpu",
            ],
        )
    run_safely(evaluate, cfg)
    assert sorted(p.name for p in victim.iterdir()) == ["model.pt"]
    assert (victim / "model.pt").read_bytes() == b"the user's own weights"
    assert list((tmp_path / "eval_outputs/cache/features").glob("*.pt"))  # its own cache folder


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("data.batch_size", "ten"),
        ("module.optimizer.lr", [1]),
        ("model.depth", 1.5),
        ("features.pairing", "x"),
    ],
)
def test_a_stored_value_of_the_wrong_type_is_refused_at_load(tmp_path, stored, key, value):
    """The stored description is checked against the same typed schema as a command line."""
    path = crafted(tmp_path, with_value(stored, key, value))
    with pytest.raises(ConfigError, match=rf"stores a setting vtcc would not write: {key}="):
        load_checkpoint(path)


def test_a_checkpoint_naming_itself_as_its_backbone_is_refused(tmp_path, stored):
    from vtcc.build import restore_run

    path = tmp_path / "self.ckpt"
    model = {"_target_": "vtcc.models.pretrained.pretrained_network", "name": "vit_tiny_patch16_224"}
    model.update(num_clusters=10, checkpoint=str(path), pretrained=False, mode="frozen")
    torch.save({"vtcc_config": {**stored, "model": model}, "state_dict": {}}, path)
    with pytest.raises(Exception) as raised:  # noqa: B017 - Hydra wraps it; the CLI prints its cause
        restore_run(path)
    assert "names itself as its own backbone" in str(user_error(raised.value))


@pytest.mark.parametrize("key", ["cache_dir", "pretrained_cfg_overlay", "checkpoint_path", "pretrained"])
def test_timm_cannot_be_told_to_fetch_or_read_weights_through_model_kwargs(tmp_path, stored, key):
    """model.model_kwargs go to timm.create_model: its own weight-fetching arguments would let a
    checkpoint download into any folder or make timm load any file; vtcc's settings decide that."""
    from vtcc.build import restore_run
    from vtcc.models.network import timm_arguments

    with pytest.raises(ConfigError, match=rf"model.model_kwargs.{key} would make timm fetch"):
        timm_arguments({key: str(tmp_path)})
    model = {"_target_": "vtcc.models.timm_network", "name": "resnet18", "num_clusters": 10}
    model["model_kwargs"] = {key: str(tmp_path / "elsewhere")}
    path = crafted(tmp_path, {**stored, "model": model})
    with pytest.raises(Exception) as raised:  # noqa: B017 - Hydra wraps it; the CLI prints its cause
        restore_run(path)
    assert "would make timm fetch" in str(user_error(raised.value))
    assert not (tmp_path / "elsewhere").exists()


def test_a_pretrained_node_that_leaves_pretrained_out_is_built_without_fetching_weights(monkeypatch, stored):
    """The weights come from the checkpoint: eval and predict never ask timm for hub weights, whether
    the stored node says pretrained: false or leaves it to the builder's default (true)."""
    import vtcc.models.pretrained as pretrained
    from vtcc.build import build_network

    asked = []
    monkeypatch.setattr(
        pretrained, "create_pretrained_backbone", lambda name, file, flag, kwargs: asked.append(flag)
    )
    monkeypatch.setattr(pretrained, "PretrainedClusteringNetwork", lambda *args, **kwargs: None)
    model = {"_target_": "vtcc.models.pretrained.pretrained_network", "name": "vit_tiny_patch16_224"}
    build_network(
        OmegaConf.create({**stored, "model": {**model, "num_clusters": 10}}), weights_in_checkpoint=True
    )
    assert asked == [False]


def test_features_cached_for_other_backbone_weights_are_never_served(tmp_path, weights):  # noqa: F811
    """The cache key hashes the backbone's weights: a checkpoint's altered backbone cannot plant
    features under the key an honest run with the same settings would read."""
    from vtcc.build import build_network, prepare_run, wrap_for_network
    from vtcc.data.cache_files import weights_digest

    prepared = prepare_run(compose_train(tmp_path, overrides(weights), tiny=False, resolve=False), [])
    cfg, source = prepared.cfg, prepared.source
    honest, altered = build_network(cfg), build_network(cfg)
    assert weights_digest(honest.backbone) == weights_digest(altered.backbone)
    with torch.no_grad():
        next(altered.backbone.parameters()).add_(1e-3)
    assert weights_digest(honest.backbone) != weights_digest(altered.backbone)
    paths = [wrap_for_network(cfg, source, network).path for network in (honest, altered)]
    assert paths[0] != paths[1] and paths[0].parent == paths[1].parent


def test_eval_and_predict_never_compile_what_a_checkpoint_says_to(tmp_path):
    """A stored module.compile: true would make torch write its code cache outside the command's
    folders: a network rebuilt from a checkpoint is never compiled."""
    from vtcc.build import restore_run

    run = tmp_path / "run"
    train(compose_train(run, ["trainer.max_epochs=1"]))
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    checkpoint["vtcc_config"]["module"]["compile"] = True
    torch.save(checkpoint, tmp_path / "compiled.ckpt")
    _, module = restore_run(tmp_path / "compiled.ckpt")
    assert module.compile_backbone is False
