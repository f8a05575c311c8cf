"""``vtcc-shards``: a folder of images (``data=folder``'s layout) written as tar shards.

The shards, ``shards.json`` and ``offsets.npz`` (:mod:`vtcc.data.shard_index` declares their
layout) are written through the :class:`~vtcc.io.writer.Writer`, never inside the images' folder;
``data=shards`` (:mod:`vtcc.data.shards`) reads them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vtcc.data.folder import list_images, native_side
from vtcc.data.probe import probe_folder
from vtcc.data.shard_index import FORMAT, INDEX, META, OFFSETS, PATTERN, require_webdataset
from vtcc.errors import ConfigError, user_error
from vtcc.io.image_files import open_image
from vtcc.io.reader import read_bytes
from vtcc.io.writer import Writer

log = logging.getLogger("vtcc")


def write_shards(
    folder: str | Path, output: str | Path, shard_size: int = 1000, classes: Sequence[str] | None = None
) -> dict[str, Any]:
    """Write the images of ``folder`` (``data=folder``'s layout) as shards of ``shard_size`` images
    into ``output`` (a new or empty folder); returns the index written as ``shards.json``."""
    require_webdataset()
    import webdataset as wds

    if shard_size < 1:
        raise ConfigError(f"--shard-size {shard_size}: give at least 1 image a shard")
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"{out} already exists and is not an empty folder: choose a new folder for the shards"
        )
    paths, labels, names = list_images(Path(folder), classes)
    probe = probe_folder(folder, classes)  # before writing: an unreadable folder writes nothing
    for path in paths:  # every file an image (header, size, checksums): nothing else is copied
        with open_image(path) as image:
            image.verify()
    writer = Writer(out, protect=[folder])  # never inside the images' folder, never through a link
    writer.make_dirs(out)

    def samples() -> Iterator[dict[str, Any]]:
        for index, path in enumerate(paths):
            sample = {
                "__key__": f"{index:09d}",
                path.suffix.lower().lstrip("."): read_bytes(path),
                "json": {"index": index, "path": str(path.relative_to(folder))},
            }
            if labels is not None:
                sample["cls"] = int(labels[index])
            yield sample

    files = _write_tars(writer, out, samples(), shard_size, wds.TarWriter)
    where = [_members(file, number) for number, file in enumerate(files)]
    located = np.concatenate(where) if where else np.zeros((0, 3), dtype=np.int64)
    writer.save_arrays(
        out / OFFSETS,
        shard=located[:, 0],
        offset=located[:, 1],
        size=located[:, 2],
        label=np.asarray(labels if labels is not None else [-1] * len(paths), dtype=np.int64),
    )
    index = {
        "format": FORMAT,
        "count": len(paths),
        "shards": [{"file": file.name, "count": len(rows)} for file, rows in zip(files, where, strict=True)],
        "classes": names,
        "labeled": labels is not None,
        "native_side": native_side(paths),  # what data=folder's stored size starts from
        "sample": asdict(probe),
    }
    writer.write_json(out / INDEX, index, indent=1)
    log.info("%d images in %d shards written to %s", len(paths), len(files), out)
    return index


SHARD_BYTES = 3e9  # webdataset.ShardWriter's default: a shard ends at this many bytes too


def _write_tars(
    writer: Writer, out: Path, samples: Iterator[dict[str, Any]], shard_size: int, tar_writer: Any
) -> list[Path]:
    """``samples`` as tar shards ``PATTERN`` of at most ``shard_size`` samples (and about
    :data:`SHARD_BYTES`, where ``webdataset.ShardWriter`` cuts them; at least one shard), each
    written by ``tar_writer`` (``webdataset.TarWriter``) into a new file renamed into place."""
    files: list[Path] = []
    sample = next(samples, None)
    while sample is not None or not files:
        path = out / (PATTERN % len(files))
        with writer.open(path) as handle:
            sink = tar_writer(handle)
            count = size = 0
            while sample is not None and count < shard_size and size < SHARD_BYTES:
                size += sink.write(sample)
                count += 1
                sample = next(samples, None)
            sink.close()
        files.append(path)
    return files


def _members(file: Path, number: int) -> np.ndarray:
    """``(images, 3)``: shard number, byte offset and size of each image member, in key order."""
    rows = []
    with tarfile.open(file) as archive:
        for member in archive:
            key, _, suffix = member.name.partition(".")
            if member.isfile() and suffix not in META:
                rows.append((int(key), number, member.offset_data, member.size))
    rows.sort()
    return np.asarray([row[1:] for row in rows], dtype=np.int64).reshape(-1, 3)


def main(argv: Sequence[str] | None = None) -> None:
    """``vtcc-shards <folder> <output> --shard-size N``: a folder of images as tar shards."""
    parser = argparse.ArgumentParser(
        prog="vtcc-shards",
        description="Write a folder of images (<folder>/<class>/<image> or flat) as WebDataset tar shards "
        "for data=shards.",
    )
    parser.add_argument("folder", help="the images, in data=folder's layout")
    parser.add_argument("output", help="a new (or empty) folder for the shards")
    parser.add_argument("--shard-size", type=int, default=1000, help="images a shard (default 1000)")
    parser.add_argument("--classes", nargs="*", default=None, help="only these class folders, in this order")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        write_shards(arguments.folder, arguments.output, arguments.shard_size, arguments.classes)
    except Exception as error:  # noqa: BLE001 - a user's mistake is one line, anything else a traceback
        cause = user_error(error)
        if cause is None:
            raise
        print(f"vtcc-shards: error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
