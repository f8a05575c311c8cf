"""Where a :class:`~vtcc.io.writer.Writer` may write: its roots, and their folders opened one by
one without following a link.

:class:`WriteFolders` holds a command's own folders (the *roots*) and the folders it reads
(``protect``); it locates a path in a root (refused outside every root and inside a protected
folder) and opens the folders between the root and the file without following a link (a link, or
a file where a folder should be, is refused in one line). The helpers here are the Writer's own
(a new name beside a file, what is at a name in an open folder, a private folder removed).

Core layer: the standard library and :mod:`vtcc.errors` only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vtcc.errors import ConfigError

CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NOFOLLOW = os.O_NOFOLLOW
FOLDER = os.O_RDONLY | os.O_DIRECTORY | CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC
MOVE_IT = "move it away or choose another output folder"


@dataclass(frozen=True)
class Root:
    given: str  # absolute, as named
    real: str  # where it lies (links in its own path followed: the user's choice)


def _below(path: str, base: str) -> tuple[str, ...] | None:
    """``path``'s components below ``base`` (both absolute, normalised); None when not below it."""
    if path == base:
        return ()
    prefix = base if base.endswith(os.sep) else base + os.sep
    if not path.startswith(prefix):
        return None
    return tuple(part for part in path[len(prefix) :].split(os.sep) if part)


def temporary_name(name: str) -> str:
    """A new name beside ``name`` (short enough for any file system's limit on a name's length)."""
    return f".{name[:40]}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def lstat_at(folder: int, name: str) -> os.stat_result | None:
    """What is at ``name`` in the open folder ``folder``, the link itself for a link; None if nothing."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def remove_tree(parent: int, name: str) -> None:
    """Remove the folder ``name`` of ``parent`` (one vtcc made privately), never following a link."""
    try:
        folder = os.open(name, FOLDER | NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        return
    try:
        for entry in os.listdir(folder):
            info = lstat_at(folder, entry)
            if info is not None and stat.S_ISDIR(info.st_mode):
                remove_tree(folder, entry)
            elif info is not None:
                os.unlink(entry, dir_fd=folder)
    finally:
        os.close(folder)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=parent)


class WriteFolders:
    """The folders ``roots`` one command writes in, ``protect`` the folders (or files) it reads
    (nothing is written inside them): where a path lies, and its folder opened safely."""

    def __init__(
        self, *roots: str | os.PathLike[str], protect: Iterable[str | os.PathLike[str]] = ()
    ) -> None:
        if not roots:
            raise ValueError("a Writer needs at least one folder to write in")
        self._roots = [Root(os.path.abspath(root), os.path.realpath(root)) for root in roots]
        self._protected = {os.path.realpath(folder) for folder in protect}
        for root in self._roots:
            folder = self._protecting(root.real)
            if folder is not None:
                raise ConfigError(
                    f"{root.given} is inside {folder}, which this command reads: vtcc never writes "
                    "into its input; choose an output folder outside it"
                )

    def _protecting(self, where: str) -> str | None:
        """The protected folder (or file) that ``where`` (a real path) is or lies in, if any."""
        while self._protected:
            if where in self._protected:
                return where
            parent = os.path.dirname(where)
            if parent == where:
                return None
            where = parent
        return None

    @property
    def roots(self) -> list[Path]:
        return [Path(root.given) for root in self._roots]

    # -- where a path lies ------------------------------------------------------------------------

    def _locate(self, path: str | os.PathLike[str]) -> tuple[Root, tuple[str, ...]]:
        """The root ``path`` lies in and its components below it (refused outside every root)."""
        absolute = os.path.abspath(path)
        found = None
        for root in self._roots:
            for base in (root.given, root.real):
                parts = _below(absolute, base)
                if parts is not None:
                    found = (root, parts)
                    break
            if found:
                break
        if found is None:  # named through a link outside the roots: where its folder really is
            real = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
            for root in self._roots:
                parts = _below(real, root.real)
                if parts is not None:
                    found = (root, parts)
                    break
        if found is None:
            folders = ", ".join(root.given for root in self._roots)
            raise ConfigError(
                f"{path} is outside the folders this command writes in ({folders}): vtcc writes only "
                "into its output and cache folders; choose a path inside them"
            )
        root, parts = found
        folder = self._protecting(os.path.join(root.real, *parts))
        if folder is not None:
            raise ConfigError(
                f"{path} is inside {folder}, which this command reads: vtcc never writes into its "
                "input; choose an output folder outside it"
            )
        return root, parts

    def _folder(self, root: Root, parts: tuple[str, ...], path: Any, create: bool) -> int | None:
        """An open descriptor of the folder ``root/parts``, every component opened without
        following a link (made when ``create``); None when a component is absent and not ``create``."""
        try:
            if create:
                os.makedirs(root.real, exist_ok=True)
            folder = os.open(root.real, FOLDER)
        except FileNotFoundError:
            if create:
                raise
            return None
        except (FileExistsError, NotADirectoryError):
            raise ConfigError(f"{path}: {root.given} is not a folder: {MOVE_IT}") from None
        for index, name in enumerate(parts):
            try:
                child = self._child(folder, name, create)
            except OSError as error:
                info = lstat_at(folder, name)
                os.close(folder)
                where = os.path.join(root.given, *parts[: index + 1])
                if info is not None and stat.S_ISLNK(info.st_mode):
                    raise ConfigError(
                        f"{path}: {where} is a symbolic link, and vtcc never writes through one: remove "
                        "the link or choose another output folder"
                    ) from None
                if error.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise ConfigError(f"{path}: {where} is not a folder: {MOVE_IT}") from None
                raise
            os.close(folder)
            if child is None:
                return None
            folder = child
        return folder

    @staticmethod
    def _child(folder: int, name: str, create: bool) -> int | None:
        for _ in range(3):
            try:
                return os.open(name, FOLDER | NOFOLLOW, dir_fd=folder)
            except FileNotFoundError:
                if not create:
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, dir_fd=folder)
        return os.open(name, FOLDER | NOFOLLOW, dir_fd=folder)

    def check_folder(self, path: str | os.PathLike[str]) -> None:
        """Refuse, without writing anything, a folder vtcc could not write into: outside the
        roots, inside a protected folder, or reached through a link or a file."""
        root, parts = self._locate(path)
        folder = self._folder(root, parts, path, create=False)
        if folder is not None:
            os.close(folder)
