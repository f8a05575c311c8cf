"""Settings from the data for your own images: the rules (gray vs colour, small vs large, CPU vs
GPU), their values on folders written here, and that anything set explicitly wins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from tests.conftest import compose_train
from vtcc.config.data_defaults import augment_for, image_size_for, model_for, patch_size_for
from vtcc.errors import ConfigError

CPU = "trainer.accelerator=cpu"  # the size rules depend on the device


def write_folder(root: Path, images: list[np.ndarray], classes: int = 2) -> Path:
    for index, pixels in enumerate(images):
        folder = root / f"class_{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{index:04d}.png")
    return root


def gray_digits(count: int = 120) -> list[np.ndarray]:
    return [(image * 16).clip(0, 255).astype(np.uint8) for image in load_digits().images[:count]]


def colour_photos(count: int = 40, size: tuple[int, int] = (150, 200)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize(
    ("side", "device", "size", "patch"),
    [
        (8, "cpu", 16, 4),  # digits: upscaled to the 16 px of the built-in job, 16 tokens
        (28, "cpu", 28, 8),  # MNIST-like: native, 9 tokens (the run moves it to 32 px: 16)
        (32, "cpu", 32, 8),  # CIFAR-like: native, 16 tokens
        (200, "cpu", 64, 16),  # photos on a CPU: 64 px, 16 tokens
        (500, "cuda", 224, 16),  # photos on a GPU: VTCC's 224 px at patch 16, 196 tokens
        (96, "cuda", 96, 8),  # STL-like on a GPU: native, 144 tokens
    ],
)
def test_size_and_patch_rules(side, device, size, patch):
    assert image_size_for(side, device) == size
    assert patch_size_for(size, device) == patch
    assert (size // patch) ** 2 <= {"cpu": 16, "cuda": 196}[device]


def test_augmentation_rule():
    assert augment_for(1, 16) == "small" and augment_for(1, 64) == "small"
    assert augment_for(3, 32) == "cc" and augment_for(1, 224) == "cc"
    # normalised as gray (not a pretrained RGB model's statistics): cc's colour ops cannot apply
    assert augment_for(1, 224, model_channels=1) == "small" and augment_for(1, 224, model_channels=3) == "cc"


@pytest.mark.parametrize(
    ("size", "device", "patch"),
    [(28, "cpu", 4), (28, "cuda", 4), (32, "cpu", 8), (8, "cpu", 4), (96, "cpu", 32), (224, "cuda", 16)],
)
def test_a_fixed_image_size_gets_a_patch_that_divides_it(size, device, patch):
    """A dataset's own size (MNIST's 28 px) cannot move to the patch grid: the patch divides it,
    within the token cap when one does (32 px: 8, 16 tokens), else the largest that divides."""
    assert patch_size_for(size, device, fixed=True) == patch and size % patch == 0


def test_gray_digit_pngs_get_the_built_in_digits_settings(tmp_path):
    images = gray_digits()
    root = write_folder(tmp_path / "digits", images)
    cfg = compose_train(
        tmp_path / "run", ["data=folder", f"data.root={root}", "trainer.accelerator=cpu"], tiny=False
    )
    assert cfg.data.in_chans == 1 and cfg.data.image_size == 16 and cfg.model.patch_size == 4
    assert cfg.augment.view_a._target_ == "vtcc.data.small_image_view"
    pixels = np.stack(images).astype(np.float64) / 255  # all 120 images were sampled
    assert cfg.data.mean == pytest.approx([pixels.mean()], abs=1e-3)
    assert cfg.data.std == pytest.approx([pixels.std()], abs=1e-3)
    assert cfg.data_defaults.augment == "small" and cfg.data_defaults.sampled_images == "120 of 120"


def test_colour_photos_get_a_colour_recipe_at_the_cpu_size(tmp_path):
    root = write_folder(tmp_path / "photos", colour_photos())
    cfg = compose_train(
        tmp_path / "run", ["data=folder", f"data.root={root}", "trainer.accelerator=cpu"], tiny=False
    )
    assert cfg.data.in_chans == 3 and cfg.data.image_size == 64 and cfg.model.patch_size == 16
    assert cfg.augment.view_a._target_ == "vtcc.data.rgb_view"
    assert cfg.data.mean == pytest.approx([127.5 / 255] * 3, abs=0.01)  # uniform noise
    assert len(cfg.data.std) == 3


def test_a_gray_npz_is_probed_like_a_folder(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.stack(gray_digits(50)))
    cfg = compose_train(
        tmp_path / "run", ["data=npz", f"data.root={tmp_path / 'x.npz'}", "num_clusters=3"], tiny=False
    )
    assert cfg.data.in_chans == 1 and cfg.data.image_size == 16 and len(cfg.data.mean) == 1


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("data.in_chans=3", "data.in_chans", 3),
        ("data.image_size=24", "data.image_size", 24),
        ("data.mean=[0.5]", "data.mean", [0.5]),
        ("model.patch_size=2", "model.patch_size", 2),
        ("augment=cc", "augment.view_a._target_", "vtcc.data.rgb_view"),
    ],
)
def test_an_explicit_setting_wins(tmp_path, override, key, value):
    root = write_folder(tmp_path / "digits", gray_digits(40))
    cfg = compose_train(tmp_path / "run", ["data=folder", f"data.root={root}", override], tiny=False)
    node = cfg
    for part in key.split("."):
        node = node[part]
    assert (list(node) if isinstance(value, list) else node) == value


def test_a_run_records_what_it_chose(train_in_process, tmp_path, untouched_inputs):
    root = write_folder(tmp_path / "digits", gray_digits(200), classes=4)
    untouched_inputs(root)
    code, stderr = train_in_process("data=folder", f"data.root={root}", "trainer.max_epochs=1")
    assert code == 0, stderr[-2000:]
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["data"]["in_chans"] == 1 and config["data"]["image_size"] == 8  # the tiny run's, kept
    assert config["data_defaults"]["augment"] == "small" and config["model"]["patch_size"] == 4


def test_augment_overrides_keep_the_small_recipe_and_are_refused_where_auto_picks_colour(tmp_path):
    """augment=auto starts as the small recipe, so `augment.view_a.rotation=5` composes; on gray
    digits it stays small with the override; on colour photos the choice is ambiguous: refused."""
    gray = write_folder(tmp_path / "digits", gray_digits(40))
    cfg = compose_train(
        tmp_path / "run", ["data=folder", f"data.root={gray}", "augment.view_a.rotation=5"], tiny=False
    )
    assert cfg.augment.view_a.rotation == 5 and "family" not in cfg.augment
    colour = write_folder(tmp_path / "photos", colour_photos(8))
    with pytest.raises(ConfigError, match="augment=auto would pick cc"):
        compose_train(
            tmp_path / "run",
            ["data=folder", f"data.root={colour}", "augment.view_a.rotation=5", CPU],
            tiny=False,
        )


def test_model_rule():
    assert model_for(16, "cpu") == model_for(224, "cpu") == model_for(64, "cuda") == "vit_tiny"
    assert model_for(96, "cuda") == model_for(224, "cuda") == "vit_small"


def test_photos_on_a_gpu_get_vtccs_vit_small_at_224_px(tmp_path, monkeypatch):
    """The GPU branch of the rules, on a CPU machine: the device is what the rules are told."""
    monkeypatch.setattr("vtcc.config.data_defaults.device_kind", lambda cfg: "cuda")
    root = write_folder(tmp_path / "photos", colour_photos(8, size=(300, 400)))
    cfg = compose_train(tmp_path / "run", ["data=folder", f"data.root={root}"], tiny=False)
    assert cfg.data.image_size == 224 and cfg.model.embed_dim == 384 and cfg.model.depth == 8
    assert cfg.model.patch_size == 16 and cfg.data_defaults.model == "vit_small"
    with pytest.raises(ConfigError, match="model=auto would pick vit_small"):
        compose_train(tmp_path / "run", ["data=folder", f"data.root={root}", "model.depth=2"], tiny=False)


def _write_gray(root: Path, images: np.ndarray) -> Path:
    for index, pixels in enumerate(images):
        folder = root / f"kind{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return root


def _wedges(count: int, mirrored_half: bool, seed: int = 0) -> np.ndarray:
    """Gray 20 px images of a bright wedge near one side: all on the left (no image is another's
    mirror image), or half of them mirrored (the set holds its mirror images)."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        pixels = rng.integers(0, 30, (20, 20)).astype(np.uint8)
        row, width = int(rng.integers(3, 14)), int(rng.integers(3, 7))
        for r in range(row, row + 6):
            pixels[r, 1 : 1 + width + (r - row)] = 230
        images.append(pixels[:, ::-1] if mirrored_half and index % 2 else pixels)
    return np.stack(images)


def test_the_mirror_ratio_is_about_one_for_data_that_holds_its_mirror_images_and_above_otherwise():
    from vtcc.data.probe import mirror_ratio

    assert mirror_ratio(list(_wedges(200, mirrored_half=True))) < 1.1
    assert mirror_ratio(list(_wedges(200, mirrored_half=False))) > 1.5
    assert mirror_ratio(list(_wedges(10, mirrored_half=True))) is None  # too few to tell


def _polarities(count: int, inverted_half: bool) -> np.ndarray:
    """The wedges, none mirrored, with every other image's gray levels inverted (light ground, dark
    wedge) or all of one polarity."""
    images = _wedges(count, mirrored_half=False)
    if inverted_half:
        images[1::2] = 255 - images[1::2]
    return images


def test_the_invert_ratio_is_about_one_for_data_of_both_polarities_and_above_otherwise():
    """Where every other image is inverted, the data looks the same inverted (its distribution is
    symmetric under inversion), so the inverted images sit as close to the others as the images do:
    ratio about 1. Where all images are bright wedges on a dark ground, an inverted one is far from
    every image; so are inverted digits."""
    from sklearn.datasets import load_digits

    from vtcc.data.probe import invert_ratio

    assert invert_ratio(list(_polarities(200, inverted_half=True))) < 1.1
    assert invert_ratio(list(_polarities(200, inverted_half=False))) > 1.5
    digits = (load_digits().images[:300] * 16).clip(0, 255).astype(np.uint8)
    assert invert_ratio(list(digits)) > 1.5
    assert invert_ratio(list(_polarities(10, inverted_half=True))) is None  # too few to tell


LOOK_ALIKE_DATA = {  # images -> (hflip_p, invert_p) that augment=auto must choose
    "mirrored wedges": (lambda: _wedges(200, mirrored_half=True), 0.5, 0.0),
    "wedges facing one way": (lambda: _wedges(200, mirrored_half=False), 0.0, 0.0),
    "wedges of both polarities": (lambda: _polarities(200, inverted_half=True), 0.0, 0.5),
}


@pytest.mark.parametrize("data", sorted(LOOK_ALIKE_DATA))
def test_augment_auto_flips_or_inverts_small_gray_images_only_when_the_changed_images_look_like_them(
    tmp_path, data
):
    """Each op of the small recipe is on exactly when its changed images look like the data, and its
    kornia layer exists only then; the named recipe keeps its documented defaults (neither)."""
    from hydra.utils import instantiate

    images, flip, invert = LOOK_ALIKE_DATA[data]
    root = _write_gray(tmp_path / "images", images())
    cfg = compose_train(tmp_path, ["data=folder", f"data.root={root}"], tiny=False)
    assert cfg.augment.view_a._target_ == "vtcc.data.small_image_view"
    assert (cfg.augment.view_a.hflip_p, cfg.augment.view_a.invert_p) == (flip, invert)
    assert (cfg.data_defaults.hflip_p, cfg.data_defaults.invert_p) == (flip, invert)
    layers = [type(layer).__name__ for layer in instantiate(cfg.augment).view_a]
    assert ("RandomHorizontalFlip" in layers, "RandomInvert" in layers) == (flip > 0, invert > 0)
    explicit = compose_train(tmp_path, ["data=folder", f"data.root={root}", "augment=small"], tiny=False)
    assert (explicit.augment.view_a.hflip_p, explicit.augment.view_a.invert_p) == (0.0, 0.0)


def test_the_look_alike_ratios_of_one_pass_are_each_ops_own():
    """The probe computes both ratios in one pass over the sample; each equals its op's own test."""
    from vtcc.data.probe import invert_ratio, look_alike_ratios, mirror_ratio

    for images in (_wedges(200, mirrored_half=True), _polarities(200, inverted_half=True)):
        arrays = list(images)
        both = look_alike_ratios(arrays)
        assert both == {"mirror_ratio": mirror_ratio(arrays), "invert_ratio": invert_ratio(arrays)}
    assert look_alike_ratios(list(_wedges(10, mirrored_half=True))) == {
        "mirror_ratio": None,
        "invert_ratio": None,
    }


def test_an_inverted_view_is_one_minus_the_image_before_normalisation():
    """Every other op made the identity (whole-image crop, no affine, brightness, contrast or
    noise; mean 0, std 1): the view of ``x`` with ``invert_p=1`` is exactly ``1 - x``."""
    import torch

    from vtcc.data import small_image_view

    plain = dict(  # every op off but the inversion, always on
        image_size=8,
        mean=[0.0],
        std=[1.0],
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        brightness=0.0,
        contrast=0.0,
        noise_p=0.0,
        invert_p=1.0,
    )
    view = small_image_view(**plain, affine_p=0.0)
    images = torch.rand(4, 1, 8, 8)
    assert torch.allclose(view(images), 1 - images, atol=1e-6)
    # inverted before the affine step: what a shift leaves uncovered stays 0 (black), not 1
    shifted = small_image_view(**plain, rotation=0.0, translate=0.5, shear=0.0, affine_p=1.0)
    torch.manual_seed(0)
    out = shifted(torch.ones(64, 1, 8, 8))  # inverted: all 0, so only what the shift uncovers could differ
    assert out.abs().max() < 1e-6


def test_the_built_in_digits_keep_their_recipe_with_no_flip_module():
    """No flip module at all (not one of probability 0): its random draws would shift every other
    augmentation's, and make train's figures with them."""
    from hydra.utils import instantiate

    cfg = compose_train(Path("x"), [], tiny=False)
    assert cfg.augment.view_a.hflip_p == 0.0
    view = instantiate(cfg.augment).view_a
    assert not any("Flip" in type(layer).__name__ or "Invert" in type(layer).__name__ for layer in view)


@pytest.mark.parametrize("key", ["hflip_p", "invert_p"])
def test_resuming_a_run_under_another_flip_or_inversion_is_one_line(tmp_path, key):
    """A flip or an inversion layer shifts every later random draw: a run trained without one is
    not resumed with it (an earlier augment=auto run on data the tests now flip or invert)."""
    from vtcc.build import prepare_run
    from vtcc.errors import ConfigError
    from vtcc.train import train

    images = _wedges(200, mirrored_half=True) if key == "hflip_p" else _polarities(200, inverted_half=True)
    root = _write_gray(tmp_path / "images", images)
    settings = ["data=folder", f"data.root={root}", "data.batch_size=64", "trainer.max_epochs=1"]
    train(compose_train(tmp_path / "run", [*settings, "augment=small"], resolve=False))
    again = compose_train(
        tmp_path / "again", [*settings, f"ckpt_path={tmp_path / 'run/checkpoints/last.ckpt'}"], resolve=False
    )
    with pytest.raises(ConfigError, match=rf"augment.view_a.{key}: 0.0 -> 0.5"):
        prepare_run(again, [])


def test_a_run_trained_before_the_inversion_rule_resumes_without_it(tmp_path, caplog):
    """A checkpoint whose stored recipe has no ``invert_p`` was trained without inversion (the
    rule did not exist): resumed with the same command on data the rule now inverts, it keeps its
    recipe and says so, instead of being refused as trained with other settings. A stored value
    is still compared (the test above)."""
    from vtcc.build import prepare_run
    from vtcc.train import train

    root = _write_gray(tmp_path / "images", _polarities(200, inverted_half=True))
    settings = ["data=folder", f"data.root={root}", "data.batch_size=64", "trainer.max_epochs=1"]
    train(compose_train(tmp_path / "run", [*settings, "~augment.view_a.invert_p"], resolve=False))
    stored = (tmp_path / "run" / "config.yaml").read_text()
    assert "invert_p" not in stored  # as a run of the vtcc before the rule stored it
    new = prepare_run(compose_train(tmp_path / "new", settings, resolve=False), [])
    assert new.cfg.augment.view_a.invert_p == 0.5  # a new run on these images inverts
    again = compose_train(
        tmp_path / "again", [*settings, f"ckpt_path={tmp_path / 'run/checkpoints/last.ckpt'}"], resolve=False
    )
    with caplog.at_level("INFO", logger="vtcc"):
        resumed = prepare_run(again, [])
    assert resumed.cfg.augment.view_a.invert_p == 0.0 and resumed.cfg.data_defaults.invert_p == 0.0
    assert "augment.view_a.invert_p=0.0: the run resumed was trained before" in caplog.text


def test_a_shard_index_written_before_the_inversion_test_reads_and_says_it_cannot_tell():
    """An index's stored sample from before ``invert_ratio`` existed lacks the key: it reads as
    no verdict, the recipe keeps no inversion, and the log line says why instead of nothing."""
    from omegaconf import OmegaConf

    from vtcc.config.data_defaults import _resolve_look_alike
    from vtcc.data.probe import ImageProbe

    record = {"images": 900, "sampled": 256, "gray": True, "median_side": 28, "mean": [0.5], "std": [0.2]}
    probe = ImageProbe.from_record({**record, "mirror_ratio": 1.5}, "shards.json")
    assert probe.invert_ratio is None
    view = OmegaConf.create({"hflip_p": "auto", "invert_p": "auto"})
    assert _resolve_look_alike(view, probe) == [
        "hflip_p=0.0 (mirror images do not look like the others: ratio 1.5)",
        "invert_p=0.0 (the sample cannot tell whether inverted images look like the others)",
    ]
    assert view.hflip_p == 0.0 and view.invert_p == 0.0
