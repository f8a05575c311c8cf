"""The one way vtcc reads a file it did not just write: typed, bounded, regular files only.

Everything a run reads from a data file (index files, offsets, feature files and their paths,
store metadata, a sample's statistics, stored configs) enters through the readers here:

- :func:`open_regular` opens only regular files: a FIFO, device, socket or folder is refused in
  one line before a byte is read (opened non-blocking, so a FIFO without a writer cannot hang the
  open), and ``inside=<folder>`` refuses a file whose real path lies outside that folder (a
  symbolic link out of it);
- every size and count is checked against the file's real size before anything is allocated:
  :func:`read_bytes`, :func:`read_range`, :func:`load_npy` and :func:`load_npz` (the declared
  shape of every array against the bytes that hold it), :func:`open_image` (PIL's pixel limit,
  its warning an error);
- :func:`read_json_record` parses JSON into plain typed values checked against a small declared
  schema (:class:`Int`, :class:`Float`, :class:`Bool`, :class:`Str`, :class:`List`,
  :class:`Record`, :class:`Maybe`); a string anywhere in the file that holds ``${`` is refused
  (nothing read from a data file is ever resolved as an interpolation), and so is a wrong type;
- a malformed file, ``MemoryError`` or a decompression bomb becomes :class:`UnreadableFile`, a
  :class:`~vtcc.errors.ConfigError` whose one line names the file.

:data:`READERS` lists every kind of file vtcc reads (:func:`reader` registers one): the hostile
input suite (``tests/test_hostile.py``) holds cases for each, and fails for a kind it lacks.

Core layer: the standard library, NumPy, PIL and :mod:`vtcc.errors` only.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import io
import json
import math
import os
import stat
import struct
import threading
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
from PIL import Image

from vtcc.errors import ConfigError

Reader = TypeVar("Reader", bound=Callable[..., Any])

READERS: dict[str, Callable[..., Any]] = {}  # kind of file -> the function that reads it
INTERPOLATION = "${"
JSON_LIMIT = 64 * 2**20  # bytes: an index or metadata file larger than this is not one vtcc wrote
HEADER_LIMIT = 10_000  # bytes of an .npy header (NumPy's own default)
DEFLATE_RATIO = 1100  # deflate's largest possible expansion is about 1032:1
MAX_NPZ_MEMBERS = 10_000


def reader(kind: str) -> Callable[[Reader], Reader]:
    """Register the decorated function as the reader of ``kind`` (see :data:`READERS`)."""

    def register(function: Reader) -> Reader:
        READERS[kind] = function
        return function

    return register


class UnreadableFile(ConfigError):
    """A file vtcc cannot read as what it should be; ``path`` names it, ``reason`` says why (the
    message is one line: the file, the reason and the fix)."""

    def __init__(self, path: Any, reason: str | None = None, fix: str = "", field: str | None = None) -> None:
        if reason is None:  # rebuilt from its message alone (as torch re-raises a loader worker's error)
            self.path, self.reason, self.field = "", str(path), None
            super().__init__(str(path))
            return
        self.path, self.reason, self.field = str(path), _one_line(reason), field
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where} {self.reason}" + (f": {fix}" if fix else ""))


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Regular files, bounded reads


def _check_inside(path: Path, inside: str | Path | None) -> None:
    if inside is None:
        return
    folder = os.path.realpath(inside)
    real = os.path.realpath(path)
    if os.path.commonpath([folder, real]) != folder:
        raise UnreadableFile(
            path, f"lies outside {inside} (a link out of the folder)", "copy the file itself into the folder"
        )


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(
    path: str | Path, *, follow_links: bool = True, inside: str | Path | None = None
) -> IO[bytes]:
    """``path`` opened for binary reading, only when it is a regular file (a FIFO, device, socket
    or folder is refused in one line, and opening never waits for a writer). ``follow_links=False``
    refuses a symbolic link; ``inside``: the file's real path must lie in that folder."""
    path = Path(path)
    _check_inside(path, inside)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= os.O_NOFOLLOW
    try:
        handle = os.open(path, flags)
    except FileNotFoundError:
        raise UnreadableFile(path, "does not exist", "check the path") from None
    except ValueError:  # a NUL in the path
        raise UnreadableFile(repr(str(path)), "is not a path a file can have (it holds a NUL)") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnreadableFile(
                path, "is a symbolic link, which is not followed here", "copy the file"
            ) from None
        raise UnreadableFile(path, f"cannot be opened ({error.strerror or error})") from None
    try:
        mode = os.fstat(handle).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableFile(path, f"is {_kind(mode)}, not a regular file", "give a regular file")
        flags = fcntl.fcntl(handle, fcntl.F_GETFL)
        fcntl.fcntl(handle, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return os.fdopen(handle, "rb")
    except BaseException:
        os.close(handle)
        raise


def check_regular(path: str | Path, *, inside: str | Path | None = None) -> int:
    """The size of ``path`` when it is a regular file (links followed; ``inside`` as for
    :func:`open_regular`); one line otherwise. For files handed on by path (a copy, a link)."""
    with open_regular(path, inside=inside) as handle:
        return os.fstat(handle.fileno()).st_size


def file_size(handle: IO[bytes]) -> int:
    return os.fstat(handle.fileno()).st_size


@contextmanager
def bounded(path: Any, what: str = "file") -> Iterator[None]:
    """``MemoryError`` in the block becomes one line naming ``path`` (what the file declares does
    not fit in memory)."""
    try:
        yield
    except MemoryError:
        raise UnreadableFile(path, f"declares a {what} larger than this machine's memory") from None


@reader("bytes")
def read_bytes(path: str | Path, limit: int | None = None, *, inside: str | Path | None = None) -> bytes:
    """The whole of a regular file, refused when larger than ``limit`` bytes (None: any size,
    read as the real size says, never more)."""
    with open_regular(path, inside=inside) as handle:
        size = file_size(handle)
        if limit is not None and size > limit:
            raise UnreadableFile(path, f"holds {size} bytes, more than the {limit} such a file ever needs")
        with bounded(path):
            data = handle.read(size)
    if len(data) != size:
        raise UnreadableFile(path, "changed while it was read", "read it again")
    return data


@reader("range")
def read_range(path: str | Path, offset: int, size: int, *, inside: str | Path | None = None) -> bytes:
    """``size`` bytes at ``offset`` of a regular file; a range beyond the file's end is refused."""
    with open_regular(path, inside=inside) as handle:
        real = file_size(handle)
        if offset < 0 or size < 0 or offset + size > real:
            raise UnreadableFile(
                path,
                f"has {real} bytes, and bytes {offset} to {offset + size} were asked of it",
                "write it again",
            )
        handle.seek(offset)
        data = handle.read(size)
    if len(data) != size:
        raise UnreadableFile(path, "changed while it was read", "read it again")
    return data


# ---------------------------------------------------------------------------------------------
# Typed records from JSON


class Invalid(Exception):
    """A value that does not fit its field (raised inside the schema, reported with the file)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}"
    )


class Field:
    expected = "a value"

    def check(self, value: Any, field: str) -> Any:
        raise NotImplementedError

    def wrong(self, value: Any, field: str) -> Invalid:
        return Invalid(field, f"must be {self.expected}, not {_type_name(value)}")


class Int(Field):
    def __init__(self, low: int | None = 0, high: int | None = 2**53) -> None:
        self.low, self.high = low, high
        self.expected = f"an integer in [{low}, {high}]"

    def check(self, value: Any, field: str) -> int:
        if type(value) is not int:
            raise self.wrong(value, field)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise Invalid(field, f"must be an integer in [{self.low}, {self.high}], not {value}")
        return value


class Float(Field):
    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        self.low, self.high = low, high
        self.expected = f"a finite number in [{low}, {high}]"

    def check(self, value: Any, field: str) -> float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise self.wrong(value, field)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise Invalid(field, f"must be {self.expected}, not {value}")
        return float(value)


class Bool(Field):
    expected = "true or false"

    def check(self, value: Any, field: str) -> bool:
        if type(value) is not bool:
            raise self.wrong(value, field)
        return value


class Str(Field):
    def __init__(self, max_length: int = 4096, choices: tuple[str, ...] | None = None) -> None:
        self.max_length, self.choices = max_length, choices
        self.expected = (
            f"one of {', '.join(choices)}" if choices else f"a string of at most {max_length} characters"
        )

    def check(self, value: Any, field: str) -> str:
        if type(value) is not str or len(value) > self.max_length or "\x00" in value:
            raise self.wrong(value, field)
        if self.choices is not None and value not in self.choices:
            raise Invalid(field, f"must be {self.expected}")
        return value


class List(Field):
    """A list of ``item``; ``lengths``: the only lengths allowed (else ``min_length`` to ``max_length``)."""

    def __init__(
        self,
        item: Field,
        min_length: int = 0,
        max_length: int = 2**32,
        lengths: tuple[int, ...] | None = None,
    ) -> None:
        self.item, self.min_length, self.max_length, self.lengths = item, min_length, max_length, lengths
        self.expected = (
            f"a list of {' or '.join(map(str, lengths))} items"
            if lengths
            else f"a list of {min_length} to {max_length} items"
        )

    def check(self, value: Any, field: str) -> list[Any]:
        if type(value) is not list:
            raise self.wrong(value, field)
        count = len(value)
        if (self.lengths and count not in self.lengths) or not self.min_length <= count <= self.max_length:
            raise Invalid(field, f"must be {self.expected}, not {count}")
        return [self.item.check(item, f"{field}[{index}]") for index, item in enumerate(value)]


class Maybe(Field):
    """``field`` or null (a missing key reads as null)."""

    def __init__(self, field: Field) -> None:
        self.field = field
        self.expected = f"{field.expected} or null"

    def check(self, value: Any, field: str) -> Any:
        return None if value is None else self.field.check(value, field)


class Record(Field):
    """An object with the declared fields (each required unless :class:`Maybe`); keys it does not
    declare are dropped (never passed on), after the whole file was checked for ``${``."""

    expected = "an object"

    def __init__(self, **fields: Field) -> None:
        self.fields = fields

    def check(self, value: Any, field: str = "") -> dict[str, Any]:
        if type(value) is not dict:
            raise self.wrong(value, field or "the file")
        checked = {}
        for name, kind in self.fields.items():
            where = f"{field}.{name}" if field else name
            if name not in value and not isinstance(kind, Maybe):
                raise Invalid(where, "is missing")
            checked[name] = kind.check(value.get(name), where)
        return checked


def find_interpolation(value: Any, field: str = "") -> str | None:
    """The first field (key path) of plain data whose key or string value holds ``${``."""
    stack = [(value, field)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if INTERPOLATION in node:
                return where or "the top level"
        elif isinstance(node, dict):
            for key, child in node.items():
                name = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and INTERPOLATION in key:
                    return name
                stack.append((child, name))
        elif isinstance(node, list | tuple):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(node))
    return None


def refuse_interpolation(value: Any, where: Any, field: str = "") -> None:
    """One line when any string of ``value`` (plain data read from ``where``) holds ``${``."""
    found = find_interpolation(value, field)
    if found is not None:
        raise UnreadableFile(
            where,
            "holds an interpolation ('${'), which vtcc never reads from a data file",
            "this file was not written by vtcc as it is; do not use it",
            field=found,
        )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes | str, where: Any, fix: str = "") -> Any:
    """``data`` (JSON) as plain values (dicts, lists, strings, numbers, booleans, null), refused
    in one line naming ``where`` when malformed or when any string holds ``${``."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        value = json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = type(error).__name__ if isinstance(error, RecursionError) else str(error)
        raise UnreadableFile(where, f"is not readable JSON ({_one_line(reason, 120)})", fix) from None
    refuse_interpolation(value, where)
    return value


def check_record(value: Any, schema: Field, where: Any, fix: str = "") -> Any:
    """Plain ``value`` read from ``where`` as the typed values ``schema`` declares (one line
    naming the file and the field otherwise)."""
    try:
        return schema.check(value, "")
    except Invalid as error:
        raise UnreadableFile(where, error.problem, fix, field=error.field) from None


def parse_json_record(data: bytes | str, schema: Field, where: Any, fix: str = "") -> Any:
    """``data`` (JSON) as the plain typed values ``schema`` declares; one line naming ``where``
    and the field otherwise."""
    return check_record(parse_json(data, where, fix), schema, where, fix)


def read_json(
    path: str | Path, fix: str = "", *, limit: int = JSON_LIMIT, inside: str | Path | None = None
) -> Any:
    """The JSON file at ``path`` as plain values, ``${`` refused (see :func:`parse_json`)."""
    return parse_json(read_bytes(path, limit, inside=inside), path, fix)


@reader("json")
def read_json_record(
    path: str | Path,
    schema: Field,
    fix: str = "",
    *,
    limit: int = JSON_LIMIT,
    inside: str | Path | None = None,
) -> Any:
    """The JSON file at ``path`` as the plain typed values ``schema`` declares (see the module
    docstring); a string holding ``${``, a wrong type or a value out of range is refused in one
    line naming the file and the field, ending with ``fix``."""
    return check_record(read_json(path, fix, limit=limit, inside=inside), schema, path, fix)


# ---------------------------------------------------------------------------------------------
# NumPy files


def _array_header(handle: IO[bytes], where: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The shape, order and dtype an ``.npy`` header declares (a pickled dtype is refused)."""
    version = np.lib.format.read_magic(handle)
    read_header = getattr(np.lib.format, "_read_array_header", None)
    if read_header is not None:
        shape, fortran, dtype = read_header(handle, version, max_header_size=HEADER_LIMIT)
    elif version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle, max_header_size=HEADER_LIMIT)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle, max_header_size=HEADER_LIMIT)
    if dtype.hasobject:
        raise UnreadableFile(
            where, "holds Python objects (a pickle), which vtcc never loads", "save plain arrays"
        )
    if any(int(n) < 0 for n in shape):
        raise UnreadableFile(where, f"declares a negative shape {tuple(shape)}", "save plain arrays")
    return tuple(int(n) for n in shape), bool(fortran), dtype


def _declared_bytes(shape: tuple[int, ...], dtype: np.dtype, where: Any) -> int:
    count = math.prod(shape)
    if count and dtype.itemsize == 0:
        raise UnreadableFile(where, f"declares {count} items of a zero-size type {dtype}")
    return count * dtype.itemsize


_NPY_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    SyntaxError,
    TypeError,
    struct.error,
    zipfile.BadZipFile,
    zlib.error,
)


@reader("npy")
def load_npy(path: str | Path, *, mmap: bool = False, inside: str | Path | None = None) -> np.ndarray:
    """An ``.npy`` file's array (never unpickled): its declared shape must fit the bytes the file
    holds, checked before anything is allocated; ``mmap``: mapped read-only instead of read."""
    fix = "give an .npy file saved by NumPy, without pickled objects"
    with open_regular(path, inside=inside) as handle:
        size = file_size(handle)
        try:
            shape, fortran, dtype = _array_header(handle, path)
        except UnreadableFile:
            raise
        except _NPY_ERRORS as error:
            raise UnreadableFile(
                path, f"is not a readable .npy file ({_one_line(str(error), 120)})", fix
            ) from None
        start = handle.tell()
        need = _declared_bytes(shape, dtype, path)
        if start + need > size:
            raise UnreadableFile(
                path, f"declares a {dtype} array {shape} of {need} bytes but holds {size - start}", fix
            )
        order = "F" if fortran else "C"
        with bounded(path, "array"):
            if need == 0:
                return np.empty(shape, dtype, order=order)
            if mmap:
                return np.memmap(handle, dtype=dtype, mode="r", offset=start, shape=shape, order=order)
            array = np.fromfile(handle, dtype=dtype, count=math.prod(shape))
    if array.size != math.prod(shape):
        raise UnreadableFile(path, "changed while it was read", "read it again")
    return array.reshape(shape, order=order)


def _npz_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Any, size: int) -> np.ndarray:
    where = f"{path} (array {info.filename})"
    fix = "give an .npz archive saved by NumPy, without pickled objects"
    if info.header_offset + info.compress_size > size:
        raise UnreadableFile(where, f"declares {info.compress_size} bytes beyond the archive's {size}", fix)
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            raise UnreadableFile(where, "declares more bytes than it stores", fix)
    elif info.file_size > DEFLATE_RATIO * max(info.compress_size, 1) + 2**16:
        raise UnreadableFile(
            where, f"declares {info.file_size} bytes from {info.compress_size} compressed", fix
        )
    with archive.open(info) as member:
        shape, fortran, dtype = _array_header(member, where)
        header = member.tell() if member.seekable() else None
        need = _declared_bytes(shape, dtype, where)
        available = info.file_size - (header or 0)
        if need > available:
            raise UnreadableFile(
                where, f"declares a {dtype} array {shape} of {need} bytes but holds {available}", fix
            )
        array = np.empty(math.prod(shape), dtype=dtype)
        view = array.view(np.uint8) if need else memoryview(b"")
        done = 0
        while done < need:
            got = member.readinto(memoryview(view)[done:])
            if not got:
                raise UnreadableFile(where, f"ends after {done} of its {need} bytes (a truncated file)", fix)
            done += got
    return array.reshape(shape, order="F" if fortran else "C")


@reader("npz")
def load_npz(
    path: str | Path, names: tuple[str, ...] | None = None, *, inside: str | Path | None = None
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive (those of ``names`` when given, each that is there), never
    unpickled; each member's declared shape and size are checked against the bytes that hold it
    before anything is allocated."""
    fix = "give an .npz archive saved by NumPy, without pickled objects"
    with open_regular(path, inside=inside) as handle:
        try:
            with bounded(path, "array"), zipfile.ZipFile(handle) as archive:
                infos = archive.infolist()
                if len(infos) > MAX_NPZ_MEMBERS:
                    raise UnreadableFile(
                        path, f"holds {len(infos)} members, more than any feature or image file"
                    )
                arrays = {}
                for info in infos:
                    name = info.filename.removesuffix(".npy")
                    if info.filename.endswith(".npy") and (names is None or name in names):
                        arrays[name] = _npz_member(archive, info, path, file_size(handle))
                return arrays
        except UnreadableFile:
            raise
        except (*_NPY_ERRORS, NotImplementedError, RuntimeError) as error:
            reason = _one_line(str(error), 120) or type(error).__name__
            raise UnreadableFile(path, f"is not a readable .npz archive ({reason})", fix) from None


def npz_names(path: str | Path) -> list[str]:
    """The array names of an ``.npz`` archive, without reading any array."""
    with open_regular(path) as handle:
        try:
            with zipfile.ZipFile(handle) as archive:
                return [
                    i.filename.removesuffix(".npy") for i in archive.infolist() if i.filename.endswith(".npy")
                ]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
            raise UnreadableFile(
                path, f"is not a readable .npz archive ({_one_line(str(error), 120)})"
            ) from None


# ---------------------------------------------------------------------------------------------
# Images

IMAGE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


# The formats of the files vtcc reads as images (.png, .jpg/.jpeg, .bmp, .webp, .tif/.tiff; a
# camera's multi-picture JPEG opens as JPEG too): PIL would otherwise open any of its forty formats
# by content, EPS among them, whose decoding runs Ghostscript on the file.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF")


@functools.cache
def _image_formats() -> tuple[str, ...]:
    """:data:`IMAGE_FORMATS` this PIL reads (all its plugins registered first)."""
    Image.init()
    return tuple(name for name in IMAGE_FORMATS if name in Image.OPEN)


@contextmanager
def _bombs_refused() -> Iterator[None]:
    """PIL's decompression-bomb warning as an error (warning filters are process-wide: changed
    only from the main thread; elsewhere :func:`open_image` checks the pixel count itself)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


@reader("image")
@contextmanager
def open_image(source: str | Path | bytes, where: Any = None) -> Iterator[Image.Image]:
    """The image in ``source`` (a path, or the bytes of an image file read from ``where``), opened
    by PIL: only a regular file; more pixels than PIL's limit (a decompression bomb), a truncated
    or malformed file and ``MemoryError`` anywhere in the ``with`` block become one line naming
    the file (:class:`UnreadableFile`, whose ``reason`` callers that skip bad images list)."""
    name = where if where is not None else source
    handle = io.BytesIO(source) if isinstance(source, bytes | bytearray) else open_regular(source)
    try:
        with _bombs_refused():
            image = Image.open(handle, formats=_image_formats())
        with image:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and image.width * image.height > limit:
                raise Image.DecompressionBombError(
                    f"{image.width} x {image.height} pixels exceed the limit of {limit}, "
                    "could be a decompression bomb"
                )
            with _bombs_refused():
                yield image
    except ConfigError:
        raise
    except MemoryError:
        raise UnreadableFile(
            name, "cannot be read as an image (it needs more memory than there is)"
        ) from None
    except IMAGE_ERRORS as error:
        reason = _one_line(str(error), 160) or type(error).__name__
        raise UnreadableFile(name, f"cannot be read as an image ({reason})") from None
    finally:
        handle.close()
