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

Core layer: the standard library, NumPy and :mod:`vtcc.errors` only.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from vtcc.errors import ConfigError

try:  # the record's lock; where there is none (or the file system refuses it) writers rely on renames
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system
    fcntl = None  # type: ignore[assignment]

MANIFEST = ".vtcc-files"
MANIFEST_HEADER = "# vtcc-files/1: the files vtcc wrote in this folder, one JSON string a line"
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = os.O_NOFOLLOW
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
_MOVE_IT = "move it away or choose another output folder"


@dataclass(frozen=True)
class _Root:
    given: str  # absolute, as named
    real: str  # where it lies (links in its own path followed: the user's choice)


@dataclass
class NewFolder:
    """What :meth:`Writer.new_folder` yields: ``path``, the private folder to fill; ``placed``,
    after the block, whether it became the destination (False: something was there already)."""

    path: Path
    placed: bool = False


def _below(path: str, base: str) -> tuple[str, ...] | None:
    """``path``'s components below ``base`` (both absolute, normalised); None when not below it."""
    if path == base:
        return ()
    prefix = base if base.endswith(os.sep) else base + os.sep
    if not path.startswith(prefix):
        return None
    return tuple(part for part in path[len(prefix) :].split(os.sep) if part)


def _recordable(entry: Any) -> bool:
    """Whether ``entry`` of a record is a path below its folder as vtcc records one (``a/b``): a
    string of names, none of them ``..``, ``.`` or empty (so never absolute), without a NUL."""
    return (
        isinstance(entry, str)
        and "\x00" not in entry
        and all(part not in ("", ".", "..") for part in entry.split("/"))
    )


def _temporary_name(name: str) -> str:
    """A new name beside ``name`` (short enough for any file system's limit on a name's length)."""
    return f".{name[:40]}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _entry(folder: int, name: str) -> os.stat_result | None:
    """What is at ``name`` in the open folder ``folder``, the link itself for a link; None if nothing."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove_tree(parent: int, name: str) -> None:
    """Remove the folder ``name`` of ``parent`` (one vtcc made privately), never following a link."""
    try:
        folder = os.open(name, _FOLDER | _NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        return
    try:
        for entry in os.listdir(folder):
            info = _entry(folder, entry)
            if info is not None and stat.S_ISDIR(info.st_mode):
                _remove_tree(folder, entry)
            elif info is not None:
                os.unlink(entry, dir_fd=folder)
    finally:
        os.close(folder)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=parent)


class Writer:
    """Writes into the folders ``roots`` of one command (see the module docstring).

    ``protect``: folders (or files) the command reads; nothing is written inside them.
    ``replace_named=True``: for a destination the user named file by file and asked to replace
    (``Clusterer.save(path, overwrite=True)``): a file found there is replaced (atomically, a link
    as a link) and nothing is recorded in that folder."""

    def __init__(
        self,
        *roots: str | os.PathLike[str],
        protect: Iterable[str | os.PathLike[str]] = (),
        replace_named: bool = False,
    ) -> None:
        if not roots:
            raise ValueError("a Writer needs at least one folder to write in")
        self._roots = [_Root(os.path.abspath(root), os.path.realpath(root)) for root in roots]
        self._protected = {os.path.realpath(folder) for folder in protect}
        self._replace_named = replace_named
        self._records: dict[str, set[str]] = {}  # root -> the paths its manifest lists, as last read
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

    def _locate(self, path: str | os.PathLike[str]) -> tuple[_Root, tuple[str, ...]]:
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

    def _folder(self, root: _Root, parts: tuple[str, ...], path: Any, create: bool) -> int | None:
        """An open descriptor of the folder ``root/parts``, every component opened without
        following a link (made when ``create``); None when a component is absent and not ``create``."""
        try:
            if create:
                os.makedirs(root.real, exist_ok=True)
            folder = os.open(root.real, _FOLDER)
        except FileNotFoundError:
            if create:
                raise
            return None
        except (FileExistsError, NotADirectoryError):
            raise ConfigError(f"{path}: {root.given} is not a folder: {_MOVE_IT}") from None
        for index, name in enumerate(parts):
            try:
                child = self._child(folder, name, create)
            except OSError as error:
                info = _entry(folder, name)
                os.close(folder)
                where = os.path.join(root.given, *parts[: index + 1])
                if info is not None and stat.S_ISLNK(info.st_mode):
                    raise ConfigError(
                        f"{path}: {where} is a symbolic link, and vtcc never writes through one: remove "
                        "the link or choose another output folder"
                    ) from None
                if error.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise ConfigError(f"{path}: {where} is not a folder: {_MOVE_IT}") from None
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
                return os.open(name, _FOLDER | _NOFOLLOW, dir_fd=folder)
            except FileNotFoundError:
                if not create:
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, dir_fd=folder)
        return os.open(name, _FOLDER | _NOFOLLOW, dir_fd=folder)

    # -- the record of what vtcc wrote ------------------------------------------------------------

    @staticmethod
    def _read_manifest(folder: str) -> set[str]:
        path = os.path.join(folder, MANIFEST)
        try:
            handle = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return set()
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EMLINK):
                raise ConfigError(
                    f"{path} is a symbolic link, not vtcc's record of the files it wrote: {_MOVE_IT}"
                ) from None
            raise
        with os.fdopen(handle, "rb") as reader:
            info = os.fstat(reader.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{path} is not vtcc's record of the files it wrote: {_MOVE_IT}")
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

    def _recorded(self, root: _Root, fresh: bool = False) -> set[str]:
        if fresh or root.real not in self._records:
            self._records[root.real] = self._read_manifest(root.real)
        return self._records[root.real]

    def _owned(self, root: _Root, parts: tuple[str, ...]) -> bool:
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
    def _locked(self, root: _Root) -> Iterator[int]:
        os.makedirs(root.real, exist_ok=True)
        folder = os.open(root.real, _FOLDER)
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

    def _change_record(self, root: _Root, add: Iterable[str] = (), drop: Iterable[str] = ()) -> None:
        add, drop = set(add), set(drop)
        if self._replace_named or (not add - self._recorded(root) and not drop & self._recorded(root)):
            return
        with self._locked(root) as folder:
            entries = (self._recorded(root, fresh=True) | add) - drop
            text = "\n".join([MANIFEST_HEADER, *(json.dumps(entry) for entry in sorted(entries))]) + "\n"
            temporary = _temporary_name(MANIFEST)
            handle = os.open(temporary, _NEW_FILE, 0o666, dir_fd=folder)
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

    def _admit(self, root: _Root, parts: tuple[str, ...], info: os.stat_result | None, path: Any) -> bool:
        """Whether ``path`` may be written (refused with one line otherwise); True when it is new."""
        if not parts:
            raise ConfigError(f"{path} is the output folder itself: give a file's path inside it")
        if info is None:
            return True
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path} is a folder where vtcc writes a file: {_MOVE_IT}")
        if not self._owned(root, parts):
            raise ConfigError(
                f"{path} exists and was not written by vtcc ({os.path.join(root.given, MANIFEST)} does not "
                f"list it): {_MOVE_IT}"
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
                self._admit(root, parts, _entry(folder, parts[-1]), path)
            finally:
                os.close(folder)

    def check_folder(self, path: str | os.PathLike[str]) -> None:
        """Refuse, without writing anything, a folder vtcc could not write into: outside the
        roots, inside a protected folder, or reached through a link or a file."""
        root, parts = self._locate(path)
        folder = self._folder(root, parts, path, create=False)
        if folder is not None:
            os.close(folder)

    def claim(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """:meth:`check` every path, then record them all as vtcc's (one change of each root's
        record, for the many files of one step, such as ``copy_images``' copies)."""
        paths = list(paths)
        self.check(*paths)
        names: dict[_Root, set[str]] = {}
        for path in paths:
            root, parts = self._locate(path)
            names.setdefault(root, set()).add("/".join(parts))
        for root, entries in names.items():
            self._change_record(root, add=entries)

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
            if self._admit(root, parts, _entry(folder, parts[-1]), path):
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
            temporary = _temporary_name(name)
            handle = os.open(temporary, _NEW_FILE, 0o666, dir_fd=folder)
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
            private = _temporary_name(name)
            os.mkdir(private, 0o700, dir_fd=folder)
            try:
                yield Path(where, private, name)
                inside = os.open(private, _FOLDER | _NOFOLLOW, dir_fd=folder)
                try:
                    info = _entry(inside, name)
                    if info is not None and not stat.S_ISREG(info.st_mode):
                        raise OSError(errno.EINVAL, f"{path}: the library wrote no regular file")
                    if info is not None:  # nothing written (a figure with nothing to show): nothing replaced
                        os.replace(name, name, src_dir_fd=inside, dst_dir_fd=folder)
                finally:
                    os.close(inside)
            finally:
                _remove_tree(folder, private)

    def append(self, path: str | os.PathLike[str]) -> IO[str]:
        """``path`` opened to append text (a log file), made when absent: only a regular file vtcc
        recorded, opened in its checked folder without following a link; the caller closes it."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK
        with self._destination(path) as (folder, name, _):
            try:
                handle = os.open(name, flags, 0o666, dir_fd=folder)
            except OSError as error:  # a link vtcc made there (ELOOP), a FIFO without a reader
                raise ConfigError(f"{path} cannot be appended to ({error.strerror}): {_MOVE_IT}") from None
        try:
            if not stat.S_ISREG(os.fstat(handle).st_mode):
                raise ConfigError(f"{path} is not a regular file: {_MOVE_IT}")
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
        descriptor = os.open(source, os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC)
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
            temporary = _temporary_name(name)
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
        private = _temporary_name(name)
        try:
            os.mkdir(private, dir_fd=folder)
            made = NewFolder(Path(root.real, *parts[:-1], private))
            try:
                yield made
                if _entry(folder, name) is None:
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
                _remove_tree(folder, private)
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
                handle = os.open(parts[-1], os.O_RDWR | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK, dir_fd=folder)
            except OSError as error:
                info = _entry(folder, parts[-1])
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
                    f"{path} cannot be written in place ({error.strerror}): {_MOVE_IT}"
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
                    f"{_MOVE_IT}"
                )
            if not self._owned(root, parts):
                raise ConfigError(
                    f"{path} exists and was not written by vtcc ({os.path.join(root.given, MANIFEST)} does "
                    f"not list it): {_MOVE_IT}"
                )
            yield writer

    def adopt(self, path: str | os.PathLike[str]) -> None:
        """Record the file at ``path`` as vtcc's: for a file whose content the caller checked is
        one vtcc writes (a feature cache's format marker), left by a vtcc that kept no record."""
        root, parts = self._locate(path)
        folder = self._folder(root, parts[:-1], path, create=False) if parts else None
        if folder is None:
            return
        try:
            info = _entry(folder, parts[-1])
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
            info = _entry(folder, parts[-1])
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
                    info = _entry(folder, parts[-1])
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
