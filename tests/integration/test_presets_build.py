"""The presets test_architecture.py cannot reach with a benchmark writer: each folder dataset with
its own class count, class list or sub-folder (written small here in the layout its preset
expects), and every paper experiment on written data of its dataset's format. Each is composed,
resolved by vtcc's resolver, built by vtcc.build and trains one step on the CPU; an experiment's
settings (its model, augmentation, objective and the values it sets) must survive the resolve."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from tests import fake_data
from tests.conftest import compose_train
from tests.integration.test_architecture import RUN_TIME_AUTO, WRITTEN, walk, written_data
from tests.matrices import EXPERIMENT_BASES, EXPERIMENTS, options
from vtcc.build import build_run, build_trainer, prepare_run
from vtcc.config.stored import check_stored_config
from vtcc.objectives import ContrastiveClustering
from vtcc.utils.cli import CONFIG_DIR, user_error

CONF = Path(CONFIG_DIR)


# data=features reads vectors, not images: tests/e2e/test_feature_input.py writes and trains on it
FOLDER_PRESETS = sorted(set(options("data")) - set(WRITTEN) - {"features"})

# How each dataset is published, where it differs from <root>/<class>/<image>.png: the suffix of
# its files, the folder inside a class folder that holds them (Tiny-ImageNet's train/<wnid>/images/),
# and the odd image among them (ImageNet's train set holds CMYK JPEGs, Tiny-ImageNet's gray ones).
PUBLISHED = {
    "aid": {"suffix": "jpg"},
    "d0": {"suffix": "jpg"},
    "dtd": {"suffix": "jpg"},
    "imagenet10": {"suffix": "JPEG", "odd": "CMYK"},
    "imagenet_dogs": {"suffix": "JPEG", "odd": "CMYK"},
    "rsod": {"suffix": "jpg"},
    "siri_whu": {"suffix": "tif"},
    "tiny_imagenet": {"suffix": "JPEG", "nested": "images", "odd": "L"},
    "uc_merced": {"suffix": "tif"},
}
BATCH = 16  # images a training batch: every written preset holds at least this many
SHRINK = [  # small enough for a 2-core CPU
    f"data.batch_size={BATCH}",
    "data.eval_batch_size=64",
    "data.image_size=32",
    "callbacks=none",
]


def preset_node(name: str) -> dict[str, Any]:
    """A data preset as composed (its folder defaults merged), unresolved."""
    cfg = compose_train(Path("x"), [f"data={name}"], tiny=False, resolve=False)
    return OmegaConf.to_container(cfg.data, resolve=False)


def write_image(path: Path, pixels: np.ndarray, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").convert(mode).save(path)


def write_preset_folder(name: str, root: Path) -> dict[str, Any]:
    """The preset's dataset written small under ``root``: one folder per class (the preset's class
    list, else as many as its num_classes), at least two colour images each, plus what the
    published layout holds beside them that the preset must not read (ImageNet's other classes,
    Tiny-ImageNet's val/ and test/ and its box files). Returns what was written."""
    node = preset_node(name)
    dataset = node["dataset"]
    published = PUBLISHED.get(name, {})
    classes = dataset.get("classes") or [f"class_{i:02d}" for i in range(node["num_classes"])]
    per_class = max(2, math.ceil(BATCH / len(classes)))
    images = root / dataset["subdir"] if dataset.get("subdir") else root
    rng = np.random.default_rng(0)
    suffix = published.get("suffix", "png")
    for index, label in enumerate(classes):
        folder = images / label / published.get("nested", "")
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
            pixels[..., 0] = (index * 37) % 256  # a class-specific red channel
            odd = index == i == 0 and published.get("odd")
            write_image(folder / f"{label}_{i}.{suffix}", pixels, odd or "RGB")
    if dataset.get("classes"):  # an ImageNet train dir: every other wnid is left out
        for other in ("n01440764", "n01443537"):
            write_image(images / other / f"{other}_0.{suffix}", np.zeros((20, 24, 3), np.uint8))
    if name == "tiny_imagenet":  # tiny-imagenet-200/: only train/ is read
        for label in classes:
            (images / label / f"{label}_boxes.txt").write_text(f"{label}_0.JPEG\t0\t0\t20\t24\n")
        for split in ("val", "test"):
            write_image(root / split / "images" / f"{split}_0.JPEG", np.zeros((20, 24, 3), np.uint8))
        (root / "val" / "val_annotations.txt").write_text(f"val_0.JPEG\t{classes[0]}\t0\t0\t20\t24\n")
        (root / "wnids.txt").write_text("\n".join(classes) + "\n")
    return {"classes": classes, "per_class": per_class, "images": per_class * len(classes)}


def train_one_step(cfg, run, steps: int = 1) -> dict[str, torch.Tensor]:
    trainer = build_trainer(cfg, [], [], fast_dev_run=steps, enable_progress_bar=False, accelerator="cpu")
    trainer.fit(run.module, datamodule=run.datamodule)
    return trainer.callback_metrics


def no_auto_left(cfg) -> list[str]:
    plain = OmegaConf.to_container(cfg, resolve=True)
    return [key for key, value in walk(plain) if value == "auto" and key not in RUN_TIME_AUTO]


@pytest.mark.parametrize("preset", FOLDER_PRESETS)
def test_every_folder_preset_resolves_on_its_written_layout_and_trains_a_step(tmp_path, preset):
    """The preset's images, counted class by class, K its class count, then one training step."""
    node = preset_node(preset)
    written = write_preset_folder(preset, tmp_path / "data")
    settings = [f"data={preset}", f"data.root={tmp_path / 'data'}", *SHRINK]
    settings += ["model.embed_dim=32", "model.depth=1", "model.num_heads=2"]
    resolved = prepare_run(compose_train(tmp_path / "run", settings, tiny=False, resolve=False), [])
    cfg = resolved.cfg
    run = build_run(cfg, resolved.source)
    data = run.datamodule
    assert len(data) == written["images"]  # neither the other wnids nor val/ and test/
    assert data.num_classes == node["num_classes"] == len(written["classes"])
    assert cfg.num_clusters == run.network.num_clusters == node["num_classes"]
    counts = torch.bincount(data.labels_in_order(), minlength=node["num_classes"])
    assert counts.tolist() == [written["per_class"]] * node["num_classes"]
    assert cfg.data.name == preset
    assert (
        OmegaConf.to_container(cfg.data.dataset, resolve=False).get("classes") == node["dataset"]["classes"]
    )
    assert cfg.data.dataset.subdir == node["dataset"]["subdir"]
    assert cfg.data.in_chans == 3 and len(cfg.data.mean) == len(cfg.data.std) == 3  # from the images
    assert cfg.data.dataset.stored_size == data.stored_size == 32
    assert no_auto_left(cfg) == []
    assert torch.isfinite(train_one_step(cfg, run)["train/loss"])


def experiment_chain(name: str) -> list[dict[str, Any]]:
    """The experiment's yaml files, included ones first (the order Hydra merges them in)."""
    node = yaml.safe_load((CONF / "experiment" / f"{name}.yaml").read_text())
    chain = []
    for entry in node.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            chain += experiment_chain(entry)
    return [*chain, node]


def chosen_groups(name: str) -> dict[str, str]:
    """The config groups the experiment (or one it includes) selects: ``{"model": "vit_small", ...}``."""
    groups = {}
    for node in experiment_chain(name):
        for entry in node.get("defaults", []):
            if isinstance(entry, dict):
                for key, value in entry.items():
                    groups[key.removeprefix("override ").removeprefix("/")] = value
    return groups


def flat(node: Any, where: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for a yaml mapping; lists are values."""
    if not isinstance(node, dict):
        return {where: node}
    out = {}
    for key, value in node.items():
        out.update(flat(value, f"{where}.{key}" if where else str(key)))
    return out


def group_settings(group: str, option: str) -> dict[str, Any]:
    """A group option's own values (its yaml, flattened), under the package it is placed at (its
    ``# @package`` header, else the group: objective options are ``# @package module``)."""
    text = (CONF / group / f"{option}.yaml").read_text()
    node = yaml.safe_load(text) or {}
    node.pop("defaults", None)
    header = re.match(r"# @package (\S+)", text)
    package = header.group(1) if header else group
    return flat(node) if package == "_global_" else flat(node, package)


def expected_settings(name: str, overridden: list[str]) -> dict[str, Any]:
    """What the run must hold after resolve: the experiment's model, augmentation and objective
    groups, then every value the experiment (and its base) sets, later files winning; less what
    the test itself overrides."""
    groups = {"objective": "contrastive", **chosen_groups(name)}
    expected: dict[str, Any] = {}
    for group in ("model", "augment", "objective"):
        expected.update(group_settings(group, groups[group]))
    for node in experiment_chain(name):
        expected.update(flat({key: value for key, value in node.items() if key != "defaults"}))
    keys = [item.split("=", 1)[0] for item in overridden]
    return {
        key: value
        for key, value in expected.items()
        if not any(key == k or key.startswith(f"{k}.") for k in keys)
    }


def lost_settings(cfg, expected: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (expected, found)}`` where the resolved run differs from what was set. An
    interpolation counts by the value it has in the run (resolving may write it as that value);
    one that is null (num_clusters of data=folder) is resolve's to decide from the data."""
    context = copy.deepcopy(cfg)
    OmegaConf.set_readonly(context, False)  # a scratch copy of the run's (read-only) config
    for key, value in expected.items():
        if isinstance(value, str) and "${" in value:
            OmegaConf.update(context, key, value, force_add=True)

    def value_at(config, key: str) -> Any:
        value = OmegaConf.select(config, key, default="<missing>")
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    lost = {}
    for key, value in expected.items():
        wanted = value_at(context, key) if isinstance(value, str) and "${" in value else value
        found = value_at(cfg, key)
        filled = wanted is None and isinstance(value, str)  # K: null in the config, from the data
        if found != wanted and not filled:
            lost[key] = (value, found)
    return lost


def experiment_data(name: str, root: Path) -> tuple[str, list[str]]:
    """The experiment's dataset, written small: ``(data option, its overrides)``; a base names no
    dataset and runs on your own folder (data=folder)."""
    data = chosen_groups(name).get("data")
    if data is None:
        fake_data.write_image_folder(root, ["a", "b", "c"], per_class=6)
        return "folder", ["data=folder", f"data.root={root}"]
    if data == "stl10":  # enough unlabelled images for one instance-only batch (cc_stl10's first)
        fake_data.write_stl10(root, per_split=20, unlabeled=BATCH)
        return data, [f"data.root={root}"]
    if data in WRITTEN:
        return data, written_data(data, root)
    write_preset_folder(data, root)
    return data, [f"data.root={root}"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_resolves_on_written_data_keeps_its_settings_and_trains_a_step(tmp_path, experiment):
    """Only the batch, the image size and (ViT) the depth are made small: the model, augmentation
    and objective groups are the experiment's, and each value it sets is still there after resolve."""
    root = tmp_path / "data"
    root.mkdir()
    data, data_settings = experiment_data(experiment, root)
    groups = chosen_groups(experiment)
    shrink = [*SHRINK, *(["model.depth=1"] if groups["model"] == "vit_small" else [])]
    settings = [f"experiment={experiment}", *data_settings, *shrink]
    resolved = prepare_run(compose_train(tmp_path / "run", settings, tiny=False, resolve=False), [])
    cfg = resolved.cfg
    lost = lost_settings(cfg, expected_settings(experiment, shrink))
    assert lost == {}, f"experiment={experiment}'s settings lost in resolve, {{key: (set, found)}}"
    assert no_auto_left(cfg) == []
    check_stored_config(OmegaConf.to_container(cfg, resolve=True), "x.ckpt")  # what a checkpoint keeps
    run = build_run(cfg, resolved.source)
    num_classes = preset_node(data)["num_classes"] or 3  # data=folder: its 3 class folders
    assert cfg.num_clusters == run.network.num_clusters == run.datamodule.num_classes == num_classes
    assert cfg.data.dataset._target_ == preset_node(data)["dataset"]["_target_"]  # the experiment's data
    if data in FOLDER_PRESETS:
        assert cfg.data.name == data
    assert isinstance(run.module, ContrastiveClustering)
    backbone = run.network.backbone
    augment = run.datamodule.train_transform
    if groups["model"] == "vit_small":  # VTCC: the conv-stem ViT-small, patch 16, width 384, 12 heads
        assert backbone.patch_embed.patch_size == (16, 16)
        assert backbone.embed_dim == 384 and backbone.blocks[0].attn.num_heads == 12
        assert len(backbone.blocks) == 1  # the one setting made small
        assert augment.view_b is not augment.view_a  # the asymmetric pair
        assert list(cfg.data.mean) == [0.485, 0.456, 0.406]  # ImageNet's, for every dataset
    else:  # Contrastive Clustering: timm's ResNet-34, no normalisation, one recipe for both views
        assert type(backbone).__name__ == "ResNet" and backbone.num_features == 512
        assert augment.view_b is augment.view_a
        assert list(cfg.data.mean) == [0.0, 0.0, 0.0] and list(cfg.data.std) == [1.0, 1.0, 1.0]
    steps = 2 if cfg.data.get("unlabeled_training") == "instance_phase" else 1  # both kinds of batch
    if steps == 2:
        assert [len(pool) for pool in run.datamodule.pools] == [BATCH, 40]
    metrics = train_one_step(cfg, run, steps)
    assert torch.isfinite(metrics["train/loss"])


def test_every_experiment_preset_composes_with_the_papers_values():
    presets = EXPERIMENTS
    assert len(presets) == 21  # two method bases + 13 VTCC and 6 CC dataset presets
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        for name in presets:
            root = [] if name.endswith("_base") else ["data.root=somewhere"]  # bases keep data=digits
            cfg = compose("train", overrides=[f"experiment={name}", *root, "paths.output_dir=x"])
            assert cfg.trainer.max_epochs == 1000 and cfg.seed == 42
            assert cfg.module.optimizer.lr == 3e-4 and cfg.module.optimizer.weight_decay == 0
            assert cfg.module.instance_loss.temperature == 0.5 and cfg.module.cluster_loss.temperature == 1.0
            assert cfg.data.image_size == 224
            if name.startswith("vtcc_"):
                assert cfg.data.batch_size == 128 and cfg.augment.view_b.solarize_p == 0.2
                assert cfg.augment.view_a.blur_p == cfg.augment.view_b.blur_p == 1.0
                assert (cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads, cfg.model.patch_size) == (
                    384,
                    8,
                    12,
                    16,
                )
            else:
                assert cfg.data.batch_size == 256 and cfg.model.name == "resnet34"
        network = instantiate(cfg.model)  # the last preset, a ResNet-34 one
        assert network.num_clusters == cfg.data.num_classes


@pytest.mark.parametrize("base", EXPERIMENT_BASES)
def test_a_base_experiment_on_its_own_stops_with_one_line(tmp_path, base):
    """A base names no dataset: on the default gray digits its colour settings are refused in one
    line (with data=folder it runs, above)."""
    cfg = compose_train(tmp_path / "run", [f"experiment={base}", *SHRINK], tiny=False, resolve=False)
    with pytest.raises(Exception) as raised:  # noqa: B017 - the CLI prints its cause
        prepare_run(cfg, [])
    assert "digits has 1 channel(s) but data.in_chans=3" in str(user_error(raised.value))


def test_a_preset_whose_class_count_the_folder_contradicts_keeps_it_and_says_so(tmp_path, caplog):
    """data=aid (30 classes) on a folder of 3: K stays the preset's, and one warning names both
    counts and the setting that takes the folder's."""
    fake_data.write_image_folder(tmp_path / "aid", ["a", "b", "c"], per_class=12)
    cfg = compose_train(
        tmp_path, ["data=aid", f"data.root={tmp_path / 'aid'}", *SHRINK], tiny=False, resolve=False
    )
    with caplog.at_level("WARNING", logger="vtcc"):
        cfg = prepare_run(cfg, []).cfg
    assert cfg.num_clusters == 30
    assert "labels show 3 classes but data.num_classes=30" in caplog.text and "num_clusters=3" in caplog.text
