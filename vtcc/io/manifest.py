"""The record of what vtcc wrote in a folder (:data:`MANIFEST`), and the refusals it grounds.

Each root of a :class:`~vtcc.io.writer.Writer` keeps :data:`MANIFEST`, the paths vtcc wrote there
(each recorded before it is written; the list itself replaced atomically, under a lock where the
file system has one). :class:`RecordedFolders` reads and changes it, refuses a destination that
holds anything vtcc did not record (one line naming it), and removes only what it recorded.

Core layer: the standard library and :mod:`vtcc.errors` only.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import stat
from collections.abc import Iterable, Iterator
from typing import Any

from vtcc.errors import ConfigError
from vtcc.io.write_folders import (
    CLOEXEC,
    FOLDER,
    MOVE_IT,
    NEW_FILE,
    NOFOLLOW,
    Root,
    WriteFolders,
    lstat_at,
    temporary_name,
)

try:  # the record's lock; where there is none (or the file system refuses it) writers rely on renames
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system
    fcntl = None  # type: ignore[assignment]

MANIFEST = ".vtcc-files"
MANIFEST_HEADER = "# vtcc-files/1: the files vtcc wrote in this folder, one JSON string a line"


def _recordable(entry: Any) -> bool:
    """Whether ``entry`` of a record is a path below its folder as vtcc records one (``a/b``): a
    string of names, none of them ``..``, ``.`` or empty (so never absolute), without a NUL."""
    return (
        isinstance(entry, str)
        and "\x00" not in entry
        and all(part not in ("", ".", "..") for part in entry.split("/"))
    )


class RecordedFolders(WriteFolders):
    """:class:`~vtcc.io.write_folders.WriteFolders` that keep the record of what vtcc wrote in them.
    ``replace_named=True``: nothing is recorded, and a file found at a destination is taken as
    vtcc's (see :class:`~vtcc.io.writer.Writer`)."""

    def __init__(
        self,
        *roots: str | os.PathLike[str],
        protect: Iterable[str | os.PathLike[str]] = (),
        replace_named: bool = False,
    ) -> None:
        super().__init__(*roots, protect=protect)
        self._replace_named = replace_named
        self._records: dict[str, set[str]] = {}  # root -> the paths its manifest lists, as last read

    # -- the record of what vtcc wrote ------------------------------------------------------------

    @staticmethod
    def _read_manifest(folder: str) -> set[str]:
        path = os.path.join(folder, MANIFEST)
        try:
            handle = os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return set()
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EMLINK):
                raise ConfigError(
                    f"{path} is a symbolic link, not vtcc's record of the files it wrote: {MOVE_IT}"
                ) from None
            raise
        with os.fdopen(handle, "rb") as reader:
            info = os.fstat(reader.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{path} is not vtcc's record of the files it wrote: {MOVE_IT}")
            if info.st_uid != os.geteuid():  # another user's list (a shared /tmp): nothing in it is ours
                return set()
            lines = reader.read(info.st_size).decode("utf-8", errors="replace").splitlines()
        entries = set()
        for line in lines:
            if line.startswith('"'):
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if _recordable(entry):  # never '..', '/x', '' or '.': only a path below the folder
                        entries.add(entry)
        return entries

    def _recorded(self, root: Root, fresh: bool = False) -> set[str]:
        if fresh or root.real not in self._records:
            self._records[root.real] = self._read_manifest(root.real)
        return self._records[root.real]

    def _owned(self, root: Root, parts: tuple[str, ...]) -> bool:
        """Whether vtcc recorded ``root/parts``: in the root's record, or in the record of a folder
        between (a root of its own for another command)."""
        if self._replace_named:
            return True
        name = "/".join(parts)
        if name in self._recorded(root) or name in self._recorded(root, fresh=True):
            return True
        if any(
            "/".join(parts[index:]) in self._read_manifest(os.path.join(root.real, *parts[:index]))
            for index in range(1, len(parts))
        ):
            return True
        # or in the record of a folder above the root (a command's root that holds this one)
        above, below = root.real, list(parts)
        while os.path.dirname(above) != above:
            above, name = os.path.dirname(above), os.path.basename(above)
            below.insert(0, name)
            with contextlib.suppress(ConfigError, OSError):
                if "/".join(below) in self._read_manifest(above):
                    return True
        return False

    @contextlib.contextmanager
    def _locked(self, root: Root) -> Iterator[int]:
        os.makedirs(root.real, exist_ok=True)
        folder = os.open(root.real, FOLDER)
        locked = False
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(folder, fcntl.LOCK_EX)
                    locked = True
                except OSError:  # a file system without locks: the rename still keeps the record whole
                    pass
            yield folder
        finally:
            if locked:
                fcntl.flock(folder, fcntl.LOCK_UN)
            os.close(folder)

    def _change_record(self, root: Root, add: Iterable[str] = (), drop: Iterable[str] = ()) -> None:
        add, drop = set(add), set(drop)
        if self._replace_named or (not add - self._recorded(root) and not drop & self._recorded(root)):
            return
        with self._locked(root) as folder:
            entries = (self._recorded(root, fresh=True) | add) - drop
            text = "\n".join([MANIFEST_HEADER, *(json.dumps(entry) for entry in sorted(entries))]) + "\n"
            temporary = temporary_name(MANIFEST)
            handle = os.open(temporary, NEW_FILE, 0o666, dir_fd=folder)
            try:
                with os.fdopen(handle, "wb") as writer:
                    writer.write(text.encode())
                os.replace(temporary, MANIFEST, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=folder)
                raise
            self._records[root.real] = entries

    # -- checks -----------------------------------------------------------------------------------

    def _admit(self, root: Root, parts: tuple[str, ...], info: os.stat_result | None, path: Any) -> bool:
        """Whether ``path`` may be written (refused with one line otherwise); True when it is new."""
        if not parts:
            raise ConfigError(f"{path} is the output folder itself: give a file's path inside it")
        if info is None:
            return True
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path} is a folder where vtcc writes a file: {MOVE_IT}")
        if not self._owned(root, parts):
            raise ConfigError(
                f"{path} exists and was not written by vtcc ({os.path.join(root.given, MANIFEST)} does not "
                f"list it): {MOVE_IT}"
            )
        return False

    def check(self, *paths: str | os.PathLike[str]) -> None:
        """Refuse, before any work and without writing anything, a destination vtcc could not write."""
        for path in paths:
            root, parts = self._locate(path)
            folder = self._folder(root, parts[:-1], path, create=False) if parts else None
            if folder is None:
                self._admit(root, parts, None, path)
                continue
            try:
                self._admit(root, parts, lstat_at(folder, parts[-1]), path)
            finally:
                os.close(folder)

    def claim(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """:meth:`check` every path, then record them all as vtcc's (one change of each root's
        record, for the many files of one step, such as ``copy_images``' copies)."""
        paths = list(paths)
        self.check(*paths)
        names: dict[Root, set[str]] = {}
        for path in paths:
            root, parts = self._locate(path)
            names.setdefault(root, set()).add("/".join(parts))
        for root, entries in names.items():
            self._change_record(root, add=entries)

    def adopt(self, path: str | os.PathLike[str]) -> None:
        """Record the file at ``path`` as vtcc's: for a file whose content the caller checked is
        one vtcc writes (a feature cache's format marker), left by a vtcc that kept no record."""
        root, parts = self._locate(path)
        folder = self._folder(root, parts[:-1], path, create=False) if parts else None
        if folder is None:
            return
        try:
            info = lstat_at(folder, parts[-1])
        finally:
            os.close(folder)
        if info is not None and not stat.S_ISDIR(info.st_mode):
            self._change_record(root, add=["/".join(parts)])

    # -- removing what vtcc wrote -----------------------------------------------------------------

    def remove(self, path: str | os.PathLike[str]) -> bool:
        """Remove a file (or link) vtcc wrote at ``path``; False when there is none. Anything else
        there is refused with one line."""
        root, parts = self._locate(path)
        folder = self._folder(root, parts[:-1], path, create=False) if parts else None
        if folder is None:
            return False
        try:
            info = lstat_at(folder, parts[-1])
            if info is None:
                return False
            self._admit(root, parts, info, path)
            os.unlink(parts[-1], dir_fd=folder)
        finally:
            os.close(folder)
        self._change_record(root, drop=["/".join(parts)])
        return True

    def remove_recorded(self, *patterns: str) -> int:
        """Remove every file vtcc recorded in its roots whose path (below its root, ``/``-separated)
        matches one of the ``fnmatch`` ``patterns``, and the folders that leaves empty; the count.
        What lies in a folder the command reads (``protect``) stays: it is the command's input now."""
        removed = 0
        for root in self._roots:
            names = sorted(
                name
                for name in self._recorded(root, fresh=True)
                if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
                and self._protecting(os.path.join(root.real, *name.split("/"))) is None
            )
            emptied: set[tuple[str, ...]] = set()
            for name in names:
                parts = tuple(name.split("/"))
                try:
                    folder = self._folder(root, parts[:-1], os.path.join(root.given, *parts), create=False)
                except ConfigError:
                    continue  # a folder on the way became a link: nothing of vtcc's to remove through it
                if folder is None:
                    continue
                try:
                    info = lstat_at(folder, parts[-1])
                    if info is not None and not stat.S_ISDIR(info.st_mode):
                        os.unlink(parts[-1], dir_fd=folder)
                        removed += 1
                finally:
                    os.close(folder)
                emptied.update(parts[:index] for index in range(1, len(parts)))
            self._change_record(root, drop=names)
            for parts in sorted(emptied, key=len, reverse=True):
                try:
                    folder = self._folder(root, parts[:-1], root.given, create=False)
                except ConfigError:
                    continue
                if folder is not None:
                    with contextlib.suppress(OSError):
                        os.rmdir(parts[-1], dir_fd=folder)  # only when empty; a link is no folder
                    os.close(folder)
        return removed
