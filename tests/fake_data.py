"""Small copies of the benchmarks, written in their real on-disk formats."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from vtcc.data import load_digits


def random_images(n: int, channels: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)


def write_cifar10(root: Path, per_file: int = 8) -> np.ndarray:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = []
    for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = random_images(per_file, 3, 32, seed=index)
        images.append(batch)
        entry = {"data": batch.reshape(per_file, -1), "labels": [i % 10 for i in range(per_file)]}
        (folder / name).write_bytes(pickle.dumps(entry))
    return np.concatenate(images)


def write_cifar100(root: Path, per_file: int = 30) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for index, name in enumerate(["train", "test"]):
        batch = random_images(per_file, 3, 32, seed=index)
        fine = [i % 100 for i in range(per_file)]
        entry = {
            "data": batch.reshape(per_file, -1),
            "fine_labels": fine,
            "coarse_labels": [f % 20 for f in fine],
        }
        (folder / name).write_bytes(pickle.dumps(entry))


def write_stl10(root: Path, per_split: int = 12, unlabeled: int = 5) -> np.ndarray:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    images = []
    for index, split in enumerate(["train", "test"]):
        batch = random_images(per_split, 3, 96, seed=index)
        images.append(batch)
        batch.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # column-major, as published
        (np.arange(per_split) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    random_images(unlabeled, 3, 96, seed=9).transpose(0, 1, 3, 2).tofile(folder / "unlabeled_X.bin")
    return np.concatenate(images)


def write_idx(root: Path, folder_name: str, per_split: int = 15) -> None:
    raw = root / folder_name / "raw"
    raw.mkdir(parents=True)
    for index, prefix in enumerate(["train", "t10k"]):
        images = random_images(per_split, 1, 28, seed=index)[:, 0]
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, per_split, 28, 28) + images.tobytes()
        )
        labels = (np.arange(per_split) % 10).astype(np.uint8)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, per_split) + labels.tobytes()
        )


def write_image_folder(
    root: Path, classes: list[str], per_class: int = 6, size: int = 20, nested: str = ""
) -> None:
    """Mixed formats and modes: RGB PNG, grayscale JPEG, RGBA WebP."""
    rng = np.random.default_rng(0)
    formats = [("png", "RGB"), ("jpg", "L"), ("webp", "RGBA")]
    for class_index, name in enumerate(classes):
        folder = root / name / nested
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            suffix, mode = formats[i % len(formats)]
            channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
            pixels = rng.integers(0, 256, size=(size, size + 4, channels), dtype=np.uint8)
            pixels[..., 0] = class_index * 40  # a class-specific first channel
            Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(
                folder / f"{i}.{suffix}"
            )


def write_digit_folder(root: Path, count: int) -> Path:
    """The first ``count`` embedded digits as ``root/<label>/<index>.png`` (8x8 gray), a real
    class-folder layout for end-to-end runs on a folder."""
    arrays = load_digits()
    for index in range(count):
        folder = root / str(int(arrays.labels[index]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arrays.images[index, 0].numpy()).save(folder / f"{index:04d}.png")
    return root
