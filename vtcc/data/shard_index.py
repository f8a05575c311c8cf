"""A shard folder's layout and its typed readers: ``shards.json``, ``offsets.npz`` and one shard.

``vtcc-shards`` (:mod:`vtcc.data.shard_writer`) writes a folder of tar shards ``PATTERN`` in
WebDataset's layout, ``shards.json`` (:data:`INDEX`: the image count, the shard list and a
sample's statistics) and ``offsets.npz`` (:data:`OFFSETS`: where each image lies). What vtcc reads
of them is declared here (:data:`INDEX_RECORD`, :data:`SAMPLE_RECORD`) and read by
:func:`read_index` and :func:`read_shard`; ``data=shards`` (:mod:`vtcc.data.shards`) streams them.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vtcc.data.benchmarks import DatasetNotFoundError
from vtcc.data.folder import IMAGE_SUFFIXES
from vtcc.data.probe import ImageProbe
from vtcc.errors import ConfigError
from vtcc.io.json_records import (
    Bool,
    Int,
    List,
    Maybe,
    Record,
    Str,
    check_record,
    parse_json_record,
    read_json,
)
from vtcc.io.numpy_files import load_npz
from vtcc.io.reader import check_regular, open_regular, reader

FORMAT = "vtcc-shards/1"
INDEX = "shards.json"
OFFSETS = "offsets.npz"
PATTERN = "shard-%06d.tar"
META = ("json", "cls")  # the members of a sample that are not its image
FIX = "write the shards again with vtcc-shards"
MAX_IMAGES = 2**40
# What vtcc reads of shards.json (typed, checked; nothing of it is ever resolved as config) and of
# a sample's <key>.json; keys not declared here are dropped.
INDEX_RECORD = Record(
    format=Str(choices=(FORMAT,)),
    count=Int(0, MAX_IMAGES),
    shards=List(Record(file=Str(255), count=Int(0, MAX_IMAGES))),
    classes=List(Str()),
    labeled=Bool(),
    native_side=Maybe(Int(1, 2**20)),
    sample=Record(),  # checked as an ImageProbe (vtcc.data.probe.PROBE_RECORD)
)
SAMPLE_RECORD = Record(index=Int(0, MAX_IMAGES), path=Str())


def require_webdataset() -> None:
    try:
        import webdataset  # noqa: F401
    except ImportError:
        raise ConfigError("data=shards and vtcc-shards need webdataset: pip install 'vtcc[scale]'") from None


@reader("shards")
def read_index(root: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``shards.json`` and ``offsets.npz`` of a shard folder as typed, checked values (one line
    naming the file otherwise): every field of its type and range, no ``${`` anywhere, the files
    inside the folder and regular, every image's bytes within its shard's real size."""
    folder = Path(root)
    path = folder / INDEX
    if not path.exists() and not path.is_symlink():
        raise DatasetNotFoundError(
            f"{path} does not exist: set data.root to a folder written by vtcc-shards <images> <folder>"
        )
    raw = read_json(path, FIX, inside=folder)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a {FORMAT} index: write the shards with this vtcc's vtcc-shards")
    index = check_record(raw, INDEX_RECORD, path, FIX)
    index["sample"] = asdict(ImageProbe.from_record(raw["sample"], f"{path} (sample)", FIX))
    arrays = load_npz(folder / OFFSETS, ("shard", "offset", "size", "label"), inside=folder)
    count = index["count"]
    for key in ("shard", "offset", "size", "label"):
        array = arrays.get(key)
        if array is None or array.shape != (count,) or array.dtype.kind not in "iu":
            raise ConfigError(
                f"{folder / OFFSETS}: {key} must be integers ({count},) as {INDEX} counts: {FIX}"
            )
    offsets = {key: arrays[key].astype(np.int64) for key in ("shard", "offset", "size", "label")}
    files = [entry["file"] for entry in index["shards"]]
    counts = [entry["count"] for entry in index["shards"]]
    unsafe = [name for name in files if Path(name).name != name or name in ("", ".", "..")]
    if unsafe or len(set(files)) != len(files):
        raise ConfigError(f"{path} names a shard {(unsafe or files)[0]!r} twice or outside its folder: {FIX}")
    absent = [name for name in files if not (folder / name).is_file()]
    if absent:
        raise ConfigError(f"shard {folder / absent[0]} is missing: copy every shard the index lists")
    sizes = np.asarray([check_regular(folder / name, inside=folder) for name in files], dtype=np.int64)
    if count < 2:
        raise ConfigError(f"{folder} holds {count} image(s): clustering needs at least 2")
    named, start, size = offsets["shard"], offsets["offset"], offsets["size"]
    if (
        sum(counts) != count
        or named.min() < 0
        or named.max() >= len(files)
        or np.bincount(named, minlength=len(files)).tolist() != counts
        or offsets["label"].min() < -1
    ):
        raise ConfigError(
            f"{folder / OFFSETS} disagrees with the counts of {INDEX} (or names a shard it lacks): {FIX}"
        )
    beyond = np.flatnonzero((start < 0) | (size < 0) | (start > sizes[named] - size))
    if len(beyond):
        image = int(beyond[0])
        raise ConfigError(
            f"{folder / files[named[image]]}: image {image} lies at bytes {start[image]} to "
            f"{start[image] + size[image]}, beyond the shard's {sizes[named[image]]}: {FIX}"
        )
    return index, offsets


@reader("shard_tar")
def read_shard(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """``(image index, image bytes, label)`` of each sample of one shard, in order, read by
    WebDataset's own tar reader (what any WebDataset pipeline sees of vtcc's shards; vtcc's loaders
    read the image bytes at their offsets instead, a few microseconds a sample against WebDataset's
    hundred and more)."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    samples = 0
    try:  # opened here (a regular file only), never by WebDataset's URL opener ("pipe:...")
        with open_regular(path) as handle:
            opened = [{"url": str(path), "stream": handle}]
            for sample in group_by_keys(tar_file_expander(opened)):
                where = f"{path} ({sample['__key__']}.json)"
                meta = parse_json_record(sample["json"], SAMPLE_RECORD, where, FIX)
                images = [value for key, value in sample.items() if key.lower().lstrip(".") in _IMAGE_KEYS]
                label = int(sample["cls"]) if "cls" in sample else -1
                yield meta["index"], images[0], label
                samples += 1
        if not samples:
            raise ConfigError(f"shard {path} holds no sample: {FIX}")
    except ConfigError:
        raise
    except (OSError, tarfile.TarError, KeyError, IndexError, ValueError, TypeError) as error:
        raise ConfigError(
            f"shard {path} is damaged or not vtcc-shards' ({type(error).__name__}: {error}): "
            "write the shards again"
        ) from None


_IMAGE_KEYS = {suffix.lstrip(".") for suffix in IMAGE_SUFFIXES}
