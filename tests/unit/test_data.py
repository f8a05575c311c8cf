import re
from dataclasses import FrozenInstanceError, replace
from types import SimpleNamespace

import kornia.augmentation as K
import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from torch import nn

from vtcc.data import (
    EvalTransform,
    ImageSettings,
    InMemoryDataModule,
    TwinViewAugmentation,
    load_digits,
    rgb_view,
    small_image_view,
)
from vtcc.errors import ConfigError


def test_digits_are_real_uint8_images_with_ten_classes():
    arrays = load_digits()
    assert arrays.images.shape == (1797, 1, 8, 8) and arrays.images.dtype == torch.uint8
    assert arrays.images.max() == 255 and arrays.images.min() == 0
    assert arrays.num_classes == 10 and arrays.labels.bincount().min() >= 170


def make_datamodule(batch_size: int = 64, **options) -> InMemoryDataModule:
    view = small_image_view(image_size=16, mean=[0.3], std=[0.4])
    return InMemoryDataModule(
        dataset=load_digits,
        train_transform=TwinViewAugmentation(view),
        image_size=16,
        mean=[0.3],
        std=[0.4],
        in_chans=1,
        num_classes=10,
        batch_size=batch_size,
        **options,
    )


def test_train_batches_cover_the_data_without_the_remainder():
    datamodule = make_datamodule(batch_size=256)
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    assert len(batches) == 1797 // 256
    images, labels, indices = batches[0]
    assert images.shape == (256, 1, 8, 8) and images.dtype == torch.uint8
    assert torch.equal(labels, load_digits().labels[indices])
    seen = torch.cat([batch_indices for _, _, batch_indices in batches])
    assert len(seen) == 7 * 256 and len(seen.unique()) == 7 * 256  # no image twice in an epoch


def test_eval_batches_keep_order_and_every_image():
    datamodule = make_datamodule()
    datamodule.setup("validate")
    batches = list(datamodule.val_dataloader())
    assert torch.equal(torch.cat([y for _, y, _ in batches]), load_digits().labels)
    assert torch.equal(torch.cat([i for _, _, i in batches]), torch.arange(1797))


def test_twin_views_differ_but_share_shape_and_normalisation():
    torch.manual_seed(0)
    augment = TwinViewAugmentation(small_image_view(image_size=16, mean=[0.3], std=[0.4]))
    images = load_digits().images[:128]
    view_a, view_b = augment(images)
    assert view_a.shape == view_b.shape == (128, 1, 16, 16)
    assert view_a.dtype == torch.float32
    assert (view_a - view_b).abs().mean() > 0.1
    eval_view = EvalTransform(16, [0.3], [0.4])(images)
    assert view_a.mean().item() == pytest.approx(eval_view.mean().item(), abs=0.25)


def test_eval_transform_is_deterministic_and_normalised():
    images = load_digits().images[:64]
    transform = EvalTransform(16, [0.3], [0.4])
    first, second = transform(images), transform(images)
    assert torch.equal(first, second)
    assert first.min().item() == pytest.approx(-0.75, abs=1e-4)  # black pixels: (0 - 0.3) / 0.4


def test_batch_size_errors_are_clear():
    with pytest.raises(ConfigError, match="at least 2"):
        make_datamodule(batch_size=1)
    datamodule = make_datamodule(batch_size=4096)
    with pytest.raises(ConfigError, match="fewer than data.batch_size"):
        datamodule.setup("fit")


def test_the_shared_settings_are_one_record_from_flat_keys_or_given_whole():
    """The flat keys a config sets (data.batch_size=...) become one ImageSettings; the datamodule
    reads them from it. A ready ImageSettings serves as well, with keywords replacing its fields."""
    flat = make_datamodule(batch_size=64, num_workers=2, augment_on="workers")
    settings = flat.settings
    assert isinstance(settings, ImageSettings)
    assert (settings.batch_size, settings.num_workers, settings.eval_batch_size) == (64, 2, 512)
    assert settings.mean == (0.3,) and settings.std == (0.4,)  # plain tuples, whatever list came in
    read = (flat.batch_size, flat.num_workers, flat.image_size, flat.in_chans, flat.channels)
    assert read == (64, 2, 16, 1, 1)
    assert flat.train_transform is settings.train_transform and flat.augment_on == "workers"
    given = InMemoryDataModule(dataset=load_digits, settings=settings, batch_size=128)
    assert given.settings == replace(settings, batch_size=128) and given.batch_size == 128
    assert flat.settings.batch_size == 64  # the record given is not changed (frozen)
    with pytest.raises(FrozenInstanceError):
        settings.batch_size = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"batchsize": 64}, "data.batchsize is not a setting of InMemoryDataModule"),
        ({"image_size": None}, "needs data.image_size"),
        ({"std": [0.4, 0.4]}, "data.mean has 1 value"),
        ({"mean": "auto"}, "data.mean='auto' must be a list of numbers"),
    ],
)
def test_a_wrong_shared_setting_is_one_line_naming_its_key(change, words):
    keys = {
        "train_transform": TwinViewAugmentation(small_image_view(image_size=16, mean=[0.3], std=[0.4])),
        "image_size": 16,
        "mean": [0.3],
        "std": [0.4],
        "in_chans": 1,
    }
    keys.update(change)
    keys = {key: value for key, value in keys.items() if value is not None}
    with pytest.raises(ConfigError, match=re.escape(words)):
        InMemoryDataModule(dataset=load_digits, **keys)


def crop_area_fractions(augment: TwinViewAugmentation, images: torch.Tensor, batched: bool) -> np.ndarray:
    """The area fraction of the crop each image got from the first view's RandomResizedCrop."""
    crop = augment.view_a[0]
    areas = []
    for chunk in images.split(len(images) if batched else 1):
        augment(chunk)
        boxes = crop._params["src"]  # (B, 4, 2) corners in the input
        width = boxes[:, 1, 0] - boxes[:, 0, 0] + 1
        height = boxes[:, 2, 1] - boxes[:, 1, 1] + 1
        areas.append((width * height / (chunk.shape[-1] * chunk.shape[-2])).numpy())
    return np.concatenate(areas)


def test_batched_and_per_image_augmentation_draw_the_same_parameter_distribution():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (1500, 3, 64, 64), dtype=torch.uint8)
    augment = TwinViewAugmentation(rgb_view(32, [0.5] * 3, [0.5] * 3, crop_scale=(0.08, 1.0)))
    batched = crop_area_fractions(augment, images, batched=True)
    per_image = crop_area_fractions(augment, images[:500], batched=False)  # one call an image: the cost
    assert len(np.unique(batched)) > 100  # every image of a batch draws its own crop (areas are whole pixels)
    assert ks_2samp(batched, per_image).pvalue > 0.01
    assert 0.08 - 0.02 <= batched.min() and batched.max() <= 1.0 + 1e-6
    narrower = TwinViewAugmentation(rgb_view(32, [0.5] * 3, [0.5] * 3, crop_scale=(0.2, 1.0)))
    # a near miss the test still tells apart: no crop under 20 % of the image (KS distance ~0.13)
    assert ks_2samp(crop_area_fractions(narrower, images, batched=True), per_image).pvalue < 0.01
    shared = TwinViewAugmentation(nn.Sequential(K.RandomResizedCrop((32, 32), same_on_batch=True)))
    assert ks_2samp(crop_area_fractions(shared, images[:300], batched=True), per_image).pvalue < 0.01


def test_workers_path_yields_augmented_pairs():
    datamodule = make_datamodule(batch_size=64, num_workers=2, augment_on="workers")
    datamodule.setup("fit")
    view_a, view_b, labels, indices = next(iter(datamodule.train_dataloader()))
    assert view_a.shape == view_b.shape == (64, 1, 16, 16) and view_a.dtype == torch.float32
    assert not torch.equal(view_a, view_b) and torch.equal(labels, load_digits().labels[indices])
    datamodule.trainer = SimpleNamespace(training=True)  # the hook runs inside fit
    pair = datamodule.on_after_batch_transfer((view_a, view_b, labels, indices), 0)
    assert pair.first is view_a and pair.second is view_b and pair.cluster
