"""Readers for the papers' benchmarks in their published on-disk formats, decoded to uint8 arrays.

``download=True`` fetches through torchvision where it can; reading is ours, so a copy placed
by hand (or written by the tests) loads the same way. CIFAR's python batches are pickles, and
``data.root`` may come from a checkpoint: they are read by an unpickler that builds numpy arrays
and plain Python values only, so a crafted file cannot run code.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from vtcc.data.datasets import ImageArrays
from vtcc.errors import ConfigError
from vtcc.io.reader import read_bytes
from vtcc.registry import register


class DatasetNotFoundError(ConfigError):
    """The files of a dataset are not where the config says."""


def missing(name: str, root: Path, layout: str, how: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"{name} not found in {root}: expected {layout}. {how}")


def _download_hint(name: str) -> str:
    return f"Add data.download=true to fetch {name} with torchvision, or set data.root=<dir> where it lies."


def _maybe_download(dataset_class, root: Path, download: bool, **kwargs) -> None:
    if download:
        for train in (True, False):
            dataset_class(root=str(root), train=train, download=True, **kwargs)


def _numpy_core(module: str, name: str) -> Any:
    """``numpy._core.<module>.<name>`` (numpy 2), else ``numpy.core.<module>.<name>`` (numpy 1)."""
    try:
        return getattr(importlib.import_module(f"numpy._core.{module}"), name)
    except (ImportError, AttributeError):
        return getattr(importlib.import_module(f"numpy.core.{module}"), name)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Protocol 2 pickles written by Python 3 store bytes as ``_codecs.encode(text, "latin1")``;
    only that codec is admitted (others could decompress or transform at will)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}")
    return codecs.encode(text, "latin1")


def _cifar_globals() -> dict[tuple[str, str], Any]:
    """What CIFAR's batches (numpy arrays in a dict) reference, under numpy 1 and 2 names."""
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }
    arrays = (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
    for module, name in arrays:  # protocols 0-4 build arrays by _reconstruct, protocol 5 by _frombuffer
        for package in ("numpy.core", "numpy._core"):
            allowed[(f"{package}.{module}", name)] = _numpy_core(module, name)
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only the globals of :func:`_cifar_globals`: any other (``os.system``, ``exec``, a
    class) is refused before anything is called."""

    def __init__(self, handle: BinaryIO) -> None:
        super().__init__(handle, encoding="latin1")  # the published files are Python 2 pickles
        self.allowed = _cifar_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return self.allowed[(module, name)]


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, list[int]]:
    """One CIFAR python batch: ``(N, 3, 32, 32)`` uint8 images and their labels."""
    try:
        # read whole (a regular file, as large as it really is), so no length the pickle declares
        # allocates more than the file holds
        entry = _CifarUnpickler(io.BytesIO(read_bytes(path))).load()
        images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = [int(label) for label in entry[label_key]]
    except pickle.UnpicklingError as error:
        raise ConfigError(
            f"{path} holds objects other than CIFAR's arrays ({error}): vtcc refuses to unpickle it; "
            "replace it with the published CIFAR file (data.download=true fetches it)"
        ) from error
    except (EOFError, KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise ConfigError(
            f"{path} is not a CIFAR python batch ({type(error).__name__}: {error}): "
            "replace it with the published CIFAR file (data.download=true fetches it)"
        ) from error
    if len(labels) != len(images):
        raise ConfigError(f"{path} holds {len(images)} images and {len(labels)} labels: replace the file")
    return images, labels


def _read_cifar_batches(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        batch_images, batch_labels = read_cifar_batch(folder / name, label_key)
        images.append(batch_images)
        labels.extend(batch_labels)
    return np.concatenate(images), np.asarray(labels, dtype=np.int64)


def _download_cifar(dataset_class: type, root: Path) -> None:
    """The archive at torchvision's URL, checked against its md5 and extracted; torchvision's CIFAR
    classes are not instantiated, since they unpickle the batches with ``pickle.load``."""
    from torchvision.datasets import utils

    utils.download_and_extract_archive(
        dataset_class.url, str(root), filename=dataset_class.filename, md5=dataset_class.tgz_md5
    )


def _cifar(root: str | Path, download: bool, name: str, folder: str, files: list[str], label_key: str):
    from torchvision import datasets

    root = Path(root)
    present = all((root / folder / f).is_file() for f in files)
    if download and not present:
        _download_cifar(datasets.CIFAR10 if name == "CIFAR-10" else datasets.CIFAR100, root)
    if not all((root / folder / f).is_file() for f in files):
        raise missing(
            name, root, f"{folder}/{{{','.join(files)}}} (the python pickles)", _download_hint(name)
        )
    train_images, train_labels = _read_cifar_batches(root / folder, files[:-1], label_key)
    test_images, test_labels = _read_cifar_batches(root / folder, files[-1:], label_key)
    is_test = torch.cat(
        [torch.zeros(len(train_images), dtype=torch.bool), torch.ones(len(test_images), dtype=torch.bool)]
    )
    images = torch.from_numpy(np.concatenate([train_images, test_images]))
    return ImageArrays(images, torch.from_numpy(np.concatenate([train_labels, test_labels])), name, is_test)


@register("loader", "cifar10", target="vtcc.data.load_cifar10")
def load_cifar10(root: str | Path, download: bool = False) -> ImageArrays:
    """CIFAR-10, train + test (60,000 images, 10 classes), as clustering papers use it."""
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return _cifar(root, download, "CIFAR-10", "cifar-10-batches-py", files, "labels")


@register("loader", "cifar100_20", target="vtcc.data.load_cifar100_20")
def load_cifar100_20(root: str | Path, download: bool = False) -> ImageArrays:
    """CIFAR-100, train + test, labelled by its 20 superclasses (the ``coarse_labels`` of the files)."""
    return _cifar(root, download, "CIFAR-100", "cifar-100-python", ["train", "test"], "coarse_labels")


@register("loader", "stl10", target="vtcc.data.load_stl10")
def load_stl10(root: str | Path, download: bool = False, include_unlabeled: bool = False) -> ImageArrays:
    """STL-10 train + test (13,000 labelled images, 10 classes, 96 px); optionally the 100,000 unlabelled."""
    from torchvision import datasets

    root = Path(root)
    folder = root / "stl10_binary"
    if download:
        datasets.STL10(root=str(root), split="train", download=True)
    needed = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"] + (
        ["unlabeled_X.bin"] if include_unlabeled else []
    )
    if not all((folder / f).is_file() for f in needed):
        raise missing("STL-10", root, f"stl10_binary/{{{','.join(needed)}}}", _download_hint("STL-10"))

    def read_images(name: str) -> np.ndarray:
        # Stored column-major per image: (N, 3, 96, 96) with H and W swapped.
        return np.fromfile(folder / name, dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)

    images = [read_images("train_X.bin"), read_images("test_X.bin")]
    labels = [
        np.fromfile(folder / f, dtype=np.uint8).astype(np.int64) - 1 for f in ("train_y.bin", "test_y.bin")
    ]
    if include_unlabeled:
        # Unlabelled images get label -1: they train, but only labelled ones are scored.
        unlabeled = read_images("unlabeled_X.bin")
        images.append(unlabeled)
        labels.append(np.full(len(unlabeled), -1, dtype=np.int64))
    is_test = torch.cat(
        [torch.full((len(part),), index == 1, dtype=torch.bool) for index, part in enumerate(images)]
    )
    return ImageArrays(
        torch.from_numpy(np.ascontiguousarray(np.concatenate(images))),
        torch.from_numpy(np.concatenate(labels)),
        "STL-10",
        is_test,
    )


def _idx_dataset(
    root: str | Path, download: bool, name: str, folder: str, dataset_class_name: str
) -> ImageArrays:
    from torchvision import datasets
    from torchvision.datasets.mnist import read_image_file, read_label_file

    root = Path(root)
    raw = root / folder / "raw"
    if download:
        _maybe_download(getattr(datasets, dataset_class_name), root, True)
    files = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    if not all((raw / f).is_file() for f in files):
        raise missing(name, root, f"{folder}/raw/{{{','.join(files)}}} (idx files)", _download_hint(name))
    train, test = read_image_file(str(raw / files[0])), read_image_file(str(raw / files[2]))
    labels = torch.cat([read_label_file(str(raw / files[1])), read_label_file(str(raw / files[3]))])
    is_test = torch.cat([torch.zeros(len(train), dtype=torch.bool), torch.ones(len(test), dtype=torch.bool)])
    return ImageArrays(torch.cat([train, test]).unsqueeze(1).contiguous(), labels.long(), name, is_test)


@register("loader", "mnist", target="vtcc.data.load_mnist")
def load_mnist(root: str | Path, download: bool = False) -> ImageArrays:
    """MNIST train + test (70,000 images, 10 classes)."""
    return _idx_dataset(root, download, "MNIST", "MNIST", "MNIST")


@register("loader", "fashion_mnist", target="vtcc.data.load_fashion_mnist")
def load_fashion_mnist(root: str | Path, download: bool = False) -> ImageArrays:
    """Fashion-MNIST train + test (70,000 images, 10 classes)."""
    return _idx_dataset(root, download, "Fashion-MNIST", "FashionMNIST", "FashionMNIST")
