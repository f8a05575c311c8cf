"""vtcc.io.writer: every file vtcc writes lands inside the command's own folders, atomically, never
through a symbolic link, never onto a file vtcc did not write."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import vtcc
from vtcc.data.feature_store import FeatureStore
from vtcc.errors import ConfigError
from vtcc.io.manifest import MANIFEST
from vtcc.io.writer import Writer
from vtcc.utils.checkpoint import AtomicCheckpointIO


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A user's file outside the output folder."""
    path = tmp_path / "user" / "photo.png"
    path.parent.mkdir()
    path.write_bytes(b"the user's own bytes")
    return path


def refused(action, *words: str) -> str:
    """``action()`` raises one ConfigError line holding ``words``; its message."""
    with pytest.raises(ConfigError) as error:
        action()
    message = str(error.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_a_link_vtcc_made_is_replaced_as_a_link_and_its_target_keeps_its_bytes(tmp_path, victim):
    out = tmp_path / "out"
    writer = Writer(out)
    writer.link_file(victim, out / "a.png")  # what copy_images=link makes
    assert (out / "a.png").is_symlink()
    writer.write_bytes(out / "a.png", b"results")
    assert not (out / "a.png").is_symlink() and (out / "a.png").read_bytes() == b"results"
    writer.link_file(victim, out / "b.png")
    writer.copy_file(tmp_path / "out" / "a.png", out / "b.png")  # copy_images=copy after link
    assert not (out / "b.png").is_symlink() and (out / "b.png").read_bytes() == b"results"
    writer.link_file(victim, out / "b.png")  # and link after copy: the copy is replaced, not written
    assert os.readlink(out / "b.png") == str(victim)
    for action in (
        lambda: writer.write_text(out / "b.png", "x"),
        lambda: writer.save_array(out / "b.png", np.zeros(3)),
        lambda: writer.write_json(out / "b.png", {}),
    ):
        action()
        writer.link_file(victim, out / "b.png")
    assert victim.read_bytes() == b"the user's own bytes"


def test_a_link_vtcc_did_not_make_is_refused_and_never_followed(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    (out / "clusters.csv").symlink_to(victim)
    writer = Writer(out)
    refused(lambda: writer.write_text(out / "clusters.csv", "x"), str(out / "clusters.csv"), "move it away")
    refused(lambda: writer.copy_file(victim, out / "clusters.csv"), "not written by vtcc")
    with pytest.raises(ConfigError, match="symbolic link"):
        with writer.update(out / "clusters.csv"):
            pass
    assert (out / "clusters.csv").is_symlink() and victim.read_bytes() == b"the user's own bytes"


def test_a_destination_outside_the_command_folders_is_refused(tmp_path, victim):
    out = tmp_path / "out"
    writer = Writer(out)
    refused(lambda: writer.write_bytes(victim, b"x"), str(victim), "outside the folders")
    refused(lambda: writer.write_bytes(out / ".." / "user" / "photo.png", b"x"), "outside the folders")
    refused(lambda: writer.make_dirs(tmp_path / "elsewhere"), "outside the folders")
    assert victim.read_bytes() == b"the user's own bytes" and not (tmp_path / "elsewhere").exists()
    assert not out.exists()  # refused before anything was made


def test_a_folder_on_the_way_that_is_a_link_is_refused(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    (out / "cluster_000").symlink_to(victim.parent, target_is_directory=True)
    writer = Writer(out)
    for action in (
        lambda: writer.write_bytes(out / "cluster_000" / "photo.png", b"x"),
        lambda: writer.write_bytes(out / "cluster_000" / "new.png", b"x"),
        lambda: writer.make_dirs(out / "cluster_000" / "deeper"),
        lambda: writer.check(out / "cluster_000" / "new.png"),
    ):
        refused(action, "cluster_000", "symbolic link")
    assert names(victim.parent) == ["photo.png"] and victim.read_bytes() == b"the user's own bytes"
    (out / "file").write_text("a user's file")
    refused(lambda: writer.write_bytes(out / "file" / "x", b"x"), "is not a folder")


def test_a_file_vtcc_did_not_write_is_refused_and_one_it_wrote_is_replaced_by_a_later_command(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.csv").write_text("a user's notes")
    Writer(out).write_text(out / "clusters.csv", "first run")
    later = Writer(out)  # the next command into the same folder (overwrite=true)
    later.check(out / "clusters.csv")
    later.write_text(out / "clusters.csv", "second run")
    assert (out / "clusters.csv").read_text() == "second run"
    refused(lambda: later.write_text(out / "notes.csv", "x"), str(out / "notes.csv"), "not written by vtcc")
    refused(lambda: later.claim([out / "new.csv", out / "notes.csv"]), "notes.csv")
    refused(lambda: later.remove(out / "notes.csv"), "not written by vtcc")
    assert (out / "notes.csv").read_text() == "a user's notes"
    assert not (out / "new.csv").exists()
    (out / "report").mkdir()
    refused(lambda: later.write_text(out / "report", "x"), "is a folder")


def test_a_failed_write_leaves_the_previous_file_whole_and_no_temporary_file(tmp_path):
    out = tmp_path / "out"
    writer = Writer(out)
    writer.write_bytes(out / "metrics.json", b"previous")
    with pytest.raises(RuntimeError, match="disk full"):
        with writer.open(out / "metrics.json") as handle:
            handle.write(b"partial")
            assert (out / "metrics.json").read_bytes() == b"previous"  # nothing renamed yet
            raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        with writer.temporary(out / "metrics.json") as path:
            path.write_bytes(b"partial")
            raise RuntimeError("disk full")
    assert (out / "metrics.json").read_bytes() == b"previous"
    assert names(out) == [MANIFEST, "metrics.json"]


def test_a_checkpoint_save_that_crashes_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO(tmp_path / "run")
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, target)

    def crash_midway(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2)}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["step"] == 1
    assert names(target.parent) == ["last.ckpt"]
    AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(3)}, target)  # its own folder: known
    assert torch.load(target, weights_only=True)["step"] == 3


def test_nothing_is_written_inside_what_the_command_reads(tmp_path, victim):
    refused(lambda: Writer(victim.parent / "out", protect=[victim.parent]), "which this command reads")
    writer = Writer(tmp_path, protect=[victim.parent])
    refused(lambda: writer.write_bytes(victim.parent / "new.png", b"x"), "which this command reads")
    assert names(victim.parent) == ["photo.png"]


def test_only_what_vtcc_recorded_is_removed(tmp_path, victim):
    out = tmp_path / "out"
    writer = Writer(out)
    writer.link_file(victim, out / "cluster_000" / "000000_photo.png")
    writer.write_text(out / "cluster_001" / "000001_a.png", "copy")
    (out / "cluster_001" / "mine.txt").write_text("a user's file")
    assert Writer(out).remove_recorded("cluster_*/*") == 2
    assert names(out) == [MANIFEST, "cluster_001"]  # the emptied folder is gone, the user's file kept
    assert names(out / "cluster_001") == ["mine.txt"] and victim.read_bytes() == b"the user's own bytes"
    assert not Writer(out).remove(out / "cluster_000" / "000000_photo.png")  # not recorded any more


def test_a_file_is_written_in_place_only_when_vtcc_made_it_with_no_other_name(tmp_path, victim):
    out = tmp_path / "out"
    writer = Writer(out)
    writer.write_bytes(out / "a.npy", b"0000")
    with writer.update(out / "a.npy") as handle:
        handle.write(b"12")
    assert (out / "a.npy").read_bytes() == b"1200"
    os.link(victim, out / "b.npy")  # a hard link to the user's file, recorded as if vtcc wrote it
    writer.adopt(out / "b.npy")
    with pytest.raises(ConfigError, match="hard links"):
        with writer.update(out / "b.npy") as handle:
            handle.write(b"overwritten")
    assert victim.read_bytes() == b"the user's own bytes"


def store_part(store: FeatureStore, layout: dict) -> None:
    part = torch.ones(layout["part_size"], layout["dim"])
    views = torch.ones(layout["views"], layout["part_size"], layout["dim"])
    store.write(0, layout, part, views, torch.zeros(layout["part_size"], dtype=torch.long))


@pytest.mark.parametrize("name", ["eval", "views", "labels"])
def test_a_mapped_store_whose_array_is_a_link_is_refused_and_the_linked_file_kept(tmp_path, name):
    """Hole 1 of the issue: the mapped store wrote its parts through a link planted for an array."""
    store = FeatureStore(tmp_path / "cache" / "key.mm")
    layout = FeatureStore.layout(count=8, dim=4, views=2, part_size=4)
    store.create_if_absent(layout)
    array = store.folder / f"{name}.npy"
    outside = tmp_path / f"{name}.npy"
    outside.write_bytes(array.read_bytes())  # a valid array of the store's shape, elsewhere
    before = outside.read_bytes()
    array.unlink()
    array.symlink_to(outside)
    refused(lambda: store_part(store, layout), str(array), "symbolic link")
    assert outside.read_bytes() == before and store.done() == set()


def test_a_mapped_store_writes_its_parts_into_its_own_files(tmp_path):
    store = FeatureStore(tmp_path / "cache" / "key.mm")
    layout = FeatureStore.layout(count=8, dim=4, views=2, part_size=4)
    store.create_if_absent(layout)
    store_part(store, layout)
    assert store.done() == {0}
    assert np.array_equal(np.load(store.folder / "eval.npy")[:4], np.ones((4, 4), np.float16))
    assert np.array_equal(np.load(store.folder / "eval.npy")[4:], np.zeros((4, 4), np.float16))
    assert np.array_equal(np.load(store.folder / "views.npy")[:, :4], np.ones((2, 4, 4), np.float16))


# A call that writes, copies, links, moves or removes a file or folder by itself.
WRITES = re.compile(
    r"open\([^)]*['\"][wax]b?\+?['\"]|\.write_(text|bytes)\(|np\.save(z|txt|z_compressed)?\(|torch\.save\("
    r"|\.savefig\(|shutil\.(copy|copy2|copyfile|copytree|move|rmtree)\(|open_memmap\(|mmap_mode=.r\+"
    r"|os\.(symlink|replace|rename|renames|remove|unlink|mkdir|makedirs|link|truncate)\(|\.tofile\("
    r"|\.(symlink_to|hardlink_to|mkdir|touch|unlink|rmdir)\(|(pq|parquet)\.write_table\(|to_parquet\(|FileHandler\("
)
# What the Writer hands out: itself, a new file's handle, a temporary path, a private new folder.
THROUGH_THE_WRITER = re.compile(r"\bwriter\b|Writer\(|\bhandle\b|\btemporary\b|building\.path")
OPENED_BY_THE_WRITER = re.compile(r"\bwriter\b|Writer\(")  # open(..., "w") itself: only the Writer's
# The Writer itself: its writes (writer.py), the record of what it wrote (manifest.py), the private
# folders it removes (write_folders.py).
WRITER_MODULES = {"vtcc/io/writer.py", "vtcc/io/manifest.py", "vtcc/io/write_folders.py"}
ELSEWHERE = {
    (
        "vtcc/report/figures.py",
        ".savefig(",
    ): "a figure draws into the path write_report gives it: Writer.temporary's",
}


def test_every_write_in_vtcc_goes_through_the_writer():
    package = Path(vtcc.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package.parent).as_posix()
        if name in WRITER_MODULES:
            continue
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            context = line + " " + (lines[number] if number < len(lines) else "")  # a call may go on
            match = WRITES.search(line)
            if match is None or line.lstrip().startswith("#"):
                continue
            allowed = OPENED_BY_THE_WRITER if match.group().startswith("open(") else THROUGH_THE_WRITER
            if allowed.search(context) or any(name == where and call in line for where, call in ELSEWHERE):
                continue
            found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "write through vtcc.io.writer.Writer:\n" + "\n".join(found)


def test_a_planted_record_never_reaches_outside_its_folder(tmp_path, victim):
    """A record (``.vtcc-files``) in a folder handed to vtcc as output (a colleague's results, a
    downloaded archive) listing ``..`` or absolute paths: nothing outside the folder is removed or
    replaced because of it."""
    out = tmp_path / "out"
    (out / "cluster_000").mkdir(parents=True)
    (out / "outliers").mkdir()
    escaping = [
        "cluster_000/../../user/photo.png",
        "outliers/../../user/photo.png",
        str(victim),
        "./clusters.csv",
        "cluster_000//x.png",
    ]
    (out / MANIFEST).write_text("# planted\n" + "".join(f'"{entry}"\n' for entry in escaping))
    (out / "clusters.csv").write_text("a user's table")
    writer = Writer(out)
    assert writer.remove_recorded("cluster_*/*", "outliers/*", "*") == 0
    assert victim.read_bytes() == b"the user's own bytes"
    refused(lambda: writer.write_text(out / "clusters.csv", "x"), "not written by vtcc")
    assert (out / "clusters.csv").read_text() == "a user's table"


def test_another_users_record_is_not_trusted(tmp_path, monkeypatch):
    """A record another user owns (one planted in a shared, world-writable folder above the
    output, such as /tmp) lists nothing as vtcc's."""
    shared = tmp_path / "shared"
    out = shared / "out"
    out.mkdir(parents=True)
    (out / "clusters.csv").write_text("a user's table")
    (shared / MANIFEST).write_text('"out/clusters.csv"\n')
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 1)  # the record is now another user's
    refused(lambda: Writer(out).write_text(out / "clusters.csv", "x"), "not written by vtcc")
    assert (out / "clusters.csv").read_text() == "a user's table"


def test_a_fifo_is_never_copied(tmp_path):
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    refused(lambda: Writer(out).copy_file(fifo, out / "copy.png"), str(fifo), "not a regular file")
    assert not (out / "copy.png").exists()


def test_the_librarys_log_file_is_never_written_through_a_link(tmp_path, victim):
    """``vtcc.Clusterer``'s ``<run>/train.log``: appended to when vtcc made it, refused when a link
    (or a file vtcc did not write) stands there, its target untouched."""
    import logging

    from vtcc.api.run_folder import run_logging

    run = tmp_path / "run"
    for _ in range(2):  # a second fit into the same folder (overwrite=True) appends
        with run_logging(run):
            logging.getLogger("vtcc").info("a line")
    assert (run / "train.log").read_text().count("a line") == 2
    (run / "train.log").unlink()
    (run / "train.log").symlink_to(victim)
    with pytest.raises(ConfigError, match="train.log"):
        with run_logging(run):
            logging.getLogger("vtcc").info("a line")
    assert victim.read_bytes() == b"the user's own bytes"


def test_what_an_earlier_command_wrote_into_a_folder_this_one_reads_is_not_removed(tmp_path):
    """``vtcc-predict input=out/cluster_000 output=out overwrite=true``: the earlier prediction's
    copies in cluster_000 are this command's input now, and stay."""
    out = tmp_path / "out"
    Writer(out).write_bytes(out / "cluster_000" / "000000_a.png", b"an image")
    Writer(out).write_bytes(out / "cluster_001" / "000001_b.png", b"another")
    later = Writer(out, protect=[out / "cluster_000"])
    assert later.remove_recorded("cluster_*/*") == 1
    assert (out / "cluster_000" / "000000_a.png").read_bytes() == b"an image"
    assert not (out / "cluster_001").exists()
