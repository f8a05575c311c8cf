"""Your own images: a class-per-subfolder tree (labels used only for metrics) or a flat folder.

Images are decoded once, in threads, into one uint8 tensor of ``stored_size`` squares, so
training never touches the disk again. ``stored_size`` defaults to the images' own resolution
(their median longer side, capped by ``max_stored_size``), so the training crops come from the
full-resolution image as in the official pipelines, which crop the original with
``RandomResizedCrop``; evaluation then resizes the stored square to ``image_size``.
``fit="whole"`` resizes the whole image to the square (the official ``Resize((S, S))``, no border
lost); ``fit="center_crop"`` resizes the shorter side and crops the centre.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image

from vtcc.data.benchmarks import DatasetNotFoundError
from vtcc.data.datasets import ImageArrays
from vtcc.errors import ConfigError
from vtcc.io.image_files import open_image
from vtcc.io.numpy_files import load_npz as read_npz
from vtcc.io.reader import reader
from vtcc.registry import register
from vtcc.utils.progress import Progress

log = logging.getLogger("vtcc")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
LAYOUT = "<root>/<class>/<image> (labels for metrics) or <root>/<image> (unlabelled)"


def images_under(folder: Path, recursive: bool) -> list[Path]:
    """The image files under ``folder``: regular files (links to them followed); an entry named
    as an image that is not one (a FIFO, a device, a socket, a broken link) is skipped and named."""
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    named = [p for p in pattern if p.suffix.lower() in IMAGE_SUFFIXES]
    special = sorted(p for p in named if not p.is_file() and not p.is_dir())
    if special:
        log.warning(
            "skipped %d entries of %s that are not regular files, e.g. %s", len(special), folder, special[0]
        )
    return sorted(p for p in named if p.is_file())


def list_images(
    root: Path, classes: Sequence[str] | None = None
) -> tuple[list[Path], list[int] | None, list[str]]:
    """Paths, their class indices (None for a flat folder) and the class names."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist: set data.root to {LAYOUT}")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir())
    if classes is not None:
        absent = [c for c in classes if not (root / c).is_dir()]
        if absent:
            raise DatasetNotFoundError(
                f"{len(absent)} class folder(s) missing in {root}: {', '.join(absent[:5])}; "
                "expected <root>/<wnid>/<image>"
            )
        subfolders = [root / c for c in classes]
    per_class = [(folder.name, images_under(folder, recursive=True)) for folder in subfolders]
    empty = [name for name, paths in per_class if not paths]
    if empty and len(empty) < len(per_class):  # a class without images would renumber the others
        raise ConfigError(
            f"{len(empty)} class folder(s) in {root} hold no images ({', '.join(empty[:5])}): "
            "remove them or add their images, or list the classes to keep in data.dataset.classes"
        )
    if per_class and not empty:
        if images_under(root, recursive=False) and classes is None:
            raise ConfigError(
                f"{root} has images both at the top and in subfolders: use one layout, {LAYOUT}"
            )
        if len(per_class) == 1:
            raise ConfigError(
                f"{root} has a single class folder ({per_class[0][0]}): clustering needs at least 2 classes, "
                "or put the images in one flat folder and set num_clusters"
            )
        paths = [p for _, class_paths in per_class for p in class_paths]
        labels = [i for i, (_, class_paths) in enumerate(per_class) for _ in class_paths]
        return paths, labels, [name for name, _ in per_class]
    paths = images_under(root, recursive=False)
    if not paths:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {root}: expected {LAYOUT}")
    return paths, None, []


Fit = Literal["whole", "center_crop"]
FITS = get_args(Fit)


def decode_image(
    path: Path | bytes, image_size: int, in_chans: int, fit: str = "whole", where: str | None = None
) -> np.ndarray:
    """``(C, S, S)`` uint8; RGBA is composited on white, palette and 16-bit images converted.
    ``path``: a regular file, or an image file's bytes read from ``where``; an unreadable one
    (a FIFO, a truncated file, a decompression bomb) is :class:`vtcc.io.reader.UnreadableFile`."""
    with open_image(path, where) as image:
        image.draft("RGB" if in_chans == 3 else "L", (image_size, image_size))
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        image = image.convert("RGB" if in_chans == 3 else "L")
        if fit == "whole":
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        else:
            scale = image_size / min(image.size)
            size = (max(image_size, round(image.width * scale)), max(image_size, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR)
            left, top = (size[0] - image_size) // 2, (size[1] - image_size) // 2
            image = image.crop((left, top, left + image_size, top + image_size))
        array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def choose_stored_size(
    paths: Sequence[Path], image_size: int, stored_size: int | None, max_stored_size: int, samples: int = 1000
) -> int:
    """``stored_size`` when given; else the median longer side of up to ``samples`` images (headers
    only), within ``[image_size, max_stored_size]``."""
    native = (native_side(paths, samples) or image_size) if stored_size is None else image_size
    return clamp_stored_size(native, image_size, stored_size, max_stored_size)


def clamp_stored_size(
    native: int,
    image_size: int,
    stored_size: int | None,
    max_stored_size: int,
    key: str = "data.dataset.stored_size",
) -> int:
    """``stored_size`` (the setting ``key``) when given, at least ``image_size``; else ``native``
    within ``[image_size, max(max_stored_size, image_size)]``."""
    if stored_size is not None:
        if stored_size < image_size:
            raise ConfigError(
                f"{key}={stored_size} is below data.image_size={image_size}: "
                "raise it, or leave it null to keep the images' own resolution"
            )
        return int(stored_size)
    return int(min(max(native, image_size), max(max_stored_size, image_size)))


def native_side(paths: Sequence[Path], samples: int = 1000) -> int | None:
    """The median longer side of up to ``samples`` evenly spaced images (headers only); None when
    none is readable."""
    step = max(1, len(paths) // samples)
    sides = []
    for path in paths[::step]:
        try:
            with open_image(path) as image:
                sides.append(max(image.size))
        except ValueError:  # UnreadableFile: reported with its path when decoded
            continue
    return int(np.median(sides)) if sides else None


# probe: the images are sampled before loading (vtcc.config.data_defaults)
@register("loader", "image_folder", target="vtcc.data.load_image_folder", probe="folder")
@reader("image_folder")
def load_image_folder(
    root: str | Path,
    image_size: int,
    in_chans: int = 3,
    classes: Sequence[str] | None = None,
    subdir: str | None = None,
    skip_corrupt: bool = False,
    num_threads: int | None = None,
    name: str = "image folder",
    stored_size: int | None = None,
    max_stored_size: int = 512,
    fit: Fit = "whole",
) -> ImageArrays:
    """Decode every image under ``root`` (or ``root/subdir``) once; unreadable files are listed by path."""
    if fit not in FITS:
        raise ConfigError(f"data.dataset.fit={fit!r} is unknown: use one of {', '.join(FITS)}")
    folder = Path(root) / subdir if subdir else Path(root)
    paths, labels, _ = list_images(folder, classes)
    side = choose_stored_size(paths, image_size, stored_size, max_stored_size)
    log.info(
        "decoding %d images of %s into memory at %d x %d px (%s): about %.1f MB",
        len(paths),
        folder,
        side,
        side,
        fit,
        len(paths) * in_chans * side * side / 1e6,
    )
    arrays: list[np.ndarray | None] = [None] * len(paths)
    failures: list[tuple[Path, str]] = []
    progress = Progress("decoding", len(paths), "images")

    def work(index: int) -> None:
        try:
            arrays[index] = decode_image(paths[index], side, in_chans, fit)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            failures.append((paths[index], getattr(error, "reason", str(error))))
        progress.advance()

    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        list(pool.map(work, range(len(paths))))
    if failures and not skip_corrupt:
        shown = "; ".join(f"{path}: {reason}" for path, reason in sorted(failures)[:3])
        raise ConfigError(
            f"{len(failures)} unreadable image(s) in {folder}, e.g. {shown}: "
            "fix or remove them, or add data.dataset.skip_corrupt=true to skip them"
        )
    if failures:
        first, reason = sorted(failures)[0]
        log.warning("skipped %d unreadable image(s) in %s, e.g. %s: %s", len(failures), folder, first, reason)
    keep = [i for i, array in enumerate(arrays) if array is not None]
    if len(keep) < 2:
        raise ConfigError(f"fewer than 2 readable images in {folder}")
    images = torch.from_numpy(np.stack([arrays[i] for i in keep]))
    label_tensor = None if labels is None else torch.tensor([labels[i] for i in keep], dtype=torch.long)
    return ImageArrays(images, label_tensor, name, paths=[str(paths[i]) for i in keep])


@register("loader", "npz", target="vtcc.data.load_npz", probe="npz")
@reader("npz_images")
def load_npz(root: str | Path) -> ImageArrays:
    """``x``: uint8 ``(N, H, W)`` or ``(N, H, W, C)``; optional ``y`` labels ``(N,)``."""
    path = Path(root)
    if not path.exists():
        raise DatasetNotFoundError(
            f"npz file {path} does not exist: set data.root=<file>.npz with arrays x (and y)"
        )
    x, y = image_arrays(path, read_npz(path, ("x", "y")))
    images = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    labels = None if y is None else torch.from_numpy(np.asarray(y, dtype=np.int64))
    return ImageArrays(torch.from_numpy(np.ascontiguousarray(images)), labels, path.stem)


def image_arrays(path: Path, archive: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (uint8 images) and ``y`` (integer labels, or None) of an image ``.npz``, checked."""
    if "x" not in archive:
        raise ConfigError(f"{path} has no array 'x' (found {', '.join(archive) or 'none'})")
    x, y = archive["x"], archive.get("y")
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) < 2:
        raise ConfigError(
            f"{path}: x must be uint8 (N, H, W) or (N, H, W, C) with N >= 2, got {x.dtype} {x.shape}"
        )
    if y is not None and (y.shape != (len(x),) or y.dtype.kind not in "iu"):
        raise ConfigError(f"{path}: y must be integers ({len(x)},), got {y.dtype} {y.shape}")
    return x, y
