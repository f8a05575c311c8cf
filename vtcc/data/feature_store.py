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
import os
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vtcc.errors import ConfigError

STORE_FORMAT = "vtcc-feature-store/1"


class FeatureStore:
    """The store in ``folder`` (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

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

    def meta(self) -> dict[str, Any] | None:
        """The store's ``meta.json``; None when there is no store; anything else there is refused."""
        if not self.folder.exists():
            return None
        path = self.folder / "meta.json"
        try:
            meta = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            raise ConfigError(
                f"feature store {self.folder} exists and was not written by this vtcc's feature store: "
                "move it away or set features.cache_dir to another folder"
            )
        return meta

    def create_if_absent(self, layout: dict[str, Any]) -> None:
        """Allocate the mapped files (zeros; sparse on most file systems) with ``meta.json`` in a
        fresh folder beside the store, then rename it into place: a store folder is always
        complete in its layout, and of two processes creating it at once one wins, whole."""
        if self.meta() is not None:
            return
        building = self.folder.with_name(f".{self.folder.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        building.mkdir(parents=True)
        try:
            (building / "done").mkdir()
            count, dim, views = layout["count"], layout["dim"], layout["views"]
            for name, shape, dtype in (
                ("eval", (count, dim), np.float16),
                ("views", (views, count, dim), np.float16),
                ("labels", (count,), np.int64),
            ):
                array = np.lib.format.open_memmap(
                    building / f"{name}.npy", mode="w+", dtype=dtype, shape=shape
                )
                array.flush()
                del array
            (building / "meta.json").write_text(json.dumps(layout, indent=1) + "\n")
            try:
                os.rename(building, self.folder)  # fails when the folder appeared meanwhile
            except OSError:
                if self.meta() is None:  # not a store that another process made: refused above
                    raise
        finally:
            if building.exists():
                shutil.rmtree(building)

    def done(self) -> set[int]:
        folder = self.folder / "done"
        return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()

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
            array = np.load(self.folder / f"{name}.npy", mmap_mode="r+")
            array[rows.start : rows.stop] = values.numpy().astype(array.dtype)
            array.flush()
            del array
        if meta["views"]:
            array = np.load(self.folder / "views.npy", mmap_mode="r+")
            array[:, rows.start : rows.stop] = views.numpy().astype(np.float16)
            array.flush()
            del array
        (self.folder / "done" / str(part)).touch()

    def open(self) -> dict[str, torch.Tensor]:
        """``views``, ``eval`` and ``labels`` as tensors over the read-only mapped files."""
        tensors = {}
        for name in ("views", "eval", "labels"):
            array = np.load(self.folder / f"{name}.npy", mmap_mode="r")
            with warnings.catch_warnings():  # read-only by design: nothing writes through them
                warnings.filterwarnings("ignore", message=".*not writable.*")
                tensors[name] = torch.from_numpy(array)
        return tensors
