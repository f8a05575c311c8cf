"""The one way vtcc reads a file it did not just write: typed, bounded, regular files only.

Everything a run reads from a data file (index files, offsets, feature files and their paths,
store metadata, a sample's statistics, stored configs) enters through the readers of
:mod:`vtcc.io`: this module (regular files, bounded reads) and, over it,
:mod:`vtcc.io.json_records` (typed JSON records), :mod:`vtcc.io.numpy_files` (``.npy`` and
``.npz``) and :mod:`vtcc.io.image_files` (images):

- :func:`open_regular` opens only regular files: a FIFO, device, socket or folder is refused in
  one line before a byte is read (opened non-blocking, so a FIFO without a writer cannot hang the
  open), and ``inside=<folder>`` refuses a file whose real path lies outside that folder (a
  symbolic link out of it);
- every size and count is checked against the file's real size before anything is allocated:
  :func:`read_bytes`, :func:`read_range`, :func:`~vtcc.io.numpy_files.load_npy` and
  :func:`~vtcc.io.numpy_files.load_npz` (the declared shape of every array against the bytes that
  hold it), :func:`~vtcc.io.image_files.open_image` (PIL's pixel limit, its warning an error);
- :func:`~vtcc.io.json_records.read_json_record` parses JSON into plain typed values checked
  against a small declared schema (:class:`~vtcc.io.json_records.Int`, ``Float``, ``Bool``,
  ``Str``, ``List``, ``Record``, ``Maybe``); a string anywhere in the file that holds ``${`` is
  refused (nothing read from a data file is ever resolved as an interpolation), and so is a wrong
  type;
- a malformed file, ``MemoryError`` or a decompression bomb becomes :class:`UnreadableFile`, a
  :class:`~vtcc.errors.ConfigError` whose one line names the file.

:data:`READERS` lists every kind of file vtcc reads (:func:`reader` registers one, in the module
that reads that kind): the hostile input suite (``tests/e2e/test_hostile.py``) holds cases for each,
and fails for a kind it lacks.

Core layer: the standard library and :mod:`vtcc.errors` only.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from vtcc.errors import ConfigError

Reader = TypeVar("Reader", bound=Callable[..., Any])

READERS: dict[str, Callable[..., Any]] = {}  # kind of file -> the function that reads it


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
        self.path, self.reason, self.field = str(path), one_line(reason), field
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where} {self.reason}" + (f": {fix}" if fix else ""))


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (its whitespace collapsed), cut to ``limit`` characters."""
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
