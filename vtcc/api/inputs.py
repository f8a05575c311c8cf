"""How a fit reads the images it is given: a folder, an ``.npz`` file, a list of image paths (a
folder of links), an array (``inputs.npz``) or features (:func:`plan_inputs`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vtcc.api.compose import override_value
from vtcc.data.feature_file import check_features
from vtcc.data.folder import IMAGE_SUFFIXES
from vtcc.errors import ConfigError
from vtcc.inference import array_images
from vtcc.io.numpy_files import npz_names
from vtcc.io.reader import open_regular
from vtcc.io.writer import Writer
from vtcc.predict import existing_files

Images = str | Path | Sequence[str | Path] | np.ndarray


@dataclass
class Inputs:
    """How a fit reads its images: the data overrides, what must be written first (an array's
    ``inputs.npz``, a list's links), and how many images ``labels_`` must have (``None``: a folder,
    whatever it holds)."""

    items: list[str]
    write: Callable[[], None]
    count: int | None


def plan_inputs(images: Images, labels: Any, run_dir: Path, items: list[str]) -> Inputs:
    """A folder as ``data=folder``, an ``.npz`` file as ``data=npz``, a list of image paths as a
    folder of links under ``<run>/inputs``, an array as ``<run>/inputs.npz`` (with ``labels`` as its
    ``y``, for the metrics only). Checked in full before anything is written."""
    chose_data = any(re.match(r"^\+*data=", item) for item in items)
    if labels is not None and not isinstance(images, np.ndarray):
        raise ConfigError("labels= go with an array of images; a folder's labels are its class subfolders")
    if isinstance(images, str | Path):
        path = Path(images).expanduser()
        if not path.exists():
            raise ConfigError(
                f"images={images}: no such folder or file; give a folder of images, an .npz file, a list "
                "of image paths, an array, or a .npy / .npz file of features"
            )
        group = [] if chose_data else [f"data={data_kind(path)}"]
        return Inputs([*group, f"data.root={override_value(path.resolve())}"], lambda: None, None)
    if isinstance(images, np.ndarray):
        features = images.ndim == 2  # precomputed features (N, D): data=features
        if features:
            check_features(images, "the features")
        else:
            array_images(images)  # its dtype and shape
        arrays = {"features" if features else "x": images}
        if labels is not None:
            y = np.asarray(labels)
            if y.shape != (len(images),) or not np.issubdtype(y.dtype, np.integer):
                raise ConfigError(f"labels must be integers (N,) = ({len(images)},), got {y.dtype} {y.shape}")
            arrays["y"] = y.astype(np.int64)
        target = run_dir / "inputs.npz"
        group = [] if chose_data else ["data=features" if features else "data=npz"]
        return Inputs(
            [*group, f"data.root={override_value(target.resolve())}"],
            lambda: Writer(run_dir).save_arrays(target, **arrays),
            len(images),
        )
    if isinstance(images, list | tuple):
        if not all(isinstance(p, str | Path) for p in images):
            raise ConfigError(
                "a list of images must hold paths (str or Path); give arrays as one (N, H, W[, C]) array"
            )
        files = existing_files([Path(p).expanduser().resolve() for p in images])
        odd = [str(p) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if odd:
            raise ConfigError(
                f"{len(odd)} listed file(s) are not images ({', '.join(IMAGE_SUFFIXES)}), e.g. {odd[0]}"
            )
        if len(files) < 2:
            raise ConfigError("clustering needs at least 2 images")
        folder = run_dir / "inputs"
        group = [] if chose_data else ["data=folder"]
        return Inputs(
            [*group, f"data.root={override_value(folder.resolve())}"],
            lambda: link_inputs(files, folder, Writer(run_dir)),
            len(files),
        )
    raise ConfigError(
        f"images of type {type(images).__name__}: give a folder, an .npz file, a list of image paths, "
        "a uint8 array (N, H, W) or (N, H, W, C), or features (N, D) (.npy file or float array)"
    )


NUMPY_MAGIC = b"\x93NUMPY"


def data_kind(path: Path) -> str:
    """The data group a file or folder is read with: ``features`` for an ``.npy`` file or an
    ``.npz`` holding ``features``, ``npz`` for other ``.npz`` files (images ``x``), else ``folder``."""
    if path.suffix == ".npy":
        return "features"
    if path.suffix == ".npz" and (path.exists() or path.is_symlink()):
        with open_regular(path) as handle:  # a FIFO, a device, a folder: one line naming it
            if handle.read(len(NUMPY_MAGIC)) == NUMPY_MAGIC:  # an .npy named .npz: its loader says so
                return "npz"
        return "features" if "features" in npz_names(path) else "npz"  # a damaged archive: one line
    return "folder"


def link_inputs(files: Sequence[Path], folder: Path, writer: Writer | None = None) -> None:
    """A flat folder of links ``000000_<name>`` to ``files``, in their order (the folder loader
    reads sorted names, so image ``i`` stays image ``i``); a new folder each fit: the links of an
    earlier fit into this run folder (``overwrite=True``) are removed first, never what they point to."""
    writer = writer or Writer(folder.parent)
    width = max(6, len(str(len(files))))
    links = [folder / f"{index:0{width}d}_{path.name}" for index, path in enumerate(files)]
    writer.check(*links)
    writer.remove_recorded(f"{folder.name}/*")
    if folder.is_dir() and any(folder.iterdir()):  # the loader would read them as images too
        raise ConfigError(
            f"{folder} holds files vtcc did not write: move them away, or choose another run_dir"
        )
    writer.claim(links)
    writer.make_dirs(folder)
    for link, path in zip(links, files, strict=True):
        writer.link_file(path, link)
