"""Each loader on a small copy written in the real on-disk format, then errors for bad folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests import fake_data
from vtcc.data import (
    DatasetNotFoundError,
    load_cifar10,
    load_cifar100_20,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    load_npz,
    load_stl10,
)
from vtcc.errors import ConfigError


def test_cifar10_reads_all_six_pickles_in_order(tmp_path):
    expected = fake_data.write_cifar10(tmp_path)
    arrays = load_cifar10(tmp_path)
    assert arrays.images.shape == (48, 3, 32, 32)
    assert np.array_equal(arrays.images.numpy(), expected)
    assert arrays.num_classes == 8 and arrays.labels[:8].tolist() == list(range(8))


def test_cifar100_is_scored_by_its_20_superclasses(tmp_path):
    fake_data.write_cifar100(tmp_path)
    arrays = load_cifar100_20(tmp_path)
    assert arrays.images.shape == (60, 3, 32, 32)
    assert arrays.labels.max() == 19 and arrays.num_classes == 20


def test_stl10_binaries_are_transposed_to_image_layout(tmp_path):
    expected = fake_data.write_stl10(tmp_path)
    arrays = load_stl10(tmp_path)
    assert np.array_equal(arrays.images.numpy(), expected)
    assert arrays.labels.tolist()[:3] == [0, 1, 2]
    with_unlabeled = load_stl10(tmp_path, include_unlabeled=True)
    assert len(with_unlabeled) == 29 and (with_unlabeled.labels == -1).sum() == 5
    assert with_unlabeled.num_classes == 10


@pytest.mark.parametrize(("loader", "folder"), [(load_mnist, "MNIST"), (load_fashion_mnist, "FashionMNIST")])
def test_idx_files(tmp_path, loader, folder):
    fake_data.write_idx(tmp_path, folder)
    arrays = loader(tmp_path)
    assert arrays.images.shape == (30, 1, 28, 28) and arrays.images.dtype == torch.uint8
    assert arrays.labels.tolist()[:11] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


@pytest.mark.parametrize(
    ("loader", "name", "hint"),
    [
        (load_cifar10, "CIFAR-10", "cifar-10-batches-py"),
        (load_cifar100_20, "CIFAR-100", "cifar-100-python"),
        (load_stl10, "STL-10", "stl10_binary"),
        (load_mnist, "MNIST", "MNIST/raw"),
    ],
)
def test_missing_benchmark_names_dataset_directory_layout_and_download(tmp_path, loader, name, hint):
    with pytest.raises(DatasetNotFoundError) as error:
        loader(tmp_path / "nowhere")
    message = str(error.value)
    assert name in message and str(tmp_path / "nowhere") in message and hint in message
    assert "data.download=true" in message


def test_image_folder_labels_modes_and_sizes(tmp_path):
    fake_data.write_image_folder(tmp_path, ["cats", "dogs", "owls"])
    arrays = load_image_folder(tmp_path, image_size=16, in_chans=3)
    assert arrays.images.shape == (18, 3, 24, 24)  # held at the images' own 20 x 24 size, whole
    assert arrays.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    gray = load_image_folder(tmp_path, image_size=8, in_chans=1, stored_size=8)
    assert gray.images.shape == (18, 1, 8, 8)
    capped = load_image_folder(tmp_path, image_size=8, max_stored_size=12)
    assert capped.images.shape == (18, 3, 12, 12)


def test_rgba_is_composited_on_white(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    transparent = np.zeros((10, 10, 4), dtype=np.uint8)
    Image.fromarray(transparent, "RGBA").save(tmp_path / "a" / "clear.png")
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(tmp_path / "b" / "black.png")
    arrays = load_image_folder(tmp_path, image_size=8)
    assert arrays.images[0].min() == 255 and arrays.images[1].max() == 0


def test_class_subset_and_nested_images(tmp_path):
    fake_data.write_image_folder(tmp_path / "train", ["n01", "n02", "n03"], per_class=3, nested="images")
    arrays = load_image_folder(tmp_path, image_size=8, classes=["n03", "n01"], subdir="train")
    assert len(arrays) == 6 and arrays.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert arrays.images[0, 0].float().mean() == pytest.approx(80, abs=1)  # class n03's first channel
    with pytest.raises(DatasetNotFoundError, match="n09"):
        load_image_folder(tmp_path, image_size=8, classes=["n01", "n09"], subdir="train")


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((9, 9, 3), i * 50, dtype=np.uint8)).save(tmp_path / f"{i}.bmp")
    arrays = load_image_folder(tmp_path, image_size=8)
    assert arrays.labels is None and arrays.num_classes is None and len(arrays) == 4


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing", image_size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        load_image_folder(tmp_path / "empty", image_size=8)
    fake_data.write_image_folder(tmp_path / "one", ["only"], per_class=3)
    with pytest.raises(ConfigError, match="single class folder"):
        load_image_folder(tmp_path / "one", image_size=8)


def test_corrupt_images_are_named_or_skipped(tmp_path):
    fake_data.write_image_folder(tmp_path, ["a", "b"], per_class=3)
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ConfigError) as error:
        load_image_folder(tmp_path, image_size=8)
    assert "broken.jpg" in str(error.value) and "skip_corrupt=true" in str(error.value)
    arrays = load_image_folder(tmp_path, image_size=8, skip_corrupt=True)
    assert len(arrays) == 6


def test_npz_arrays(tmp_path):
    np.savez(tmp_path / "gray.npz", x=np.zeros((5, 7, 7), dtype=np.uint8), y=np.arange(5))
    np.savez(tmp_path / "rgb.npz", x=np.zeros((4, 6, 6, 3), dtype=np.uint8))
    np.savez(tmp_path / "float.npz", x=np.zeros((4, 6, 6), dtype=np.float32))
    gray, rgb = load_npz(tmp_path / "gray.npz"), load_npz(tmp_path / "rgb.npz")
    assert gray.images.shape == (5, 1, 7, 7) and gray.num_classes == 5
    assert rgb.images.shape == (4, 3, 6, 6) and rgb.labels is None
    with pytest.raises(ConfigError, match="must be uint8"):
        load_npz(tmp_path / "float.npz")
    with pytest.raises(DatasetNotFoundError):
        load_npz(tmp_path / "absent.npz")


def test_digits_as_png_folder_round_trip(tmp_path):
    arrays = load_digits()
    for index in range(20):
        folder = tmp_path / str(int(arrays.labels[index]))
        folder.mkdir(exist_ok=True)
        Image.fromarray(arrays.images[index, 0].numpy()).save(folder / f"{index}.png")
    loaded = load_image_folder(tmp_path, image_size=8, in_chans=1)
    order = sorted(range(20), key=lambda i: (str(int(arrays.labels[i])), f"{i}.png"))
    assert torch.equal(loaded.images, arrays.images[order])
