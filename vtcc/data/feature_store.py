"""Cached backbone features larger than memory: a memory-mapped float16 store, extracted in parts.

``features.store=mapped`` (``auto`` picks it for large caches) keeps a frozen backbone's features
in a folder ``<features.cache_dir>/<key>.mm/`` instead of one in-memory file:

- ``eval.npy`` ``(N, D)``, ``views.npy`` ``(V, N, D)`` (float16) and ``labels.npy`` ``(N,)``: plain
  NumPy files that training opens memory-mapped (pages are read as batches touch them);
- the images are cut into parts of ``features.part_size``; under DDP process ``r`` of ``W``
  extracts parts ``r, r + W, ...``, writing its rows straight into the mapped files, and marks each
  part done (``done/<part>``) once its rows are flushed. An interrupted extraction resumes with the
  parts not yet done. Each part's augmented views draw from their own seed (the run's seed and the
  part), so the store is the same whatever the number of processes or interruptions;
- ``meta.json`` says what the store holds; a folder without it (or another format's) is refused,
  never replaced.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vtcc.errors import ConfigError
from vtcc.io.json_records import Int, Record, Str, check_record, read_json
from vtcc.io.numpy_files import load_npy
from vtcc.io.reader import UnreadableFile, reader
from vtcc.io.writer import Writer

STORE_FORMAT = "vtcc-feature-store/1"
# What vtcc reads of a store's meta.json: typed numbers (the part count is checked against the
# image count and part size, so it is never larger than the data).
META_RECORD = Record(
    format=Str(choices=(STORE_FORMAT,)),
    count=Int(0, 2**40),
    dim=Int(1, 2**24),
    views=Int(0, 2**16),
    part_size=Int(1, 2**40),
    parts=Int(0, 2**40),
    dtype=Str(choices=("float16",)),
)


class FeatureStore:
    """The store in ``folder`` (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.writer = Writer(self.folder.parent)  # the cache folder: every write of the store goes through it

    @staticmethod
    def layout(count: int, dim: int, views: int, part_size: int) -> dict[str, Any]:
        return {
            "format": STORE_FORMAT,
            "count": int(count),
            "dim": int(dim),
            "views": int(views),
            "part_size": int(part_size),
            "parts": -(-int(count) // int(part_size)),
            "dtype": "float16",
        }

    @reader("feature_store")
    def meta(self) -> dict[str, Any] | None:
        """The store's ``meta.json`` as typed, checked numbers; None when there is no store;
        anything else there is refused in one line."""
        if not self.folder.exists():
            return None
        path = self.folder / "meta.json"
        fix = "move it away or set features.cache_dir to another folder"
        try:
            meta = read_json(path, inside=self.folder)
        except UnreadableFile as error:  # absent, not a regular file, an interpolation, not JSON
            raise ConfigError(
                f"feature store {self.folder} exists and was not written by this vtcc's feature store "
                f"({error.path} {error.reason}): {fix}"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            raise ConfigError(
                f"feature store {self.folder} exists and was not written by this vtcc's feature store "
                f"({path} is not its meta.json): {fix}"
            )
        meta = check_record(meta, META_RECORD, path, fix)
        if meta["parts"] != -(-meta["count"] // meta["part_size"]):
            raise ConfigError(
                f"{path} says {meta['parts']} parts for {meta['count']} images in parts of "
                f"{meta['part_size']}, which vtcc never writes: {fix}"
            )
        return meta

    def create_if_absent(self, layout: dict[str, Any]) -> None:
        """Allocate the mapped files (zeros; sparse on most file systems) with ``meta.json`` in a
        fresh folder beside the store, then rename it into place: a store folder is always
        complete in its layout, and of two processes creating it at once one wins, whole."""
        if self.meta() is not None:
            return
        with self.writer.new_folder(self.folder) as building:  # a private folder, recorded and renamed
            (building.path / "done").mkdir()
            count, dim, views = layout["count"], layout["dim"], layout["views"]
            for name, shape, dtype in (
                ("eval", (count, dim), np.float16),
                ("views", (views, count, dim), np.float16),
                ("labels", (count,), np.int64),
            ):
                array = np.lib.format.open_memmap(
                    building.path / f"{name}.npy", mode="w+", dtype=dtype, shape=shape
                )
                array.flush()
                del array
            (building.path / "meta.json").write_text(json.dumps(layout, indent=1) + "\n")
        # not placed: a folder appeared meanwhile; another process's store, or refused by meta()
        if not building.placed and self.meta() is None:
            raise ConfigError(f"feature store {self.folder} vanished while it was made: run again")

    def done(self) -> set[int]:
        folder = self.folder / "done"
        if not folder.is_dir():
            return set()
        return {int(p.name) for p in folder.iterdir() if p.name.isascii() and p.name.isdigit()}

    def rows(self, part: int, meta: dict[str, Any]) -> range:
        start = part * meta["part_size"]
        return range(start, min(start + meta["part_size"], meta["count"]))

    def write(
        self,
        part: int,
        meta: dict[str, Any],
        evaluated: torch.Tensor,
        views: torch.Tensor,
        labels: torch.Tensor,
    ) -> None:
        """Rows of one part into the mapped files, flushed, then the part marked done."""
        rows = self.rows(part, meta)
        if len(evaluated) != len(rows) or views.shape[:2] != (meta["views"], len(rows)):
            raise ValueError(f"part {part}: {len(evaluated)} rows for {len(rows)} images")
        for name, values in (("eval", evaluated), ("views", views)):
            if values.numel() and values.abs().max() > np.finfo(np.float16).max:
                raise ConfigError(
                    f"the backbone's {name} features exceed float16's range (65504): use "
                    "features.store=memory (float32)"
                )
        for name, values in (("eval", evaluated), ("labels", labels)):
            with self._writable(name) as array:
                array[rows.start : rows.stop] = values.numpy().astype(array.dtype)
        if meta["views"]:
            with self._writable("views") as array:
                array[:, rows.start : rows.stop] = views.numpy().astype(np.float16)
        self.writer.write_bytes(self.folder / "done" / str(part), b"")

    @contextmanager
    def _writable(self, name: str) -> Iterator[np.memmap]:
        """``<name>.npy`` mapped to be written in place, flushed at the end: only the file vtcc
        created there, opened without following a link (:meth:`vtcc.io.writer.Writer.update`; a
        link or a file vtcc did not write is refused in one line, its target untouched)."""
        path = self.folder / f"{name}.npy"
        with self.writer.update(path) as handle:
            version = np.lib.format.read_magic(handle)
            headers = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }
            if version not in headers:
                raise ConfigError(f"{path} is not an .npy file this vtcc's feature store wrote: move it away")
            shape, fortran, dtype = headers[version](handle)
            array = np.memmap(
                handle,
                dtype=dtype,
                mode="r+",
                shape=shape,
                offset=handle.tell(),
                order="F" if fortran else "C",
            )
        try:
            yield array
            array.flush()
        finally:
            del array

    def open(self) -> dict[str, torch.Tensor]:
        """``views``, ``eval`` and ``labels`` as tensors over the read-only mapped files, each of
        the dtype and shape ``meta.json`` says and inside the store's folder (one line otherwise)."""
        meta = self.meta()
        if meta is None:
            raise ConfigError(f"feature store {self.folder} does not exist: extract the features again")
        count, dim = meta["count"], meta["dim"]
        expected = {
            "views": (np.float16, (meta["views"], count, dim)),
            "eval": (np.float16, (count, dim)),
            "labels": (np.int64, (count,)),
        }
        tensors = {}
        for name, (dtype, shape) in expected.items():
            array = load_npy(self.folder / f"{name}.npy", mmap=True, inside=self.folder)
            if array.dtype != dtype or array.shape != shape:
                raise ConfigError(
                    f"{self.folder / name}.npy holds {array.dtype} {array.shape}, not the "
                    f"{np.dtype(dtype)} {shape} of its meta.json: move it away or set features.cache_dir"
                )
            with warnings.catch_warnings():  # read-only by design: nothing writes through them
                warnings.filterwarnings("ignore", message=".*not writable.*")
                tensors[name] = torch.from_numpy(array)
        return tensors
