"""A look at a sample of the user's images before anything is built: colour, size, statistics.

``data=folder``, ``folder_streaming`` and ``npz`` take their unset settings from it
(:mod:`vtcc.config.data_defaults`); large folders are sampled, so the look costs seconds, not a decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from vtcc.data.folder import image_arrays, list_images
from vtcc.errors import ConfigError
from vtcc.io.image_files import open_image
from vtcc.io.json_records import Bool, Float, Int, List, Maybe, Record, check_record
from vtcc.io.numpy_files import load_npz


@dataclass(frozen=True)
class ImageProbe:
    images: int  # in the whole dataset
    sampled: int
    gray: bool  # every sampled image has equal R, G and B (or one channel)
    median_side: int  # of the native longer sides
    mean: list[float]  # per channel of the model's input, in [0, 1]
    std: list[float]
    mirror_ratio: float | None = None  # see mirror_ratio(); None: too few images to tell
    invert_ratio: float | None = None  # see invert_ratio(); None: too few images, or not measured

    @classmethod
    def from_record(cls, record: object, where: object, fix: str = "") -> ImageProbe:
        """A probe stored in a data file (a shard index's ``sample``): every field a checked
        number of its range, never a string (:data:`PROBE_RECORD`)."""
        return cls(**check_record(record, PROBE_RECORD, where, fix))


# A probe as a data file stores it: statistics of images (channel values in [0, 1]).
PROBE_RECORD = Record(
    images=Int(0, 2**40),
    sampled=Int(0, 2**40),
    gray=Bool(),
    median_side=Int(1, 2**20),
    mean=List(Float(0.0, 1.0), lengths=(1, 3)),
    std=List(Float(1e-6, 1.0), lengths=(1, 3)),
    mirror_ratio=Maybe(Float(0.0, 1e6)),
    invert_ratio=Maybe(Float(0.0, 1e6)),  # absent from indexes written before it: null
)


MIRROR_SIDE = 16  # images are compared as 16 x 16 gray squares
MIRROR_MIN_IMAGES = 128  # fewer sampled images: no verdict (and no flips)


def _as_square(pixels: np.ndarray) -> np.ndarray:
    gray = pixels if pixels.ndim == 2 else pixels[..., :3].mean(axis=-1)
    square = Image.fromarray(np.asarray(gray, dtype=np.float32)).resize(
        (MIRROR_SIDE, MIRROR_SIDE), Image.Resampling.BILINEAR
    )
    return np.asarray(square, dtype=np.float64)


def _mirror(squares: np.ndarray) -> np.ndarray:
    return squares[:, :, ::-1]


def _invert(squares: np.ndarray) -> np.ndarray:
    return 255.0 - squares


LOOK_ALIKE_CHANGES = {"mirror_ratio": _mirror, "invert_ratio": _invert}  # ImageProbe's fields


def look_alike_ratios(arrays: list[np.ndarray], changes=None) -> dict[str, float | None]:
    """For each change (default: :data:`LOOK_ALIKE_CHANGES`), the median distance from each
    changed image to its nearest other image of the sample, over the median distance from each
    image to its nearest other image (16 x 16 gray, each image centred and scaled to unit norm;
    a change maps the stack of squares). Near 1 when the changed images are as much at home in the
    data as the images themselves; well above 1 when the change makes something the data does not
    hold. The squares and the images' own distances are computed once for all changes; None for
    each when the sample is too small to tell. No label is read."""
    changes = LOOK_ALIKE_CHANGES if changes is None else changes
    if len(arrays) < MIRROR_MIN_IMAGES:  # few images are all far apart: the ratio drifts to 1
        return dict.fromkeys(changes)
    squares = np.stack([_as_square(a) for a in arrays])

    def unit(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1)
        flat = flat - flat.mean(axis=1, keepdims=True)
        return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-8)

    images = unit(squares)

    def nearest(queries: np.ndarray) -> float:
        distances = np.sqrt(np.maximum(2 - 2 * queries @ images.T, 0))
        np.fill_diagonal(distances, np.inf)  # not an image itself, nor its own original
        return float(np.median(distances.min(axis=1)))

    own = max(nearest(images), 1e-8)
    return {name: round(nearest(unit(change(squares))) / own, 3) for name, change in changes.items()}


def mirror_ratio(arrays: list[np.ndarray]) -> float | None:
    """Whether mirror images look like the others (:func:`look_alike_ratios` of the left-right
    mirror): near 1 for silhouettes and shapes facing either way; well above 1 where mirroring
    makes something the data does not hold (digits, letters)."""
    return look_alike_ratios(arrays, {"mirror": _mirror})["mirror"]


def invert_ratio(arrays: list[np.ndarray]) -> float | None:
    """Whether images with their gray levels inverted (dark ink on light made light on dark) look
    like the others (:func:`look_alike_ratios` of ``255 - x``): near 1 when the data holds both
    polarities (pictograms either way round, textures); well above 1 when every image has one
    (digits and letters on a dark ground, objects lit from one side)."""
    return look_alike_ratios(arrays, {"invert": _invert})["invert"]


def _is_gray(pixels: np.ndarray) -> bool:
    if pixels.ndim == 2 or pixels.shape[-1] == 1:
        return True
    rgb = pixels[..., :3].astype(np.int16)
    return bool(np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 2 and np.abs(rgb[..., 1] - rgb[..., 2]).max() <= 2)


def summarise(arrays: list[np.ndarray], images: int, colour: bool = False) -> ImageProbe:
    """Channel statistics in the colour mode the probe settles on (gray: one channel);
    ``colour=True``: three channels whatever their values."""
    gray = not colour and all(_is_gray(a) for a in arrays)
    sides = [max(a.shape[:2]) for a in arrays]
    if gray:
        values = [np.asarray(a if a.ndim == 2 else a[..., 0], dtype=np.float64).ravel() / 255 for a in arrays]
        pooled = np.concatenate(values)[:, None]
    else:
        pooled = (
            np.concatenate(
                [
                    np.asarray(a if a.ndim == 3 else np.stack([a] * 3, -1))[..., :3].reshape(-1, 3)
                    for a in arrays
                ]
            ).astype(np.float64)
            / 255
        )
    return ImageProbe(
        images=images,
        sampled=len(arrays),
        gray=gray,
        median_side=int(np.median(sides)),
        mean=[round(float(v), 3) for v in pooled.mean(axis=0)],
        std=[round(max(float(v), 1e-3), 3) for v in pooled.std(axis=0)],
        **look_alike_ratios(arrays),
    )


def probe_folder(root: str | Path, classes=None, sample: int = 256, seed: int = 0) -> ImageProbe:
    """Decode at most ``sample`` images (a seeded random choice) of a class-folder or flat layout."""
    paths, _, _ = list_images(Path(root), classes)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), size=min(sample, len(paths)), replace=False))
    arrays, failures = [], []
    for index in chosen:
        try:
            with open_image(paths[index]) as image:
                image = ImageOps.exif_transpose(image)
                mode = "L" if image.mode in ("L", "LA", "I;16", "1") else "RGB"
                arrays.append(np.asarray(image.convert(mode)))
        except (OSError, SyntaxError, ValueError) as error:  # UnreadableFile is a ValueError
            failures.append(str(error))  # the loader reports (or skips) them all
    if not arrays:
        raise ConfigError(
            f"{len(failures)} unreadable image(s) sampled in {root} and none readable, e.g. {failures[0]}. "
            "Fix or remove them, or point data.root at the images"
        )
    return summarise(arrays, len(paths))


def probe_npz(root: str | Path, sample: int = 256, seed: int = 0) -> ImageProbe:
    """Arrays keep their channels: one channel (``(N, H, W)`` or ``C = 1``) is gray, three are colour
    (even when equal: the loader takes the array as it is)."""
    images, _ = image_arrays(Path(root), load_npz(root, ("x",)))  # checked, one line naming the file
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(images), size=min(sample, len(images)), replace=False))
    colour = images.ndim == 4 and images.shape[-1] == 3
    return summarise([np.asarray(images[i]) for i in chosen], len(images), colour=colour)
