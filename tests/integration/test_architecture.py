"""How a run is put together: resolved once (vtcc/config/), built from the result (vtcc/build.py)
for every option, and kinds told apart by interface, never by a target's name."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from tests.conftest import compose_train
from tests.matrices import MODELS, OBJECTIVES
from vtcc.build import build_run, build_trainer, prepare_run
from vtcc.config.recipe import take_recipe
from vtcc.errors import ConfigError
from vtcc.objectives import objective_class, validation_metrics
from vtcc.train import train
from vtcc.utils.cli import CONFIG_DIR, user_error

PACKAGE = Path(CONFIG_DIR).parent
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)

# Writes to a config object: open_dict, OmegaConf.update, or assigning into a node's key.
CONFIG_WRITE = re.compile(
    r"open_dict\(|OmegaConf\.update\(|set_struct\("
    r"|\b(cfg|run_cfg|config|features|data|model|node|view|loss)(\.[A-Za-z_]+)+ = "
    r"|\b(cfg|run_cfg)\[[^]]+\] = "
)


def test_no_module_but_the_resolver_writes_to_a_config():
    writers = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in SOURCES
        if "config" not in path.relative_to(PACKAGE).parts[:1]
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if CONFIG_WRITE.search(line)
    ]
    assert writers == []


def vtcc_names() -> set[str]:
    """Every class and function vtcc defines: what a target string could end with."""
    names = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                names.add(node.name)
    return names


def test_no_target_is_told_apart_by_its_ending():
    names = vtcc_names()
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "endswith":
                for argument in ast.walk(node):
                    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                        if argument.value.lstrip(".").split(".")[-1] in names:
                            found.append(f"{path.name}:{node.lineno}: endswith({argument.value!r})")
            if isinstance(node, ast.Constant) and node.value == "_target_":
                pass
    assert found == []
    source = "\n".join(path.read_text() for path in SOURCES)
    assert not re.search(r"_target_[^\n]*\.endswith\(", source)


def test_no_attribute_probe_decides_what_kind_of_network_or_objective_a_thing_is():
    probe = re.compile(r"\b(hasattr|getattr)\(\s*(self\.)?(network|module|objective|pl_module|model)\b")
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in SOURCES
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if probe.search(line) and "patch_embed" not in line  # timm's data config of a timm model
    ]
    assert found == []


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    """96 small gray images in two kinds (light and dark), labelled: written data for the builds."""
    rng = np.random.default_rng(0)
    labels = np.arange(96) % 2
    images = (rng.integers(0, 60, (96, 16, 16)) + 150 * labels[:, None, None]).astype(np.uint8)
    path = tmp_path_factory.mktemp("npz") / "images.npz"
    np.savez(path, x=images, y=labels)
    return path


# "auto" values decided when the run starts, on purpose: Lightning's and torch's choice of device
# and strategy, and TEMI's teacher momentum (it follows the planned steps while a budget re-plans).
RUN_TIME_AUTO = {
    "trainer.accelerator",
    "trainer.strategy",
    "trainer.devices",
    "features.device",
    "module.teacher_momentum",
}


def model_settings(model: str) -> list[str]:
    if model == "pretrained":  # the architecture only: no download
        return [
            "model.pretrained=false",
            "model.name=vit_tiny_patch16_224",
            "model.model_kwargs={img_size:32,patch_size:8,depth:1}",
            "features.num_views=2",
        ]
    return {"vit_small": ["model.depth=1"], "resnet34": ["data.image_size=32"]}.get(model, [])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_model_and_objective_resolves_on_written_data_and_builds(tmp_path, npz, model, objective):
    """Resolved on real (written) data, then built: the network, the objective and the data it
    trains on; a combination vtcc cannot train is one clear line."""
    overrides = [
        f"model={model}",
        f"objective={objective}",
        "data=npz",
        f"data.root={npz}",
        "data.batch_size=32",
        "callbacks=none",
    ]
    cfg = compose_train(tmp_path, [*overrides, *model_settings(model)], tiny=False, resolve=False)
    try:
        resolved = prepare_run(cfg, [])
        cfg = resolved.cfg
        run = build_run(cfg, resolved.source)
    except Exception as error:  # noqa: BLE001 - Hydra wraps the builders' errors
        cause = user_error(error)
        assert cause is not None, error  # never a crash
        kind = objective_class(cfg)
        needs_frozen = kind.requires_frozen_backbone and model != "pretrained"
        assert (
            needs_frozen
            or kind.needs_source_run
            or (objective, model)
            in {("scan", m) for m in MODELS if m != "pretrained"} | {(o, "features") for o in OBJECTIVES}
        ), cause  # features: data=features only
        if model == "features" and not kind.needs_source_run:  # init_from is said first
            assert "add data=features" in str(cause)
        assert_network_and_objective_build(model, objective)  # the parts, where a run is refused
        return
    plain = OmegaConf.to_container(cfg, resolve=True)
    leftover = [key for key, value in walk(plain) if value == "auto" and key not in RUN_TIME_AUTO]
    assert leftover == []  # every auto of vtcc's decided
    trainer = build_trainer(cfg, [], [], fast_dev_run=1, enable_progress_bar=False)
    trainer.fit(run.module, datamodule=run.datamodule)  # one training and one evaluation batch
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert run.network.num_clusters == 2
    # the instance projector exists for, and only for, an objective that trains it
    trains = objective_class(cfg).trains_instance_projector
    assert (run.network.instance_projector is not None) == trains == (objective == "contrastive")
    assert (cfg.model.instance_dim is None) == (not trains)


def assert_network_and_objective_build(model: str, objective: str) -> None:
    """The model's network and the objective, built from the composed config as they would be for
    a run vtcc refuses to start here (no source run, image models under an objective of cached
    features, no feature file), compute one finite loss on two inputs of the network's kind."""
    overrides = [f"model={model}", f"objective={objective}", "num_clusters=3", "data.image_size=32"]
    overrides += [o for o in model_settings(model) if not o.startswith(("features.", "data."))]
    if model == "features":  # as the resolver reads it from data=features
        overrides += ["model.num_features=16"]
    if objective == "selflabel":  # auto: decided from init_from's run
        overrides += ["module.selflabel_loss.threshold=0.99"]
    cfg = compose_train("x", overrides, tiny=False)
    objective_type = objective_class(cfg)
    take_recipe(cfg, objective_type)  # the objective's head style, as the resolver takes it
    if objective_type.head_style and cfg.model.get("head_style") != objective_type.head_style:
        # a model whose config names no head style (or its own): vtcc refuses it for an objective
        # on cached features (TEMI, TURTLE); its network is built with that objective's heads here
        with open_dict(cfg.model):
            cfg.model.head_style = objective_type.head_style
    if not objective_type.trains_instance_projector:  # as the resolver sets it
        cfg.model.instance_dim = None
    network = instantiate(cfg.model)
    module = instantiate(cfg.module, network=network)
    channels = 3 if model == "pretrained" else cfg.data.in_chans
    images = torch.randn(4, 16) if model == "features" else torch.randn(4, channels, 32, 32)
    losses = module.losses(images, images + 0.1 * torch.randn_like(images))
    assert torch.isfinite(losses["loss"]) and network.num_clusters == 3


def walk(node, where: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}[{index}]")
    else:
        yield where, node


def test_a_runs_config_yaml_builds_the_same_run_with_nothing_but_the_builder(tmp_path, npz):
    run_dir = tmp_path / "run"
    settings = ["data=npz", f"data.root={npz}", "data.batch_size=32", "trainer.max_epochs=1"]
    cfg = compose_train(run_dir, settings, resolve=False)
    train(cfg)
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert "${" not in json.dumps(stored)  # plain: every interpolation resolved
    checkpoint = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["vtcc_config"] == stored  # what checkpoints store is config.yaml
    rebuilt = build_run(
        OmegaConf.create(stored), weights=lambda module: module.load_state_dict(checkpoint["state_dict"])
    )
    trainer = build_trainer(OmegaConf.create(stored), [], [])
    metrics = validation_metrics(trainer, rebuilt.module, rebuilt.datamodule)
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final.pop("stopped")["reason"] == "epochs_done"  # the rest are the metrics
    assert metrics == pytest.approx(final, abs=1e-9)


def test_selflabel_without_a_source_run_is_one_line(tmp_path, npz):
    cfg = compose_train(tmp_path, ["objective=selflabel", "data=npz", f"data.root={npz}"], resolve=False)
    with pytest.raises(ConfigError, match="starts from a trained run"):
        prepare_run(cfg, [])


def test_a_checkpoint_that_names_its_objective_by_the_old_module_path_still_rebuilds(tmp_path, npz):
    """Checkpoints written before vtcc/objectives/ store vtcc.module.<Objective>: same classes."""
    from vtcc.build import restore_run

    settings = ["data=npz", f"data.root={npz}", "data.batch_size=32", "trainer.max_epochs=1"]
    train(compose_train(tmp_path / "run", settings, resolve=False))
    checkpoint = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["vtcc_config"]["module"]["_target_"] == "vtcc.objectives.ContrastiveClustering"
    checkpoint["vtcc_config"]["module"]["_target_"] = "vtcc.module.ContrastiveClustering"
    torch.save(checkpoint, tmp_path / "old.ckpt")
    _, module = restore_run(tmp_path / "old.ckpt")
    for key, value in module.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][key]), key


def test_cluster_heads_and_attention_heads_have_their_own_names(tmp_path, npz):
    """module.num_cluster_heads (cluster heads) and model.num_heads (a ViT's attention heads); a
    checkpoint from before the rename (module.num_heads) still rebuilds with its heads."""
    from vtcc.build import restore_run

    cfg = compose_train(tmp_path / "x", ["module.num_cluster_heads=3"], resolve=False)
    assert cfg.module.num_cluster_heads == 3 and cfg.model.num_heads == 2 and "num_heads" not in cfg.module
    settings = ["data=npz", f"data.root={npz}", "data.batch_size=32", "trainer.max_epochs=1"]
    train(compose_train(tmp_path / "run", [*settings, "module.num_cluster_heads=2"], resolve=False))
    checkpoint = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    module = checkpoint["vtcc_config"]["module"]
    module["num_heads"] = module.pop("num_cluster_heads")  # as it was stored before the rename
    torch.save(checkpoint, tmp_path / "old.ckpt")
    _, restored = restore_run(tmp_path / "old.ckpt")
    assert restored.network.num_cluster_heads == 2


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_group_is_packaged_alike_and_its_class_names_its_pairing(objective):
    """Each objective option is the module node (its LightningModule) alone; the way its training
    pairs are drawn from cached features (features.pairing) is its class's recipe."""
    from vtcc import registry
    from vtcc.data.pairings import PAIRINGS
    from vtcc.objectives import feature_recipe

    text = (Path(CONFIG_DIR) / "objective" / f"{objective}.yaml").read_text()
    assert text.splitlines()[0] == "# @package module"
    node = yaml.safe_load(text)
    assert node["_target_"].startswith("vtcc.objectives.")
    assert feature_recipe(registry.entry(node["_target_"]).obj)["pairing"] in PAIRINGS


def written_data(name: str, root: Path) -> list[str]:
    """Each data option whose real on-disk format a test can write, written small under ``root``."""
    from tests import fake_data

    if name == "digits":
        return []
    if name == "npz":
        np.savez(root / "x.npz", x=fake_data.random_images(40, 1, 12, seed=0)[:, 0], y=np.arange(40) % 4)
        return [f"data.root={root / 'x.npz'}"]
    if name in ("folder", "folder_streaming"):
        fake_data.write_image_folder(root, ["a", "b", "c"], per_class=8)
    elif name == "shards":  # the folder, written as shards by vtcc-shards
        from vtcc.data.shard_writer import write_shards

        fake_data.write_image_folder(root / "images", ["a", "b", "c"], per_class=8)
        write_shards(root / "images", root / "shards", shard_size=4)
        return [f"data.root={root / 'shards'}", "data.num_workers=0"]
    else:
        writers = {
            "cifar10": lambda: fake_data.write_cifar10(root, per_file=8),
            "cifar100_20": lambda: fake_data.write_cifar100(root, per_file=40),
            "stl10": lambda: fake_data.write_stl10(root, per_split=20),
            "mnist": lambda: fake_data.write_idx(root, "MNIST", per_split=20),
            "fashion_mnist": lambda: fake_data.write_idx(root, "FashionMNIST", per_split=20),
        }
        writers[name]()
    return [f"data.root={root}"]


WRITTEN = [
    "digits",
    "npz",
    "folder",
    "folder_streaming",
    "shards",
    "cifar10",
    "cifar100_20",
    "stl10",
    "mnist",
    "fashion_mnist",
]


@pytest.mark.parametrize("data", WRITTEN)
@pytest.mark.parametrize("augment", ["auto", "cc", "small", "vtcc"])
def test_every_data_and_augment_option_resolves_on_written_data_and_trains_a_step(tmp_path, data, augment):
    """The datasets vtcc reads in their published formats (written small here), under every
    augmentation that needs no source run: resolved, built, one training and evaluation batch."""
    settings = [f"data={data}", *written_data(data, tmp_path), f"augment={augment}", "callbacks=none"]
    settings += ["data.batch_size=16", "model.embed_dim=32", "model.depth=1", "model.num_heads=2"]
    if data in ("cifar10", "cifar100_20", "stl10") or augment == "vtcc":
        settings.append("data.image_size=16")  # small enough for a 2-core CPU
    cfg = compose_train(tmp_path / "run", settings, tiny=False, resolve=False)
    if augment in ("cc", "vtcc") and data in ("digits", "npz", "mnist", "fashion_mnist"):
        with pytest.raises(Exception) as raised:  # noqa: B017 - Hydra wraps it; the CLI prints its cause
            prepared = prepare_run(cfg, [])
            build_run(prepared.cfg, prepared.source)
        assert "need colour images" in str(user_error(raised.value))  # one line, not kornia's crash
        return
    prepared = prepare_run(cfg, [])
    cfg = prepared.cfg
    run = build_run(cfg, prepared.source)
    trainer = build_trainer(cfg, [], [], fast_dev_run=1, enable_progress_bar=False, accelerator="cpu")
    trainer.fit(run.module, datamodule=run.datamodule)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert [key for key, value in walk(plain) if value == "auto" and key not in RUN_TIME_AUTO] == []


def test_image_datamodules_are_siblings_and_every_datamodule_keeps_one_protocol(tmp_path, npz):
    """In memory and streaming share a base, neither is the other's parent (no dataset=None
    subclass); they and the datamodules over a backbone's features answer the same protocol."""
    from vtcc.data import ClusteringData, ImageDataModule, InMemoryDataModule, StreamingFolderDataModule
    from vtcc.data.feature_cache import CachedFeatureDataModule
    from vtcc.data.neighbors import NeighborPairsDataModule

    assert not issubclass(StreamingFolderDataModule, InMemoryDataModule)
    assert not issubclass(InMemoryDataModule, StreamingFolderDataModule)
    for kind in (InMemoryDataModule, StreamingFolderDataModule):
        assert issubclass(kind, ImageDataModule)
    cfg = compose_train(tmp_path, ["data=npz", f"data.root={npz}", "data.batch_size=16"], resolve=False)
    resolved = prepare_run(cfg, [])
    assert isinstance(resolved.source, ClusteringData)
    pretrained = compose_train(
        tmp_path / "p",
        ["model=pretrained", "data=npz", f"data.root={npz}", "data.batch_size=16"]
        + model_settings("pretrained"),
        tiny=False,
        resolve=False,
    )
    frozen = prepare_run(pretrained, [])
    run = build_run(frozen.cfg, frozen.source)
    assert isinstance(run.datamodule, CachedFeatureDataModule | NeighborPairsDataModule)
    assert isinstance(run.datamodule, ClusteringData)


def test_a_run_loads_its_images_once(tmp_path, npz, monkeypatch):
    """Resolve, build, fit and the final evaluation share one set-up datamodule: the dataset's
    loader runs once per run, however often Lightning calls setup."""
    from vtcc.data import InMemoryDataModule

    calls = []
    real = InMemoryDataModule.setup

    def counted(self, stage=None):
        if self.arrays is None:  # a set-up datamodule's setup is a no-op; this one loads
            calls.append(stage)
        return real(self, stage)

    monkeypatch.setattr(InMemoryDataModule, "setup", counted)
    cfg = compose_train(
        tmp_path,
        ["data=npz", f"data.root={npz}", "data.batch_size=16", "trainer.max_epochs=1"],
        resolve=False,
    )
    train(cfg)
    assert len(calls) == 1


def test_a_run_whose_objective_trains_no_instance_projector_stores_none_and_old_ones_still_rebuild(
    tmp_path, npz
):
    """Self-labelling from a contrastive run does not carry the source's instance projector on:
    its checkpoint has no such weights and its config says model.instance_dim: null; a checkpoint
    from before (an untrained projector stored with every objective) rebuilds, the weights dropped."""
    from vtcc.build import restore_run

    settings = ["data=npz", f"data.root={npz}", "data.batch_size=32", "trainer.max_epochs=1"]
    train(compose_train(tmp_path / "source", settings, resolve=False))
    source = tmp_path / "source/checkpoints/last.ckpt"
    train(
        compose_train(
            tmp_path / "selflabel",
            [*settings, "objective=selflabel", f"init_from={source}", "module.selflabel_loss.threshold=0.5"],
            resolve=False,
        )
    )
    checkpoint = torch.load(tmp_path / "selflabel/checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["vtcc_config"]["model"]["instance_dim"] is None
    assert not [key for key in checkpoint["state_dict"] if "instance_projector" in key]
    # as such a run was stored before: the source's projector weights and its instance_dim
    old_weights = torch.load(source, weights_only=True)["state_dict"]
    projector = {k: v for k, v in old_weights.items() if k.startswith("network.instance_projector.")}
    assert projector
    checkpoint["state_dict"].update(projector)
    checkpoint["vtcc_config"]["model"]["instance_dim"] = 128
    torch.save(checkpoint, tmp_path / "old.ckpt")
    run_cfg, module = restore_run(tmp_path / "old.ckpt")
    assert module.network.instance_projector is None and run_cfg.model.instance_dim is None
    with pytest.raises(ConfigError, match="cannot be resumed.*init_from="):  # its optimiser state differs
        prepare_run(
            compose_train(
                tmp_path / "resumed",
                [
                    *settings,
                    f"ckpt_path={tmp_path / 'old.ckpt'}",
                    "objective=selflabel",
                    f"init_from={source}",
                ],
                resolve=False,
            ),
            [],
        )
    size = run_cfg.data.image_size
    embeddings, _ = module.network.embed_and_assign(torch.zeros(2, 1, size, size))
    assert embeddings.shape == (2, module.network.backbone.num_features)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2))


def test_k_search_on_instance_vectors_needs_an_objective_that_trains_them(tmp_path, npz):
    settings = ["data=npz", f"data.root={npz}", "data.batch_size=32", "num_clusters=auto"]
    settings.append("k_search.embedding=instance")
    scan = compose_train(tmp_path, [*settings, "objective=scan"], resolve=False)
    with pytest.raises(ConfigError, match="k_search.embedding=backbone"):
        prepare_run(scan, [])
    contrastive = compose_train(tmp_path, settings, resolve=False)
    assert prepare_run(contrastive, []).cfg.model.instance_dim == 128


@pytest.mark.parametrize("model", ["vit_tiny", "pretrained"])
def test_building_a_run_leaves_its_resolved_config_as_it_was(tmp_path, npz, model):
    """Only the resolver writes a config: building (Hydra's instantiate resolves the interpolations
    of the nodes it reaches, e.g. augment's ${data.*} through data.train_transform) works on a copy."""
    overrides = [f"model={model}", "data=npz", f"data.root={npz}", "data.batch_size=32", "callbacks=none"]
    cfg = compose_train(tmp_path, [*overrides, *model_settings(model)], tiny=False, resolve=False)
    resolved = prepare_run(cfg, [])
    cfg = resolved.cfg
    before = OmegaConf.to_yaml(cfg)
    assert "${data.mean}" in before  # interpolations the build must not freeze
    run = build_run(cfg, resolved.source)
    build_trainer(cfg, [], [], fast_dev_run=1, enable_progress_bar=False)
    assert run.module is not None and OmegaConf.to_yaml(cfg) == before
