"""The one way vtcc writes a file: a :class:`Writer` over the folders of the current command.

Every file a vtcc command writes (results, reports, checkpoints, feature caches, shards) goes
through a :class:`Writer` built on that command's own folders (its output folder, its cache):

- **only inside them** (the *roots*): a destination elsewhere is refused, and so is one inside a
  folder the command reads (``protect``: a user's input is never changed);
- **never through a symbolic link**: every folder between a root and the file is opened without
  following links (a link there is refused), and the file itself is never opened for writing: a
  new file is made beside it and renamed over it, so a link found at the destination is replaced
  as a link and its target keeps its bytes (a root itself is where its name leads: the user's
  choice, e.g. a cache on a scratch disk);
- **atomically**: the new file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` in the
  destination's folder and renamed into place; a failed write leaves the previous file whole;
- **never onto a file vtcc did not write**: each root keeps :data:`MANIFEST`, the paths vtcc
  wrote there (each recorded before it is written; the list itself replaced atomically, under a
  lock where the file system has one). Anything else found at a destination is refused with one
  line naming it, so ``overwrite=true`` lets a command replace what vtcc wrote in a folder
  earlier, never a user's file. :meth:`Writer.adopt` records a file whose content the caller has
  checked is vtcc's (a feature cache's marker), written by a vtcc before this list existed.

The one write in place, the parts of the memory-mapped feature store, goes through
:meth:`Writer.update`: a regular file vtcc recorded, opened without following a link, with no
other name (a hard link) that a write could reach.

The Writer in parts: :mod:`vtcc.io.write_folders` (where a path lies; its folders opened without
following a link), :mod:`vtcc.io.manifest` (the record of what vtcc wrote, the checks and removals
it grounds) and here the writes.

Core layer: the standard library, NumPy and :mod:`vtcc.errors` only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from vtcc.errors import ConfigError
from vtcc.io.manifest import MANIFEST, RecordedFolders
from vtcc.io.write_folders import (
    CLOEXEC,
    FOLDER,
    MOVE_IT,
    NEW_FILE,
    NOFOLLOW,
    lstat_at,
    remove_tree,
    temporary_name,
)


@dataclass
class NewFolder:
    """What :meth:`Writer.new_folder` yields: ``path``, the private folder to fill; ``placed``,
    after the block, whether it became the destination (False: something was there already)."""

    path: Path
    placed: bool = False


class Writer(RecordedFolders):
    """Writes into the folders ``roots`` of one command (see the module docstring).

    ``protect``: folders (or files) the command reads; nothing is written inside them.
    ``replace_named=True``: for a destination the user named file by file and asked to replace
    (``Clusterer.save(path, overwrite=True)``): a file found there is replaced (atomically, a link
    as a link) and nothing is recorded in that folder.

    Where a path may lie and how its folders are opened:
    :class:`~vtcc.io.write_folders.WriteFolders`; the record of what vtcc wrote, the checks and
    removals it grounds: :class:`~vtcc.io.manifest.RecordedFolders`. Here: the writes."""

    # -- writing ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _destination(self, path: str | os.PathLike[str]) -> Iterator[tuple[int, str, str]]:
        """The destination's open folder, its name and its folder's path, checked and recorded."""
        root, parts = self._locate(path)
        if not parts:
            self._admit(root, parts, None, path)
        folder = self._folder(root, parts[:-1], path, create=True)
        assert folder is not None
        try:
            if self._admit(root, parts, lstat_at(folder, parts[-1]), path):
                self._change_record(root, add=["/".join(parts)])
            yield folder, parts[-1], os.path.join(root.real, *parts[:-1])
        finally:
            os.close(folder)

    @contextlib.contextmanager
    def open(
        self, path: str | os.PathLike[str], mode: str = "wb", *, durable: bool = False, **options: Any
    ) -> Iterator[IO[Any]]:
        """A new file to write (``mode`` ``wb`` or ``w``; text in UTF-8 unless ``encoding`` says),
        renamed to ``path`` when the block ends without an error (removed otherwise). ``durable``:
        flushed to the disk, with the rename (a checkpoint survives a power cut)."""
        if mode not in ("w", "wb"):
            raise ValueError(f"mode {mode!r}: a Writer writes new files, 'w' or 'wb'")
        if mode == "w":
            options.setdefault("encoding", "utf-8")
        with self._destination(path) as (folder, name, _):
            temporary = temporary_name(name)
            handle = os.open(temporary, NEW_FILE, 0o666, dir_fd=folder)
            try:
                with os.fdopen(handle, mode, **options) as writer:
                    yield writer
                    writer.flush()
                    if durable:
                        os.fsync(writer.fileno())
                os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
                if durable:
                    with contextlib.suppress(OSError):
                        os.fsync(folder)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=folder)
                raise

    @contextlib.contextmanager
    def temporary(self, path: str | os.PathLike[str]) -> Iterator[Path]:
        """A path, of ``path``'s name, in a new private folder beside it, for a library that writes
        a path itself (``savefig``, Parquet); renamed to ``path`` when the block ends without an
        error (a block that wrote nothing leaves ``path`` as it was)."""
        with self._destination(path) as (folder, name, where):
            private = temporary_name(name)
            os.mkdir(private, 0o700, dir_fd=folder)
            try:
                yield Path(where, private, name)
                inside = os.open(private, FOLDER | NOFOLLOW, dir_fd=folder)
                try:
                    info = lstat_at(inside, name)
                    if info is not None and not stat.S_ISREG(info.st_mode):
                        raise OSError(errno.EINVAL, f"{path}: the library wrote no regular file")
                    if info is not None:  # nothing written (a figure with nothing to show): nothing replaced
                        os.replace(name, name, src_dir_fd=inside, dst_dir_fd=folder)
                finally:
                    os.close(inside)
            finally:
                remove_tree(folder, private)

    def append(self, path: str | os.PathLike[str]) -> IO[str]:
        """``path`` opened to append text (a log file), made when absent: only a regular file vtcc
        recorded, opened in its checked folder without following a link; the caller closes it."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW | CLOEXEC | os.O_NONBLOCK
        with self._destination(path) as (folder, name, _):
            try:
                handle = os.open(name, flags, 0o666, dir_fd=folder)
            except OSError as error:  # a link vtcc made there (ELOOP), a FIFO without a reader
                raise ConfigError(f"{path} cannot be appended to ({error.strerror}): {MOVE_IT}") from None
        try:
            if not stat.S_ISREG(os.fstat(handle).st_mode):
                raise ConfigError(f"{path} is not a regular file: {MOVE_IT}")
            os.set_blocking(handle, True)
            return os.fdopen(handle, "a", encoding="utf-8")
        except BaseException:
            os.close(handle)
            raise

    def write_bytes(self, path: str | os.PathLike[str], data: bytes, *, durable: bool = False) -> Path:
        with self.open(path, "wb", durable=durable) as handle:
            handle.write(data)
        return Path(path)

    def write_text(self, path: str | os.PathLike[str], text: str) -> Path:
        with self.open(path, "w") as handle:
            handle.write(text)
        return Path(path)

    def write_json(self, path: str | os.PathLike[str], value: Any, indent: int | None = 2) -> Path:
        return self.write_text(path, json.dumps(value, indent=indent) + "\n")

    def save_array(self, path: str | os.PathLike[str], array: Any) -> Path:
        """``np.save`` (``.npy``)."""
        with self.open(path) as handle:
            np.save(handle, np.asarray(array))
        return Path(path)

    def save_arrays(self, path: str | os.PathLike[str], **arrays: Any) -> Path:
        """``np.savez`` (``.npz``, uncompressed)."""
        with self.open(path) as handle:
            np.savez(handle, **arrays)
        return Path(path)

    def copy_file(self, source: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
        """A copy of ``source`` (its bytes, permissions and times) as ``path``: a new file renamed
        over whatever vtcc had there (a link it made is replaced, its target never written). Only a
        regular file is copied: a FIFO or device is refused before a byte is read (never a hang)."""
        descriptor = os.open(source, os.O_RDONLY | os.O_NONBLOCK | CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise ConfigError(f"{source} is not a regular file: vtcc copies only files")
            os.set_blocking(descriptor, True)
            reader = os.fdopen(descriptor, "rb")
        except BaseException:
            os.close(descriptor)
            raise
        with reader, self.open(path) as handle:
            shutil.copyfileobj(reader, handle, 1 << 20)
            handle.flush()
            info = os.fstat(reader.fileno())
            os.chmod(handle.fileno(), stat.S_IMODE(info.st_mode))
            os.utime(handle.fileno(), ns=(info.st_atime_ns, info.st_mtime_ns))
        return Path(path)

    def link_file(self, target: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
        """A symbolic link to ``target`` as ``path``, made under a new name and renamed into place
        (a file vtcc had there is replaced by the link, never written)."""
        with self._destination(path) as (folder, name, _):
            temporary = temporary_name(name)
            os.symlink(os.fspath(target), temporary, dir_fd=folder)
            try:
                os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=folder)
                raise
        return Path(path)

    def make_dirs(self, path: str | os.PathLike[str]) -> Path:
        """The folder ``path`` (and those above it, up to its root), refusing a link or a file on
        the way."""
        root, parts = self._locate(path)
        folder = self._folder(root, parts, path, create=True)
        assert folder is not None
        os.close(folder)
        return Path(path)

    @contextlib.contextmanager
    def new_folder(self, path: str | os.PathLike[str]) -> Iterator[NewFolder]:
        """A new private folder beside ``path`` to fill; when the block ends and nothing is at
        ``path``, its files are recorded and it is renamed to ``path`` whole (``placed``); else
        it is removed and what is at ``path`` is left as it is, for the caller to judge."""
        root, parts = self._locate(path)
        if not parts:
            raise ConfigError(f"{path} is the output folder itself: give a folder's path inside it")
        folder = self._folder(root, parts[:-1], path, create=True)
        assert folder is not None
        name = parts[-1]
        private = temporary_name(name)
        try:
            os.mkdir(private, dir_fd=folder)
            made = NewFolder(Path(root.real, *parts[:-1], private))
            try:
                yield made
                if lstat_at(folder, name) is None:
                    inside = []
                    for base, folders, files in os.walk(made.path):
                        below = Path(base).relative_to(made.path).parts
                        inside += ["/".join((*parts, *below, file)) for file in files]
                        inside += [
                            "/".join((*parts, *below, sub)) for sub in folders if Path(base, sub).is_symlink()
                        ]
                    self._change_record(root, add=inside)
                    try:
                        os.rename(private, name, src_dir_fd=folder, dst_dir_fd=folder)
                        made.placed = True
                    except OSError as error:  # another process's folder appeared meanwhile
                        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                            raise
            finally:
                remove_tree(folder, private)
        finally:
            os.close(folder)

    @contextlib.contextmanager
    def update(self, path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
        """``path`` opened to be written in place (``r+b``): only a regular file vtcc recorded,
        opened without following a link, with no other name a write could reach (a hard link)."""
        root, parts = self._locate(path)
        folder = self._folder(root, parts[:-1], path, create=False) if parts else None
        if folder is None:
            raise ConfigError(f"{path} does not exist: vtcc writes in place only a file it created")
        try:
            try:
                handle = os.open(parts[-1], os.O_RDWR | NOFOLLOW | CLOEXEC | os.O_NONBLOCK, dir_fd=folder)
            except OSError as error:
                info = lstat_at(folder, parts[-1])
                if info is not None and stat.S_ISLNK(info.st_mode):
                    raise ConfigError(
                        f"{path} is a symbolic link, and vtcc never writes through one: remove it "
                        "(vtcc writes in place only a file it created)"
                    ) from None
                if info is None:
                    raise ConfigError(
                        f"{path} does not exist: vtcc writes in place only a file it created"
                    ) from None
                raise ConfigError(
                    f"{path} cannot be written in place ({error.strerror}): {MOVE_IT}"
                ) from None
        finally:
            os.close(folder)
        with os.fdopen(handle, "r+b") as writer:
            info = os.fstat(writer.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(
                    f"{path} is not a regular file: vtcc writes in place only a file it created"
                )
            if info.st_nlink != 1:
                raise ConfigError(
                    f"{path} has {info.st_nlink} names (hard links), and a write would reach the others: "
                    f"{MOVE_IT}"
                )
            if not self._owned(root, parts):
                raise ConfigError(
                    f"{path} exists and was not written by vtcc ({os.path.join(root.given, MANIFEST)} does "
                    f"not list it): {MOVE_IT}"
                )
            yield writer
