"""NumPy files, never unpickled: ``.npy`` arrays and ``.npz`` archives whose declared shapes are
checked against the bytes that hold them before anything is allocated.

Core layer: the standard library, NumPy and :mod:`vtcc.io.reader` only.
"""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from vtcc.io.reader import UnreadableFile, bounded, file_size, one_line, open_regular, reader

HEADER_LIMIT = 10_000  # bytes of an .npy header (NumPy's own default)
DEFLATE_RATIO = 1100  # deflate's largest possible expansion is about 1032:1
MAX_NPZ_MEMBERS = 10_000


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
                path, f"is not a readable .npy file ({one_line(str(error), 120)})", fix
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
            reason = one_line(str(error), 120) or type(error).__name__
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
                path, f"is not a readable .npz archive ({one_line(str(error), 120)})"
            ) from None
