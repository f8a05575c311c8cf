"""Hostile inputs for every kind of file vtcc reads (:data:`vtcc.io.reader.READERS`), in classes.

Each :class:`Case` writes one crafted input into a fresh :class:`Workspace` and names the reader
kind it attacks, its class (:data:`CLASSES`), what the input is given as, and the outcome vtcc
documents for it: ``refused`` (one line naming the file) or ``skipped`` (read without the bad
item, which a warning names). Cases of the typed records (a shard index, a sample's JSON, a feature
store's metadata, a toy record for the JSON reader) are generated from the schemas vtcc reads them
with: an interpolation string and wrong types in every field, so a field added to a schema is
attacked without a line here. ``tests/e2e/test_hostile.py`` runs every case through its reader and a
representative case of each class through every command that reads that kind of file.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vtcc.io.json_records import Bool, Field, Float, Int, List, Maybe, Record, Str

CLASSES = (
    "interpolation",  # ${...} in a string field: never resolved
    "wrong_type",  # a value of another type, or out of its range, in a field
    "link_out",  # a symbolic link out of the folder (or to a device)
    "fifo",  # a FIFO where a file is read: never opened for a blocking read
    "beyond_size",  # declared sizes, shapes, counts or offsets beyond what the file holds
    "truncated",  # a file cut short or not of its format
    "bomb",  # a decompression bomb: an image or archive member declaring far more than it holds
    "outside_root",  # a path naming a file outside the folder it should lie in
)
MARKER = "pwned"  # what an instantiated payload would create, in the workspace's outside/


def payload(marker: Path) -> str:
    """An interpolation that, resolved and instantiated, creates ``marker``."""
    return "${oc.create:{_target_: builtins.open, file: '%s', mode: w}}" % marker  # noqa: UP031


@dataclass
class Workspace:
    """One case's folders: ``inputs/`` (the hostile input), ``outside/`` (a secret, a FIFO and
    where a payload would write), ``base`` (valid inputs built once and copied)."""

    root: Path
    base: Path

    def __post_init__(self) -> None:
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.outside.mkdir(parents=True, exist_ok=True)
        (self.outside / "secret.txt").write_text("the user's secret\n")
        if not (self.outside / "pipe").exists():
            os.mkfifo(self.outside / "pipe")

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    @property
    def marker(self) -> Path:
        return self.outside / MARKER

    def copy_base(self, name: str, build: Callable[[Path], None]) -> Path:
        """``inputs/<name>``: a copy of the valid input ``build`` writes (built once)."""
        built = self.base / name
        if not built.exists():
            staging = self.base / f".{name}.building"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            build(staging)
            staging.rename(built)
        target = self.inputs / name
        shutil.copytree(built, target, symlinks=True)
        return target


@dataclass(frozen=True)
class Case:
    """``make(workspace)`` writes the input and returns ``(input, named)``: what the reader is
    given, and what the one line (or the warning of a skipped item) must name."""

    kind: str
    klass: str
    name: str
    make: Callable[[Workspace], tuple[Path, str]]
    outcome: str = "refused"  # or "skipped"
    setting: str | None = None  # the setting under which the item is skipped (None: always)

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.klass}-{self.name}"


# ---------------------------------------------------------------------------------------------
# Valid inputs


def png_bytes(side: int = 8, value: int = 0, mode: str = "RGB") -> bytes:
    pixels = np.random.default_rng(value).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    pixels[..., 0] = value
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` gray pixels, holding a few bytes of them."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def image_folder(folder: Path, per_class: int = 4) -> None:
    for label, name in enumerate(("a", "b")):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            (folder / name / f"{index}.png").write_bytes(png_bytes(8, 60 * label + index))


def shard_folder(folder: Path) -> None:
    from vtcc.data.shard_writer import write_shards

    image_folder(folder / "images", per_class=8)
    write_shards(folder / "images", folder / "shards", shard_size=8)
    shutil.rmtree(folder / "images")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype.hasobject)
    return buffer.getvalue()


def npy_declaring(shape: tuple[int, ...], descr: str = "<f4", data: bytes = b"\x00" * 64) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def npz_bytes(members: dict[str, bytes], compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return buffer.getvalue()


def inflate_zip_sizes(data: bytes, size: int = 0xFFFFFF00) -> bytes:
    """Every member's declared uncompressed size set to ``size`` (a zip bomb's header)."""
    data = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = data.find(signature)
        while start >= 0:
            data[start + offset : start + offset + 4] = struct.pack("<I", size)
            start = data.find(signature, start + 4)
    return bytes(data)


def features(count: int = 16, width: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(count) % 2
    return (rng.standard_normal((count, width)) + 5 * labels[:, None]).astype(np.float32), labels


def feature_npz(path: Path, **extra: np.ndarray) -> None:
    values, labels = features()
    np.savez(path, features=values, y=labels, **extra)


def store_folder(folder: Path, count: int = 10, dim: int = 4, views: int = 2, part_size: int = 5) -> None:
    """A complete feature store as :class:`vtcc.data.feature_store.FeatureStore` writes one."""
    from vtcc.data.feature_store import FeatureStore

    store = folder / "key.mm"
    (store / "done").mkdir(parents=True)
    layout = FeatureStore.layout(count, dim, views, part_size)
    for name, shape, dtype in (
        ("eval", (count, dim), np.float16),
        ("views", (views, count, dim), np.float16),
        ("labels", (count,), np.int64),
    ):
        np.save(store / f"{name}.npy", np.zeros(shape, dtype))
    (store / "meta.json").write_text(json.dumps(layout))
    for part in range(layout["parts"]):
        (store / "done" / str(part)).touch()


def stored_config() -> dict[str, Any]:
    """A resolved training config as a checkpoint stores it."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_train

    return OmegaConf.to_container(compose_train(Path("run")), resolve=True)


def checkpoint_bytes(config: dict[str, Any], legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    contents = {"vtcc_config": config, "state_dict": {"w": torch.zeros(250)}}
    torch.save(contents, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def inflate_storage(data: bytes) -> bytes:
    """A checkpoint whose tensor storage declares 2**28 elements (1 GiB) for its 250."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            member = source.read(name)
            if name.endswith("data.pkl"):  # the storage's numel, the first 250 after its type
                at = member.index(b"K\xfa", member.index(b"FloatStorage"))
                member = member[:at] + b"J" + struct.pack("<i", 2**28) + member[at + 2 :]
            target.writestr(name, member)
    return buffer.getvalue()


def with_stored_pickle(data: bytes, config: bytes) -> bytes:
    """The checkpoint ``data`` with its pickle replaced by ``{"vtcc_config": <config>, "state_dict":
    {}}``, ``config`` being the pickle opcodes that build the stored config."""

    def key(name: bytes) -> bytes:
        return b"X" + struct.pack("<I", len(name)) + name

    pickled = b"\x80\x02}(" + key(b"vtcc_config") + config + key(b"state_dict") + b"}u."
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            target.writestr(name, pickled if name.endswith("data.pkl") else source.read(name))
    return buffer.getvalue()


# A list nested 50,000 deep (past Python's recursion limit), and 60 levels of a list holding the
# level below twice: a few hundred bytes that a walk of the config meets as 2**60 values.
DEEP_CONFIG = b"]" * 50_000 + b"a" * 49_999
SHARED_CONFIG = b"(X\x01\x00\x00\x00xq\x00" + b"]h\x00ah\x00aq\x00" * 60 + b"t"


# ---------------------------------------------------------------------------------------------
# Every field of a schema, attacked


def fields(schema: Field, path: tuple = ()) -> Iterator[tuple[tuple, Field]]:
    """``(key path, field)`` of every field ``schema`` declares (a :class:`Maybe` as declared),
    nested records and a list's first item included."""
    if path:
        yield path, schema
    while isinstance(schema, Maybe):
        schema = schema.field
    if isinstance(schema, Record):
        for name, child in schema.fields.items():
            yield from fields(child, (*path, name))
    elif isinstance(schema, List):
        yield from fields(schema.item, (*path, 0))


def wrong_values(field: Field) -> list[tuple[str, Any]]:
    """Values of other types than ``field`` takes, and numbers beyond its range (null only
    where the field is not :class:`Maybe`)."""
    if isinstance(field, Maybe):
        return [(label, value) for label, value in wrong_values(field.field) if value is not None]
    if isinstance(field, Int):
        values = [("string", "7"), ("fraction", 7.5), ("boolean", True)]
        values += [("below", field.low - 1)] if field.low is not None else []
        return values + ([("above", field.high + 1)] if field.high is not None else [])
    if isinstance(field, Float):
        values = [("string", "0.5"), ("boolean", False), ("null", None)]
        values += [("below", field.low - 1)] if field.low is not None else []
        return values + ([("above", field.high + 1)] if field.high is not None else [])
    if isinstance(field, Bool):
        return [("number", 1), ("string", "true")]
    if isinstance(field, Str):
        return [("number", 5), ("list", ["a"])]
    if isinstance(field, List):
        return [("object", {"a": 1}), ("string", "x")]
    if isinstance(field, Record):
        return [("list", [1]), ("string", "x")]
    raise TypeError(f"no wrong values for {field!r}")


def with_value(document: Any, path: tuple, value: Any) -> Any:
    changed = copy.deepcopy(document)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


def record_cases(
    kind: str,
    schema: Field,
    document: Callable[[Workspace], Any],
    write: Callable[[Workspace, Any], tuple[Path, str]],
) -> list[Case]:
    """An interpolation string in every field (and in a key the schema does not declare) and
    every wrong value of every field of ``schema``, in the record ``document`` reads from a
    valid input (its lists not empty); ``write`` puts the changed record in place and returns
    the case's input."""
    cases = []

    def case(klass: str, name: str, path: tuple, value: Callable[[Workspace], Any]) -> Case:
        def make(workspace: Workspace) -> tuple[Path, str]:
            return write(workspace, with_value(document(workspace), path, value(workspace)))

        return Case(kind, klass, name, make)

    for path, field in fields(schema):
        where = ".".join(map(str, path))
        cases.append(case("interpolation", f"{where}=create", path, lambda w: payload(w.marker)))
        cases.append(case("interpolation", f"{where}=env", path, lambda w: "${oc.env:HOME}"))
        for label, value in wrong_values(field):
            cases.append(case("wrong_type", f"{where}={label}", path, lambda w, v=value: v))
    cases.append(case("interpolation", "undeclared_key", ("note",), lambda w: payload(w.marker)))
    return cases


# ---------------------------------------------------------------------------------------------
# The cases of each kind


def _file(name: str, data: bytes | Callable[[Workspace], bytes]):
    def make(workspace: Workspace) -> tuple[Path, str]:
        path = workspace.inputs / name
        path.write_bytes(data(workspace) if callable(data) else data)
        return path, name

    return make


def _fifo(name: str):
    def make(workspace: Workspace) -> tuple[Path, str]:
        os.mkfifo(workspace.inputs / name)
        return workspace.inputs / name, name

    return make


def _link(name: str, target: Callable[[Workspace], Path]):
    def make(workspace: Workspace) -> tuple[Path, str]:
        (workspace.inputs / name).symlink_to(target(workspace))
        return workspace.inputs / name, name

    return make


def _folder(name: str):
    def make(workspace: Workspace) -> tuple[Path, str]:
        (workspace.inputs / name).mkdir()
        return workspace.inputs / name, name

    return make


def _moved_out(workspace: Workspace, path: Path) -> None:
    """``path`` moved to the workspace's outside/ and linked back: a valid file out of the folder."""
    os.replace(path, workspace.outside / path.name)
    path.symlink_to(workspace.outside / path.name)


def _file_cases(kind: str, name: str, valid: bytes) -> list[Case]:
    """What every reader of one regular file meets: a FIFO, a link to a device, a link out of
    the folder, a folder, the file cut short."""
    return [
        Case(kind, "fifo", "fifo", _fifo(name)),
        Case(kind, "fifo", "link_to_fifo", _link(name, lambda w: w.outside / "pipe")),
        Case(kind, "link_out", "link_to_device", _link(name, lambda w: Path("/dev/zero"))),
        Case(kind, "link_out", "folder", _folder(name)),
        Case(
            kind, "truncated", "half", _file(name, valid.rstrip(b"\x00")[: len(valid.rstrip(b"\x00")) // 2])
        ),
        Case(kind, "truncated", "empty", _file(name, b"")),
    ]


TOY_RECORD = Record(
    name=Str(),
    count=Int(0, 100),
    ratio=Float(0.0, 1.0),
    flag=Bool(),
    items=List(Str(), max_length=4),
    inner=Record(side=Int(1, 64)),
    note=Maybe(Str()),
)
TOY = {"name": "x", "count": 3, "ratio": 0.5, "flag": True, "items": ["a"], "inner": {"side": 8}, "note": "n"}


def _json_cases() -> list[Case]:
    def write(workspace: Workspace, document: Any) -> tuple[Path, str]:
        (workspace.inputs / "toy.json").write_text(json.dumps(document))
        return workspace.inputs / "toy.json", "toy.json"

    valid = json.dumps(TOY).encode()
    return [
        *record_cases("json", TOY_RECORD, lambda w: TOY, write),
        *_file_cases("json", "toy.json", valid),
        Case("json", "link_out", "link_out_of_folder", _link("toy.json", lambda w: w.outside / "secret.txt")),
        Case(
            "json", "outside_root", "dotdot", lambda w: (w.inputs / ".." / "outside" / "secret.txt", "secret")
        ),
        Case("json", "wrong_type", "nan", _file("toy.json", valid.replace(b"0.5", b"NaN"))),
        Case("json", "wrong_type", "nested", _file("toy.json", b"[" * 100_000 + b"]" * 100_000)),
        Case("json", "wrong_type", "huge_integer", _file("toy.json", valid.replace(b"3", b"9" * 5000))),
        Case("json", "truncated", "not_utf8", _file("toy.json", b'{"name": "\xff\xfe"}')),
        Case("json", "beyond_size", "larger_than_any_index", _file("toy.json", b" " * (65 * 2**20) + valid)),
    ]


def _bytes_cases(kind: str) -> list[Case]:
    return [
        Case(kind, "fifo", "fifo", _fifo("data.bin")),
        Case(kind, "fifo", "link_to_fifo", _link("data.bin", lambda w: w.outside / "pipe")),
        Case(kind, "link_out", "link_to_device", _link("data.bin", lambda w: Path("/dev/zero"))),
        Case(kind, "link_out", "link_out_of_folder", _link("data.bin", lambda w: w.outside / "secret.txt")),
        Case(kind, "link_out", "folder", _folder("data.bin")),
        Case(
            kind, "outside_root", "dotdot", lambda w: (w.inputs / ".." / "outside" / "secret.txt", "secret")
        ),
        Case(kind, "beyond_size", "larger_than_asked", _file("data.bin", b"x" * 5000)),
    ]


def _npy_cases() -> list[Case]:
    valid = npy_bytes(np.ones((4, 3), np.float32))
    return [
        *_file_cases("npy", "a.npy", valid),
        Case("npy", "beyond_size", "shape", _file("a.npy", npy_declaring((10**6, 10**6)))),
        Case("npy", "beyond_size", "overflowing_shape", _file("a.npy", npy_declaring((2**62, 2**62)))),
        Case("npy", "beyond_size", "negative_shape", _file("a.npy", npy_declaring((-2, 3)))),
        Case("npy", "beyond_size", "whole_file_shape", _file("a.npy", npy_declaring((-1,)))),
        Case("npy", "wrong_type", "object", _file("a.npy", npy_bytes(np.array([{}, 1], dtype=object)))),
        Case("npy", "wrong_type", "zero_size_items", _file("a.npy", npy_declaring((10**12,), "|V0", b""))),
        Case("npy", "wrong_type", "header", _file("a.npy", valid.replace(b"'descr'", b"'dscr' "))),
        Case("npy", "link_out", "link_out_of_folder", _link("a.npy", lambda w: w.outside / "secret.txt")),
    ]


def _npz_cases() -> list[Case]:
    valid = npz_bytes({"features": npy_bytes(np.ones((4, 3), np.float32))})
    return [
        *_file_cases("npz", "a.npz", valid),
        Case(
            "npz",
            "beyond_size",
            "member_shape",
            _file("a.npz", npz_bytes({"features": npy_declaring((10**9, 1000))})),
        ),
        Case(
            "npz",
            "bomb",
            "declared_size",
            _file(
                "a.npz", inflate_zip_sizes(npz_bytes({"features": npy_declaring((10**9,))}, compress=True))
            ),
        ),
        Case(
            "npz",
            "wrong_type",
            "object",
            _file("a.npz", npz_bytes({"x": npy_bytes(np.array([{}], dtype=object))})),
        ),
        Case(
            "npz",
            "truncated",
            "member",
            _file("a.npz", npz_bytes({"features": npy_bytes(np.ones((4, 3)))[:-16]})),
        ),
        Case("npz", "link_out", "link_out_of_folder", _link("a.npz", lambda w: w.outside / "secret.txt")),
    ]


def _image_cases(kind: str = "image", name: str = "a.png") -> list[Case]:
    return [
        *_file_cases(kind, name, png_bytes(16)),
        Case(kind, "bomb", "declared_pixels", _file(name, png_declaring(100_000, 100_000))),
        Case(kind, "bomb", "pixels_over_the_warning", _file(name, png_declaring(10_000, 10_000))),
        Case(kind, "wrong_type", "text", _file(name, b"not an image\n")),
        Case(kind, "link_out", "link_to_a_secret", _link(name, lambda w: w.outside / "secret.txt")),
    ]


def _image_folder_cases() -> list[Case]:
    """A bad file among a folder's images: refused (named) by default, skipped (named) with
    ``skip_corrupt=true``; an entry that is no regular file (a FIFO, a link to one, to a device)
    is never opened: skipped and named by the listing."""

    def bad(name: str, write: Callable[[Workspace, Path], None], outcome: str = "refused"):
        def make(workspace: Workspace) -> tuple[Path, str]:
            folder = workspace.copy_base("images", image_folder)
            write(workspace, folder / "a" / name)
            return folder, name

        return make

    cases = []
    for outcome, setting in (("refused", None), ("skipped", "data.dataset.skip_corrupt=true")):
        cases += [
            Case(
                "image_folder",
                "truncated",
                f"half_{outcome}",
                bad("9.png", lambda w, p: p.write_bytes(png_bytes(16)[:60])),
                outcome,
                setting,
            ),
            Case(
                "image_folder",
                "bomb",
                f"declared_pixels_{outcome}",
                bad("9.png", lambda w, p: p.write_bytes(png_declaring(100_000, 100_000))),
                outcome,
                setting,
            ),
            Case(
                "image_folder",
                "link_out",
                f"link_to_a_secret_{outcome}",
                bad("9.png", lambda w, p: p.symlink_to(w.outside / "secret.txt")),
                outcome,
                setting,
            ),
        ]
    return cases + [
        Case("image_folder", "fifo", "fifo", bad("9.png", lambda w, p: os.mkfifo(p)), "skipped"),
        Case(
            "image_folder",
            "fifo",
            "link_to_fifo",
            bad("9.png", lambda w, p: p.symlink_to(w.outside / "pipe")),
            "skipped",
        ),
        Case(
            "image_folder",
            "link_out",
            "link_to_device",
            bad("9.png", lambda w, p: p.symlink_to("/dev/zero")),
            "skipped",
        ),
    ]


def _npz_images_cases() -> list[Case]:
    images = np.zeros((4, 8, 8), np.uint8)
    valid = npz_bytes({"x": npy_bytes(images), "y": npy_bytes(np.arange(4))})
    return [
        *_file_cases("npz_images", "images.npz", valid),
        Case(
            "npz_images",
            "beyond_size",
            "x_shape",
            _file("images.npz", npz_bytes({"x": npy_declaring((10**6, 1000, 1000), "|u1")})),
        ),
        Case(
            "npz_images",
            "wrong_type",
            "x_object",
            _file("images.npz", npz_bytes({"x": npy_bytes(np.array([{}], dtype=object))})),
        ),
        Case(
            "npz_images",
            "wrong_type",
            "x_float",
            _file("images.npz", npz_bytes({"x": npy_bytes(images.astype(np.float32))})),
        ),
        Case(
            "npz_images",
            "wrong_type",
            "x_flat",
            _file("images.npz", npz_bytes({"x": npy_bytes(np.zeros((4, 8), np.uint8))})),
        ),
        Case(
            "npz_images",
            "wrong_type",
            "y_strings",
            _file("images.npz", npz_bytes({"x": npy_bytes(images), "y": npy_bytes(np.array(list("abcd")))})),
        ),
        Case(
            "npz_images",
            "wrong_type",
            "y_length",
            _file("images.npz", npz_bytes({"x": npy_bytes(images), "y": npy_bytes(np.arange(3))})),
        ),
        Case(
            "npz_images",
            "bomb",
            "declared_size",
            _file("images.npz", inflate_zip_sizes(npz_bytes({"x": npy_bytes(images)}, compress=True))),
        ),
    ]


def _feature_file_cases() -> list[Case]:
    values, labels = features()
    count = len(values)

    def npz_with(**arrays: Any):
        def data(workspace: Workspace) -> bytes:
            members = {"features": values, "y": labels}
            members.update({k: v(workspace) if callable(v) else v for k, v in arrays.items()})
            return npz_bytes({k: npy_bytes(np.asarray(v)) for k, v in members.items() if v is not None})

        return _file("features.npz", data)

    def listed(path: Callable[[Workspace], Any]):
        """Every row's image at a valid path but row 0's."""

        def paths(workspace: Workspace) -> np.ndarray:
            image = workspace.inputs / "img.png"
            image.write_bytes(png_bytes(8))
            return np.array([str(path(workspace))] + [str(image)] * (count - 1))

        return paths

    valid = npz_bytes({"features": npy_bytes(values), "y": npy_bytes(labels)})
    return [
        *_file_cases("feature_file", "features.npz", valid),
        Case(
            "feature_file", "beyond_size", "npy_shape", _file("features.npy", npy_declaring((10**6, 10**6)))
        ),
        Case(
            "feature_file",
            "beyond_size",
            "npz_shape",
            _file("features.npz", npz_bytes({"features": npy_declaring((10**9, 64))})),
        ),
        Case("feature_file", "bomb", "declared_size", _file("features.npz", inflate_zip_sizes(valid))),
        Case(
            "feature_file",
            "wrong_type",
            "object",
            _file("features.npy", npy_bytes(np.array([[{}], [{}]], dtype=object))),
        ),
        Case(
            "feature_file",
            "wrong_type",
            "strings",
            _file("features.npy", npy_bytes(np.array([["a"], ["b"]]))),
        ),
        Case("feature_file", "wrong_type", "y_float", npz_with(y=np.zeros(count))),
        Case("feature_file", "wrong_type", "paths_numbers", npz_with(paths=np.arange(count))),
        Case("feature_file", "wrong_type", "paths_nul", npz_with(paths=np.array(["a\x00b"] * count))),
        Case(
            "feature_file",
            "interpolation",
            "paths_create",
            npz_with(paths=lambda w: np.array([payload(w.marker)] * count)),
        ),
        Case(
            "feature_file", "interpolation", "paths_env", npz_with(paths=np.array(["${oc.env:HOME}"] * count))
        ),
        Case(
            "feature_file",
            "fifo",
            "path_to_fifo",
            lambda w: (npz_with(paths=listed(lambda w: w.outside / "pipe"))(w)[0], "pipe"),
            "skipped",
        ),
        Case(
            "feature_file",
            "link_out",
            "path_to_device",
            lambda w: (npz_with(paths=listed(lambda w: "/dev/zero"))(w)[0], "/dev/zero"),
            "skipped",
        ),
        Case(
            "feature_file",
            "outside_root",
            "path_to_a_secret",
            lambda w: (npz_with(paths=listed(lambda w: w.outside / "secret.txt"))(w)[0], "secret.txt"),
            "skipped",
        ),
        Case(
            "feature_file",
            "bomb",
            "path_to_a_bomb",
            lambda w: (
                npz_with(paths=listed(lambda w: _write(w.outside / "bomb.png", png_declaring(10**5, 10**5))))(
                    w
                )[0],
                "bomb.png",
            ),
            "skipped",
        ),
    ]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _shards_cases() -> list[Case]:
    from vtcc.data.probe import PROBE_RECORD
    from vtcc.data.shard_index import INDEX_RECORD
    from vtcc.data.shard_writer import _members

    schema = Record(**{**INDEX_RECORD.fields, "sample": PROBE_RECORD})

    def folder(workspace: Workspace) -> Path:
        return workspace.copy_base("shards", shard_folder) / "shards"

    def index(workspace: Workspace) -> Any:
        return json.loads((folder(workspace) / "shards.json").read_text())

    def write(workspace: Workspace, document: Any) -> tuple[Path, str]:
        root = workspace.inputs / "shards" / "shards"
        (root / "shards.json").write_text(json.dumps(document))
        return root, "shards.json"

    def changed(name: str, change: Callable[[Workspace, Path], None]):
        def make(workspace: Workspace) -> tuple[Path, str]:
            root = folder(workspace)
            change(workspace, root)
            return root, name

        return make

    def offsets(**arrays: Any):
        def change(workspace: Workspace, root: Path) -> None:
            with np.load(root / "offsets.npz") as archive:
                current = {k: archive[k] for k in archive.files}
            current.update(arrays)
            np.savez(root / "offsets.npz", **current)

        return change

    def replace(name: str, data: bytes | Callable[[Workspace], bytes]):
        def change(workspace: Workspace, root: Path) -> None:
            (root / name).unlink()
            (root / name).write_bytes(data(workspace) if callable(data) else data)

        return change

    def special(name: str, make: Callable[[Workspace, Path], None]):
        def change(workspace: Workspace, root: Path) -> None:
            (root / name).unlink()
            make(workspace, root / name)

        return change

    def bad_image(data: bytes):
        """Image 0 of shard 0 replaced by ``data``; the offsets written for it (a valid index)."""

        def change(workspace: Workspace, root: Path) -> None:
            tar = root / "shard-000000.tar"
            with tarfile.open(tar) as archive:
                members = [(m, archive.extractfile(m).read()) for m in archive]
            with tarfile.open(tar, "w") as archive:
                for member, content in members:
                    if member.name.startswith("000000000.") and not member.name.endswith((".json", ".cls")):
                        content = data
                    member.size = len(content)
                    archive.addfile(member, io.BytesIO(content))
            rows = _members(tar, 0)
            with np.load(root / "offsets.npz") as archive:
                current = {k: archive[k].copy() for k in archive.files}
            current["offset"][: len(rows)], current["size"][: len(rows)] = rows[:, 1], rows[:, 2]
            np.savez(root / "offsets.npz", **current)

        return change

    count = 16
    return [
        *record_cases("shards", schema, index, write),
        Case(
            "shards",
            "fifo",
            "index_fifo",
            changed("shards.json", special("shards.json", lambda w, p: os.mkfifo(p))),
        ),
        Case(
            "shards",
            "fifo",
            "offsets_fifo",
            changed("offsets.npz", special("offsets.npz", lambda w, p: os.mkfifo(p))),
        ),
        Case(
            "shards",
            "fifo",
            "shard_fifo",
            changed("shard-000001.tar", special("shard-000001.tar", lambda w, p: os.mkfifo(p))),
        ),
        Case(
            "shards",
            "fifo",
            "shard_link_to_fifo",
            changed(
                "shard-000001.tar", special("shard-000001.tar", lambda w, p: p.symlink_to(w.outside / "pipe"))
            ),
        ),
        Case(
            "shards",
            "link_out",
            "index_link_out",
            changed("shards.json", lambda w, r: _moved_out(w, r / "shards.json")),
        ),
        Case(
            "shards",
            "link_out",
            "offsets_link_out",
            changed("offsets.npz", lambda w, r: _moved_out(w, r / "offsets.npz")),
        ),
        Case(
            "shards",
            "link_out",
            "shard_link_out",
            changed("shard-000001.tar", lambda w, r: _moved_out(w, r / "shard-000001.tar")),
        ),
        Case(
            "shards",
            "link_out",
            "shard_link_to_a_secret",
            changed(
                "shard-000001.tar",
                special("shard-000001.tar", lambda w, p: p.symlink_to(w.outside / "secret.txt")),
            ),
        ),
        Case(
            "shards",
            "link_out",
            "shard_link_to_device",
            changed("shard-000001.tar", special("shard-000001.tar", lambda w, p: p.symlink_to("/dev/zero"))),
        ),
        Case(
            "shards",
            "outside_root",
            "shard_dotdot",
            changed(
                "shards.json",
                lambda w, r: _edit_json(r / "shards.json", lambda d: d["shards"][1].update(file="..")),
            ),
        ),
        Case(
            "shards",
            "outside_root",
            "shard_absolute",
            changed(
                "shards.json",
                lambda w, r: _edit_json(
                    r / "shards.json", lambda d: d["shards"][1].update(file=str(w.outside / "secret.txt"))
                ),
            ),
        ),
        Case(
            "shards",
            "outside_root",
            "shard_twice",
            changed(
                "shards.json",
                lambda w, r: _edit_json(
                    r / "shards.json", lambda d: d["shards"][1].update(file=d["shards"][0]["file"])
                ),
            ),
        ),
        Case(
            "shards",
            "beyond_size",
            "absurd_count",
            changed(
                "shards.json", lambda w, r: _edit_json(r / "shards.json", lambda d: d.update(count=2**40))
            ),
        ),
        Case(
            "shards",
            "beyond_size",
            "absurd_shard_list",
            changed(
                "shards.json",
                lambda w, r: _edit_json(r / "shards.json", lambda d: d.update(shards=d["shards"] * 20_000)),
            ),
        ),
        Case(
            "shards",
            "beyond_size",
            "offset",
            changed("shard-000000.tar", offsets(offset=np.full(count, 10**12))),
        ),
        Case(
            "shards", "beyond_size", "size", changed("shard-000000.tar", offsets(size=np.full(count, 10**12)))
        ),
        Case(
            "shards",
            "beyond_size",
            "negative_offset",
            changed("shard-000000.tar", offsets(offset=np.full(count, -5))),
        ),
        Case(
            "shards",
            "beyond_size",
            "shard_number",
            changed("offsets.npz", offsets(shard=np.full(count, 10**6))),
        ),
        Case(
            "shards",
            "beyond_size",
            "offsets_length",
            changed("offsets.npz", offsets(label=np.zeros(3, np.int64))),
        ),
        Case(
            "shards", "wrong_type", "offsets_float", changed("offsets.npz", offsets(offset=np.zeros(count)))
        ),
        Case(
            "shards",
            "wrong_type",
            "offsets_object",
            changed(
                "offsets.npz",
                replace("offsets.npz", npz_bytes({"shard": npy_bytes(np.array([{}], dtype=object))})),
            ),
        ),
        Case(
            "shards",
            "beyond_size",
            "offsets_declared_shape",
            changed(
                "offsets.npz",
                replace(
                    "offsets.npz",
                    npz_bytes(
                        {k: npy_declaring((10**9,), "<i8") for k in ("shard", "offset", "size", "label")}
                    ),
                ),
            ),
        ),
        Case(
            "shards",
            "truncated",
            "index",
            changed("shards.json", replace("shards.json", b'{"format": "vtcc-shards/1", "count": 1')),
        ),
        Case(
            "shards",
            "truncated",
            "offsets",
            changed("offsets.npz", replace("offsets.npz", b"PK\x03\x04 cut")),
        ),
        Case(
            "shards",
            "truncated",
            "shard",
            changed(
                "shard-000000.tar",
                lambda w, r: (r / "shard-000000.tar").write_bytes(
                    (r / "shard-000000.tar").read_bytes()[:1500]
                ),
            ),
        ),
        Case("shards", "truncated", "image", changed("image 0 of", bad_image(png_bytes(16)[:50]))),
        Case("shards", "bomb", "image", changed("image 0 of", bad_image(png_declaring(100_000, 100_000)))),
    ]


def _edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _sample_tar(meta: Any, label: bytes = b"1") -> bytes:
    """A shard of one sample as vtcc-shards writes it: its image, ``meta`` as its JSON, its class."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for suffix, content in (("png", png_bytes(8)), ("json", json.dumps(meta).encode()), ("cls", label)):
            info = tarfile.TarInfo(f"000000000.{suffix}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _shard_tar_cases() -> list[Case]:
    from vtcc.data.shard_index import SAMPLE_RECORD

    tar_with = _sample_tar

    def write(workspace: Workspace, document: Any) -> tuple[Path, str]:
        (workspace.inputs / "s.tar").write_bytes(tar_with(document))
        return workspace.inputs / "s.tar", "s.tar"

    valid = tar_with({"index": 0, "path": "a/0.png"})
    return [
        *record_cases("shard_tar", SAMPLE_RECORD, lambda w: {"index": 0, "path": "a/0.png"}, write),
        *_file_cases("shard_tar", "s.tar", valid),
        Case(
            "shard_tar",
            "wrong_type",
            "label",
            _file("s.tar", tar_with({"index": 0, "path": "a"}, b"${oc.env:HOME}")),
        ),
        Case("shard_tar", "beyond_size", "member_size", _file("s.tar", _tar_declaring(10**9))),
    ]


def _tar_declaring(size: int) -> bytes:
    """A tar whose one member's header declares ``size`` bytes, followed by a few."""
    info = tarfile.TarInfo("000000000.png")
    info.size = size
    return info.tobuf() + png_bytes(8)


def _feature_store_cases() -> list[Case]:
    from vtcc.data.feature_store import META_RECORD

    def store(workspace: Workspace) -> Path:
        return workspace.copy_base("cache", store_folder) / "key.mm"

    def meta(workspace: Workspace) -> Any:
        return json.loads((store(workspace) / "meta.json").read_text())

    def write(workspace: Workspace, document: Any) -> tuple[Path, str]:
        root = workspace.inputs / "cache" / "key.mm"
        (root / "meta.json").write_text(json.dumps(document))
        return root, "meta.json"

    def changed(name: str, change: Callable[[Workspace, Path], None]):
        def make(workspace: Workspace) -> tuple[Path, str]:
            root = store(workspace)
            change(workspace, root)
            return root, name

        return make

    def special(name: str, make: Callable[[Workspace, Path], None]):
        def change(workspace: Workspace, root: Path) -> None:
            (root / name).unlink()
            make(workspace, root / name)

        return change

    return [
        *record_cases("feature_store", META_RECORD, meta, write),
        Case(
            "feature_store",
            "beyond_size",
            "absurd_parts",
            changed("meta.json", lambda w, r: _edit_json(r / "meta.json", lambda d: d.update(parts=2**40))),
        ),
        Case(
            "feature_store",
            "fifo",
            "meta_fifo",
            changed("key.mm", special("meta.json", lambda w, p: os.mkfifo(p))),
        ),
        Case(
            "feature_store",
            "fifo",
            "eval_fifo",
            changed("eval.npy", special("eval.npy", lambda w, p: os.mkfifo(p))),
        ),
        Case(
            "feature_store",
            "link_out",
            "eval_link_out",
            changed("eval.npy", lambda w, r: _moved_out(w, r / "eval.npy")),
        ),
        Case(
            "feature_store",
            "link_out",
            "meta_link_out",
            changed("key.mm", lambda w, r: _moved_out(w, r / "meta.json")),
        ),
        Case(
            "feature_store",
            "link_out",
            "views_link_to_device",
            changed("views.npy", special("views.npy", lambda w, p: p.symlink_to("/dev/zero"))),
        ),
        Case(
            "feature_store",
            "beyond_size",
            "eval_shape",
            changed(
                "eval.npy", special("eval.npy", lambda w, p: p.write_bytes(npy_declaring((10**9, 4), "<f2")))
            ),
        ),
        Case(
            "feature_store",
            "wrong_type",
            "eval_dtype",
            changed(
                "eval.npy",
                special("eval.npy", lambda w, p: p.write_bytes(npy_bytes(np.zeros((10, 4), np.float32)))),
            ),
        ),
        Case(
            "feature_store",
            "wrong_type",
            "views_shape",
            changed(
                "views.npy",
                special("views.npy", lambda w, p: p.write_bytes(npy_bytes(np.zeros((3, 10, 4), np.float16)))),
            ),
        ),
        Case(
            "feature_store",
            "truncated",
            "labels",
            changed(
                "labels.npy",
                special("labels.npy", lambda w, p: p.write_bytes(npy_bytes(np.zeros(10, np.int64))[:-8])),
            ),
        ),
    ]


def leaves(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list) and node:
        for index, value in enumerate(node):
            yield from leaves(value, (*path, index))
    else:
        yield path, node


# Stored settings nothing reads back (an interpolation is refused there too; a wrong type is moot).
UNREAD_SETTINGS = {"data_defaults": "a record of the choices settings from the data made, for people"}


def _checkpoint_cases() -> list[Case]:
    """The file (a FIFO, cut short, the legacy format, a storage declaring more than it holds)
    and the config it stores: an interpolation in every string, a wrong type in every setting."""
    config = stored_config()

    def stored(change: Callable[[Workspace, dict], dict], legacy: bool = False):
        return _file("run.ckpt", lambda w: checkpoint_bytes(change(w, copy.deepcopy(config)), legacy))

    cases = [
        *_file_cases("checkpoint", "run.ckpt", checkpoint_bytes(config)),
        Case("checkpoint", "wrong_type", "legacy_format", stored(lambda w, c: c, legacy=True)),
        Case(
            "checkpoint",
            "beyond_size",
            "storage",
            _file("run.ckpt", inflate_storage(checkpoint_bytes(config))),
        ),
        Case(
            "checkpoint",
            "wrong_type",
            "target",
            stored(lambda w, c: with_value(c, ("data", "_target_"), "os.system")),
        ),
        *[
            Case(
                "checkpoint",
                "beyond_size",
                name,
                _file("run.ckpt", lambda w, b=built: with_stored_pickle(checkpoint_bytes(config), b)),
            )
            for name, built in (("deep_config", DEEP_CONFIG), ("shared_config", SHARED_CONFIG))
        ],
    ]
    for path, value in leaves(config):
        where = ".".join(map(str, path))
        if isinstance(value, str):
            cases.append(
                Case(
                    "checkpoint",
                    "interpolation",
                    where,
                    stored(lambda w, c, p=path: with_value(c, p, payload(w.marker))),
                )
            )
        wrong = [["list"]] if isinstance(value, str) else [{"a": "mapping"}]
        if path[-1] != "_target_" and path[0] not in UNREAD_SETTINGS:
            cases.append(
                Case(
                    "checkpoint",
                    "wrong_type",
                    where,
                    stored(lambda w, c, p=path, v=wrong[0]: with_value(c, p, v)),
                )
            )
    return cases


def _path_list_cases() -> list[Case]:
    def listing(lines: Callable[[Workspace], list[str]]):
        def data(workspace: Workspace) -> bytes:
            (workspace.inputs / "img.png").write_bytes(png_bytes(8))
            return "\n".join(["img.png", *lines(workspace)]).encode()

        return data

    return [
        *[c for c in _file_cases("path_list", "list.txt", b"img.png\n") if c.klass != "truncated"],
        Case(
            "path_list",
            "fifo",
            "listed_fifo",
            lambda w: (_file("list.txt", listing(lambda w: [str(w.outside / "pipe")]))(w)[0], "pipe"),
        ),
        Case(
            "path_list",
            "link_out",
            "listed_device",
            lambda w: (_file("list.txt", listing(lambda w: ["/dev/zero"]))(w)[0], "/dev/zero"),
        ),
        Case(
            "path_list",
            "interpolation",
            "line_create",
            _file("list.txt", listing(lambda w: [payload(w.marker)])),
        ),
        Case(
            "path_list", "interpolation", "line_env", _file("list.txt", listing(lambda w: ["${oc.env:HOME}"]))
        ),
        Case("path_list", "wrong_type", "nul", _file("list.txt", listing(lambda w: ["a\x00b.png"]))),
        Case("path_list", "wrong_type", "not_utf8", _file("list.txt", b"\xff\xfe.png\n")),
    ]


def _run_log_cases() -> list[Case]:
    """The run folder's CSV log and environment beside a checkpoint: unreadable ones are skipped
    and named (the report goes without curves or environment)."""
    log = b"epoch,step,train/loss_epoch,val/acc\n0,1,0.5,0.7\n"
    environment = b"packages:\n  torch: '2'\n"
    return [
        *[
            Case("run_log", c.klass, c.name, c.make, "skipped")
            for c in _file_cases("run_log", "metrics.csv", log)
            if c.klass != "truncated"  # a CSV cut short is a shorter CSV
        ],
        Case("run_log", "wrong_type", "epoch", _file("metrics.csv", log.replace(b"0,1", b"x,1")), "skipped"),
        Case(
            "run_log",
            "wrong_type",
            "value",
            _file("metrics.csv", log.replace(b"0.5", b"${oc.env:HOME}")),
            "skipped",
        ),
        Case(
            "run_log",
            "beyond_size",
            "field",
            _file("metrics.csv", log + b"1,2," + b"9" * 200_000 + b",0.1\n"),
            "skipped",
        ),
        *[
            Case("run_environment", c.klass, c.name, c.make, "skipped")
            for c in _file_cases("run_environment", "environment.yaml", environment)
            if c.klass != "truncated"  # YAML cut short is shorter YAML
        ],
        Case(
            "run_environment",
            "wrong_type",
            "python_object",
            _file("environment.yaml", b"!!python/object/apply:os.system ['true']\n"),
            "skipped",
        ),
        Case(
            "run_environment",
            "beyond_size",
            "large",
            _file("environment.yaml", b"a: " + b"x" * (2**21) + b"\n"),
            "skipped",
        ),
        *[  # nested past the recursion limit of YAML's reader, or of its writer (the report's)
            Case(
                "run_environment",
                "beyond_size",
                f"nested_{depth}",
                _file("environment.yaml", b"a: " + b"[" * depth + b"]" * depth + b"\n"),
                "skipped",
            )
            for depth in (400, 100_000)
        ],
    ]


CURATION = {
    "format": "vtcc-curation",
    "version": 1,
    "num_clusters": 4,
    "names": [{"cluster": 0, "name": "cats"}],
    "merges": [[1, 2]],
    "splits": [{"cluster": 3, "into": [3, 4], "centroids": [[0.0, 1.0], [1.0, 0.0]]}],
    "moves": [{"path": "a.png", "cluster": 1}],
    "outliers": ["b.png"],
}


def _curation_cases() -> list[Case]:
    from vtcc.curation import CURATION_RECORD

    def write(workspace: Workspace, document: Any) -> tuple[Path, str]:
        (workspace.inputs / "curation.json").write_text(json.dumps(document))
        return workspace.inputs / "curation.json", "curation.json"

    return [
        *record_cases("curation", CURATION_RECORD, lambda w: CURATION, write),
        *_file_cases("curation", "curation.json", json.dumps(CURATION).encode()),
        Case("curation", "beyond_size", "large", _file("curation.json", b" " * (33 * 2**20) + b"{}")),
        *[
            Case("curation", "outside_root", name, _curation_naming(target), "skipped")
            for name, target in (
                ("dotdot", lambda w: "../outside/secret.txt"),
                ("absolute", lambda w: str(w.outside / "secret.txt")),
                ("fifo", lambda w: str(w.outside / "pipe")),
            )
        ],
    ]


def _curation_naming(target: Callable[[Workspace], str]):
    """A curation (of any run of K >= 2: no split, no merge) whose move and outlier name
    ``target``, a file outside the command's images: never opened, applied to nothing, and named
    in a warning."""

    def make(workspace: Workspace) -> tuple[Path, str]:
        document = {
            **CURATION,
            "num_clusters": None,
            "splits": [],
            "merges": [],
            "outliers": [target(workspace)],
        }
        document["moves"] = [{"path": target(workspace), "cluster": 1}]
        (workspace.inputs / "curation.json").write_text(json.dumps(document))
        return workspace.inputs / "curation.json", target(workspace)

    return make


# The valid input each kind of typed record's cases start from: read without a word (else its
# cases would be refused for another reason than theirs).
VALID_RECORDS: dict[str, Callable[[Workspace], tuple[Path, str]]] = {
    "json": lambda w: _file("toy.json", json.dumps(TOY).encode())(w),
    "curation": lambda w: _file("curation.json", json.dumps(CURATION).encode())(w),
    "shard_tar": lambda w: _file("s.tar", _sample_tar({"index": 0, "path": "a/0.png"}))(w),
    "shards": lambda w: (w.copy_base("shards", shard_folder) / "shards", "shards.json"),
    "feature_store": lambda w: (w.copy_base("cache", store_folder) / "key.mm", "meta.json"),
}


def all_cases() -> list[Case]:
    """Every hostile case, of every reader kind."""
    cases = [
        *_bytes_cases("bytes"),
        *_bytes_cases("range"),
        *_json_cases(),
        *_npy_cases(),
        *_npz_cases(),
        *_image_cases(),
        *_image_folder_cases(),
        *_npz_images_cases(),
        *_feature_file_cases(),
        *_shards_cases(),
        *_shard_tar_cases(),
        *_feature_store_cases(),
        *_checkpoint_cases(),
        *_path_list_cases(),
        *_run_log_cases(),
        *_curation_cases(),
    ]
    ids = [case.id for case in cases]
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1][:5]
    return cases
