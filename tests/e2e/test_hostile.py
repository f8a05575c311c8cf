"""Every hostile input of ``tests/hostile_inputs.py`` against what reads it.

Each case runs through its reader (fast) and a representative case of each class of each kind
through every command that reads that kind (``vtcc-train``, ``vtcc-eval``, ``vtcc-predict``,
``vtcc-shards``, ``vtcc.Clusterer``): it ends refused in one line naming the file (exit 2, no
traceback) or, where vtcc documents it, with the bad item skipped and named in a warning; never
hanging (a 60 s safety net), never creating or changing a file outside the command's own folders
(the inputs and the folder beside them are hashed before and after; an interpolation's payload
would create a marker there). A reader kind registered in :data:`vtcc.io.reader.READERS` without
cases, or without its commands named here, fails :func:`test_every_reader_kind_is_attacked`.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import vtcc
import vtcc.api
import vtcc.data.benchmarks
import vtcc.evaluate
import vtcc.predict
import vtcc.report
import vtcc.utils.checkpoint
from tests import hostile_inputs
from tests.conftest import TINY, compose_train
from tests.hostile_inputs import CLASSES, TOY_RECORD, Case, Workspace, all_cases
from vtcc.curation import apply_curation, read_curation
from vtcc.data.feature_file import FeatureDataModule, read_features
from vtcc.data.feature_store import FeatureStore
from vtcc.data.folder import load_image_folder
from vtcc.data.folder import load_npz as load_image_npz
from vtcc.data.shard_index import read_index, read_shard
from vtcc.data.shards import ShardImages, decode_bytes
from vtcc.errors import VtccError
from vtcc.evaluate import read_environment
from vtcc.io.image_files import open_image
from vtcc.io.json_records import read_json_record
from vtcc.io.numpy_files import load_npy, load_npz
from vtcc.io.reader import READERS, read_bytes, read_range
from vtcc.predict import read_path_list
from vtcc.report.figures import read_curves
from vtcc.utils.checkpoint import load_checkpoint
from vtcc.utils.cli import CONFIG_DIR, run_safely

REPO = Path(__file__).resolve().parents[2]
LIMIT = 60.0  # seconds: a safety net against a hang, far above any case's time
CASES = all_cases()


# ---------------------------------------------------------------------------------------------
# What each kind's reader is, as a call


def _read(kind: str, path: Path, workspace: Workspace, setting: str | None) -> Any:
    inside = workspace.inputs
    if kind == "bytes":
        return read_bytes(path, 1000, inside=inside)
    if kind == "range":
        return read_range(path, 4000, 2000, inside=inside)
    if kind == "json":
        return read_json_record(path, TOY_RECORD, inside=inside)
    if kind == "npy":
        return load_npy(path, inside=inside), load_npy(path, mmap=True, inside=inside)
    if kind == "npz":
        return load_npz(path, inside=inside)
    if kind == "image":
        with open_image(path) as image:
            image.load()
        return image
    if kind == "image_folder":
        return load_image_folder(path, 8, 3, skip_corrupt=setting is not None, num_threads=1)
    if kind == "npz_images":
        return load_image_npz(path)
    if kind == "feature_file":
        arrays = read_features(path)
        return FeatureDataModule(str(path)).images_at(torch.arange(len(arrays.features)))
    if kind == "shards":
        index, offsets = read_index(path)
        files = [entry["file"] for entry in index["shards"]]
        images = ShardImages(
            path, files, offsets, lambda data, where: decode_bytes(data, 8, 3, "whole", where)
        )
        return images.__getitems__(list(range(index["count"])))
    if kind == "shard_tar":
        return list(read_shard(path))
    if kind == "feature_store":
        store = FeatureStore(path)
        return store.meta(), store.open()
    if kind == "checkpoint":
        return load_checkpoint(path)
    if kind == "path_list":
        return read_path_list(path)
    if kind == "run_log":
        return read_curves(path)
    if kind == "run_environment":
        return read_environment(path)
    if kind == "curation":  # applied to two images named as its valid moves and outliers name them
        probabilities, embeddings = np.eye(4, dtype=np.float32)[:2], np.zeros((2, 2), np.float32)
        return apply_curation(read_curation(path), probabilities, embeddings, ["a.png", "b.png"])
    raise AssertionError(f"no reader call for the kind {kind}: add it to _read")


# ---------------------------------------------------------------------------------------------
# The checks every case meets


def tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (links not followed, FIFOs never opened): kind and content."""
    entries = {}
    for top, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(top, name)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                entries[str(path)] = f"link {os.readlink(path)}"
            elif stat.S_ISREG(mode):
                entries[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                entries[str(path)] = f"mode {stat.S_IFMT(mode)}"
    return entries


def release_fifos(folder: Path) -> None:
    """Open every FIFO under ``folder`` for writing (without blocking): a read stuck on one ends."""
    for top, _, files in os.walk(folder):
        for name in files:
            path = Path(top, name)
            if stat.S_ISFIFO(path.lstat().st_mode):
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass


def within_limit(call: Callable[[], Any], workspace: Workspace) -> tuple[Any, BaseException | None]:
    """``call()`` in a thread; fails the test when it does not end within :data:`LIMIT`."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - judged by the caller
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(LIMIT)
    if thread.is_alive():
        release_fifos(workspace.root)
        pytest.fail(f"still reading after {LIMIT:.0f} s: a hang")
    return outcome.get("value"), outcome.get("error")


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile_base")


def workspace_for(root: Path, base: Path) -> Workspace:
    return Workspace(root, base)


def check_untouched(workspace: Workspace, before: dict[str, str]) -> None:
    assert not workspace.marker.exists(), "an interpolation was resolved and instantiated"
    after = {**tree(workspace.inputs), **tree(workspace.outside)}
    assert after == before, f"changed: {sorted(set(after.items()) ^ set(before.items()))[:3]}"


def assert_one_line(message: str, named: str) -> None:
    assert "\n" not in message.strip() and "Traceback" not in message, message
    assert named in message, f"{named!r} not named in: {message}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_the_reader_refuses_or_skips_and_names_it(case: Case, tmp_path, base, caplog):
    workspace = workspace_for(tmp_path, base)
    path, named = case.make(workspace)
    before = {**tree(workspace.inputs), **tree(workspace.outside)}
    caplog.set_level(logging.WARNING, logger="vtcc")
    value, error = within_limit(lambda: _read(case.kind, path, workspace, case.setting), workspace)
    if case.outcome == "refused":
        assert isinstance(error, VtccError), f"not refused: {error!r}" if error else "read without a word"
        assert_one_line(str(error), named)
    else:
        assert error is None, f"{error!r}: this bad item is to be skipped, not refused"
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any(named in line for line in warnings), f"{named!r} skipped without a word: {warnings}"
    check_untouched(workspace, before)


# ---------------------------------------------------------------------------------------------
# Through the commands


# TEMI on 16 vectors, one epoch
FEATURE_RUN = ["objective=temi", "trainer.max_epochs=1", "features.num_neighbors=4", "data.batch_size=8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Small trained runs whose data lies in a ``slot`` a case's input is moved into: features
    (TEMI on 16 vectors), images (an .npz of 8 px squares) and shards (the same images)."""
    from vtcc.train import train

    root = tmp_path_factory.mktemp("hostile_runs")
    runs = {}
    values, labels = hostile_inputs.features()
    slot = root / "features" / "slot"
    slot.mkdir(parents=True)
    np.savez(slot / "features.npz", features=values, y=labels)
    cfg = compose_train(
        root / "features" / "run",
        ["data=features", f"data.root={slot / 'features.npz'}", *FEATURE_RUN],
        tiny=False,
        resolve=False,
    )
    for key, value in {
        "trainer.accelerator": "cpu",
        "report": False,
        "trainer.enable_progress_bar": False,
    }.items():
        cfg_set(cfg, key, value)
    train(cfg)
    runs["features"] = root / "features" / "run" / "checkpoints" / "last.ckpt"
    images = np.random.default_rng(0).integers(0, 256, size=(32, 8, 8), dtype=np.uint8)
    slot = root / "images" / "slot"
    slot.mkdir(parents=True)
    np.savez(slot / "images.npz", x=images, y=np.arange(32) % 2)
    train(
        compose_train(
            root / "images" / "run",
            ["data=npz", f"data.root={slot / 'images.npz'}", "data.batch_size=16", "trainer.max_epochs=1"],
        )
    )
    runs["images"] = root / "images" / "run" / "checkpoints" / "last.ckpt"
    workspace = Workspace(root / "shards", root / "base")
    shards = workspace.copy_base("shards", hostile_inputs.shard_folder) / "shards"
    train(
        compose_train(
            root / "shards" / "run",
            [
                "data=shards",
                f"data.root={shards}",
                "data.batch_size=8",
                "data.num_workers=0",
                "trainer.max_epochs=1",
            ],
        )
    )
    runs["shards"] = root / "shards" / "run" / "checkpoints" / "last.ckpt"
    runs["shards_root"] = shards
    return runs


def cfg_set(cfg, key: str, value: Any) -> None:
    from omegaconf import OmegaConf, open_dict

    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, merge=False)


class Commands:
    """The commands, in this interpreter, from ``cwd`` (the command's own folder): each returns
    ``(exit code, what it printed to stderr)``; the API's exception becomes code 2 and its line."""

    def __init__(self, cwd: Path, monkeypatch, capsys, trained: dict[str, Path]) -> None:
        self.cwd, self.monkeypatch, self.capsys, self.trained = cwd, monkeypatch, capsys, trained
        self.slot_name: str | None = None  # the data a run read instead of the case's own name
        cwd.mkdir(parents=True, exist_ok=True)
        monkeypatch.chdir(cwd)
        monkeypatch.setenv("VTCC_LOG_DIR", str(cwd / "outputs"))

    def _exit(self, task: Callable[[], Any]) -> tuple[int, str]:
        self.capsys.readouterr()
        try:
            task()
            code = 0
        except SystemExit as error:
            code = int(error.code or 0)
        except VtccError as error:  # the API raises the line itself
            return 2, f"vtcc: error: {error}"
        return code, self.capsys.readouterr().err

    def train(self, *overrides: str) -> tuple[int, str]:
        from vtcc.train import train

        cfg = compose_train(self.cwd / "run", list(overrides), resolve=False)
        return self._exit(lambda: run_safely(train, cfg))

    def train_features(self, root: Path, *overrides: str) -> tuple[int, str]:
        from vtcc.train import train

        cfg = compose_train(
            self.cwd / "run",
            ["data=features", f"data.root={root}", *FEATURE_RUN, *overrides],
            tiny=False,
            resolve=False,
        )
        for key, value in {"trainer.accelerator": "cpu", "trainer.enable_progress_bar": False}.items():
            cfg_set(cfg, key, value)
        return self._exit(lambda: run_safely(train, cfg))

    def evaluate(self, checkpoint: Path, *overrides: str) -> tuple[int, str]:
        from vtcc.evaluate import evaluate

        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            cfg = compose(
                "eval",
                [
                    f"ckpt_path={checkpoint}",
                    "trainer.accelerator=cpu",
                    f"paths.output_dir={self.cwd / 'eval'}",
                    *overrides,
                ],
            )
        return self._exit(lambda: run_safely(evaluate, cfg))

    def predict(self, checkpoint: Path, source: Path, *overrides: str) -> tuple[int, str]:
        from vtcc.predict import predict

        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            cfg = compose(
                "predict",
                [
                    f"ckpt_path={checkpoint}",
                    f"input={source}",
                    f"output={self.cwd / 'pred'}",
                    "device=cpu",
                    f"paths.output_dir={self.cwd / 'predict_log'}",
                    *overrides,
                ],
            )
        return self._exit(lambda: run_safely(predict, cfg))

    def shards(self, folder: Path) -> tuple[int, str]:
        from vtcc.data.shard_writer import main

        return self._exit(lambda: main([str(folder), str(self.cwd / "shards_out"), "--shard-size", "4"]))

    def fit(self, source: Path, **settings: Any) -> tuple[int, str]:
        overrides = {"trainer.accelerator": "cpu", "trainer.max_epochs": 1, "report": False, **settings}
        return self._exit(lambda: vtcc.Clusterer(overrides=overrides, run_dir=self.cwd / "fit").fit(source))

    def load(self, checkpoint: Path) -> tuple[int, str]:
        return self._exit(lambda: vtcc.Clusterer.load(checkpoint))

    def in_slot(self, slot: Path, source: Path, run: Callable[[], tuple[int, str]]) -> tuple[int, str]:
        """``run()`` with the case's input moved into a trained run's data ``slot`` (and back)."""
        self.slot_name = slot.name
        kept = slot.with_name(slot.name + ".kept")
        os.replace(slot, kept)
        os.replace(source, slot)
        try:
            return run()
        finally:
            os.replace(slot, source)
            os.replace(kept, slot)


TINY_TRAIN = [*TINY, "trainer.max_epochs=1"]

# The commands that read each kind, as calls (commands, case input) -> (exit code, stderr); and,
# for a bad item vtcc skips, whether the command is run on it (those that then train are not).
# A kind read by no command of its own lists none and says so: its cases reach the commands
# through the kinds that read it.
COMMANDS: dict[str, list[tuple[str, Callable[[Commands, Path], tuple[int, str]], bool]]] = {
    "bytes": [],  # core: read for shards, lists, environments
    "range": [],  # core: read for shards
    "json": [],  # core: read for shard indexes and feature stores
    "npy": [],  # core: read for feature files and feature stores
    "npz": [],  # core: read for feature files, image arrays, shard offsets
    "image": [],  # core: read for image folders, shards, paths of feature files, predict's inputs
    "shard_tar": [],  # read by WebDataset pipelines outside vtcc (vtcc reads shards by offset)
    "image_folder": [
        ("vtcc-train", lambda c, p: c.train("data=folder", f"data.root={p}", "data.batch_size=4"), False),
        ("vtcc-shards", lambda c, p: c.shards(p), True),
        ("vtcc.Clusterer", lambda c, p: c.fit(p, **{"data.batch_size": 4}), False),
        ("vtcc-predict", lambda c, p: c.predict(c.trained["images"], p), True),
    ],
    "npz_images": [
        ("vtcc-train", lambda c, p: c.train("data=npz", f"data.root={p}", "data.batch_size=4"), False),
        ("vtcc.Clusterer", lambda c, p: c.fit(p, **{"data.batch_size": 4}), False),
        (
            "vtcc-eval",
            lambda c, p: c.in_slot(_slot(c, "images"), p, lambda: c.evaluate(c.trained["images"])),
            False,
        ),
    ],
    "feature_file": [
        ("vtcc-train", lambda c, p: c.train_features(p, "report=true"), True),
        (
            "vtcc.Clusterer",
            lambda c, p: c.fit(p, objective="temi", **{"features.num_neighbors": 4, "data.batch_size": 8}),
            False,
        ),
        ("vtcc-predict", lambda c, p: c.predict(c.trained["features"], p), False),
        (
            "vtcc-eval",
            lambda c, p: c.in_slot(
                _slot(c, "features"), p, lambda: c.evaluate(c.trained["features"], "report=true")
            ),
            True,
        ),
    ],
    "shards": [
        ("vtcc-train", lambda c, p: c.train("data=shards", f"data.root={p}", "data.batch_size=8"), False),
        (
            "vtcc-eval",
            lambda c, p: c.in_slot(c.trained["shards_root"], p, lambda: c.evaluate(c.trained["shards"])),
            False,
        ),
    ],
    "feature_store": [],  # see test_a_hostile_feature_store_stops_training (its key is the run's)
    "checkpoint": [
        ("vtcc-eval", lambda c, p: c.evaluate(p), False),
        ("vtcc-predict", lambda c, p: c.predict(p, c.cwd), False),
        ("vtcc-train", lambda c, p: c.train(f"ckpt_path={p}"), False),
        ("vtcc.Clusterer", lambda c, p: c.load(p), False),
    ],
    "path_list": [("vtcc-predict", lambda c, p: c.predict(c.trained["images"], p), False)],
    "curation": [
        ("vtcc-predict", lambda c, p: c.predict(c.trained["images"], _images(c), f"curation={p}"), True),
        (
            "vtcc.Clusterer",
            lambda c, p: c._exit(
                lambda: vtcc.Clusterer.load(c.trained["images"]).apply_curation(p).predict(_images(c))
            ),
            True,
        ),
    ],
    "run_log": [
        ("vtcc-eval", lambda c, p: c.evaluate(_run_folder(c, p, "logs/metrics.csv"), "report=true"), True)
    ],
    "run_environment": [
        ("vtcc-eval", lambda c, p: c.evaluate(_run_folder(c, p, "environment.yaml"), "report=true"), True)
    ],
}


def _slot(commands: Commands, run: str) -> Path:
    """The data file a trained run reads (its ``slot`` folder's one file)."""
    (slot,) = (commands.trained[run].parents[2] / "slot").iterdir()
    return slot


def _images(commands: Commands) -> Path:
    """Two images in the command's own folder, for a command that needs some."""
    folder = commands.cwd / "images"
    folder.mkdir(exist_ok=True)
    for index in range(2):
        (folder / f"{index}.png").write_bytes(hostile_inputs.png_bytes(8, index))
    return folder


def _run_folder(commands: Commands, source: Path, name: str) -> Path:
    """A copy of the feature run's checkpoint in a run folder (the command's own) whose ``name``
    is the case's input (linked): what vtcc-eval's report reads beside the checkpoint."""
    run = commands.cwd / "copied_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(commands.trained["features"].read_bytes())
    (run / "config.yaml").write_text("copied: true\n")
    (run / name).parent.mkdir(parents=True, exist_ok=True)
    (run / name).symlink_to(source)
    return run / "checkpoints" / "last.ckpt"


def representatives() -> list[tuple[Case, str]]:
    """The first case of each class of each kind (and outcome) with each command that reads it;
    cases skipped only under a setting are the twins of refused ones, and are not run."""
    chosen, seen = [], set()
    for case in CASES:
        key = (case.kind, case.klass, case.outcome)
        if key in seen or case.setting is not None:
            continue
        seen.add(key)
        for name, _, on_skipped in COMMANDS[case.kind]:
            if case.outcome == "refused" or on_skipped:
                chosen.append((case, name))
    return chosen


REPRESENTATIVES = representatives()


@pytest.mark.parametrize(
    ("case", "command"), REPRESENTATIVES, ids=[f"{command}-{case.id}" for case, command in REPRESENTATIVES]
)
def test_every_command_refuses_or_skips_and_names_it(
    case, command, tmp_path, base, trained, monkeypatch, capsys
):
    workspace = workspace_for(tmp_path, base)
    path, named = case.make(workspace)
    before = {**tree(workspace.inputs), **tree(workspace.outside)}
    run = dict((name, call) for name, call, _ in COMMANDS[case.kind])[command]
    commands = Commands(tmp_path / "cmd", monkeypatch, capsys, trained)
    code, err = run(commands, path)
    assert "Traceback" not in err, err[-3000:]
    if case.outcome == "refused":
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(lines) == 1, err[-3000:]
        assert named in lines[0] or (commands.slot_name or named) in lines[0], lines
    else:
        assert code == 0, err[-3000:]
    check_untouched(workspace, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmd", "inputs", "outside"]


def test_a_hostile_feature_store_stops_training(tmp_path, base, monkeypatch, capsys):
    """A store planted where the run's features would be stored: each class refused in one line
    by vtcc-train, before any extraction."""
    from vtcc.build import build_run, prepare_run

    images = np.random.default_rng(0).integers(0, 256, size=(32, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", x=images)
    overrides = [
        "data=npz",
        f"data.root={tmp_path / 'images.npz'}",
        "data.in_chans=1",
        "data.mean=[0.5]",
        "data.std=[0.25]",
        "data.batch_size=16",
        "num_clusters=2",
        "model=pretrained",
        "model.pretrained=false",
        "model.name=vit_tiny_patch16_224",
        "model.model_kwargs={img_size:16,patch_size:8,depth:1}",
        "features.store=mapped",
        "features.num_views=2",
        f"features.cache_dir={tmp_path / 'cache'}",
        "trainer.accelerator=cpu",
        "report=false",
    ]
    cfg = compose_train(tmp_path / "probe", overrides, tiny=False, resolve=False)
    torch.manual_seed(cfg.seed)  # the random backbone the run's seed makes: the store's key is its weights'
    prepared = prepare_run(cfg, [])
    folder = build_run(prepared.cfg, prepared.source).datamodule.path.with_suffix(".mm")
    chosen = {}
    for case in CASES:
        chosen.setdefault(case.klass, case) if case.kind == "feature_store" else None
    from vtcc.train import train

    for klass, case in chosen.items():
        workspace = Workspace(tmp_path / klass, base)
        store, named = case.make(workspace)
        before = {**tree(workspace.inputs), **tree(workspace.outside)}
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(store, folder)
        try:
            commands = Commands(tmp_path / klass / "cmd", monkeypatch, capsys, {})
            cfg = compose_train(tmp_path / klass / "cmd" / "run", overrides, tiny=False, resolve=False)
            code, err = commands._exit(lambda cfg=cfg: run_safely(train, cfg))
        finally:
            os.replace(folder, store)
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (klass, err[-3000:])
        assert named in lines[0] or folder.name in lines[0], (klass, lines)
        check_untouched(workspace, before)


# ---------------------------------------------------------------------------------------------
# Completeness


@pytest.mark.parametrize("kind", sorted(hostile_inputs.VALID_RECORDS))
def test_the_valid_inputs_the_cases_change_are_read(kind, tmp_path, base):
    """Each typed record's cases change one field of a valid input: that input is read without
    a word, so a case is refused for its own change, not for another."""
    workspace = workspace_for(tmp_path, base)
    path, _ = hostile_inputs.VALID_RECORDS[kind](workspace)
    _, error = within_limit(lambda: _read(kind, path, workspace, None), workspace)
    assert error is None, error


def test_every_reader_kind_is_attacked():
    """Every kind of file vtcc reads has hostile cases, names the commands that read it, and every
    kind with cases is a registered reader; the typed records are attacked in every field."""
    attacked = {case.kind for case in CASES}
    assert set(READERS) - attacked == set(), "reader kinds without hostile cases"
    assert attacked - set(READERS) == set(), "cases of kinds no reader registers"
    assert set(READERS) - set(COMMANDS) == set(), "reader kinds whose commands are not named in COMMANDS"
    for kind in attacked:
        classes = {case.klass for case in CASES if case.kind == kind}
        assert classes <= set(CLASSES) and {"fifo", "truncated"} & classes, (kind, classes)
    from vtcc.curation import CURATION_RECORD
    from vtcc.data.feature_store import META_RECORD
    from vtcc.data.probe import PROBE_RECORD
    from vtcc.data.shard_index import INDEX_RECORD, SAMPLE_RECORD

    for kind, schema in (
        ("shards", INDEX_RECORD),
        ("shards", PROBE_RECORD),
        ("shard_tar", SAMPLE_RECORD),
        ("feature_store", META_RECORD),
        ("json", TOY_RECORD),
        ("curation", CURATION_RECORD),
    ):
        prefix = ("sample",) if schema is PROBE_RECORD else ()
        names = {case.name for case in CASES if case.kind == kind}
        for path, _ in hostile_inputs.fields(schema, prefix):
            where = ".".join(map(str, path))
            assert f"{where}=create" in names and any(
                n.startswith(f"{where}=") and n[len(where) + 1 :] not in ("create", "env") for n in names
            ), (kind, where)


# Raw reads of files outside vtcc/io/ (the readers): each is here with the reason it needs no typed
# reader. A new one fails the test below until it goes through vtcc.io's readers (and so joins the
# hostile suite) or is listed with its reason.
RAW_READS_ALLOWED = {
    ("vtcc/report/page.py", "read_bytes"): "the report's own figures, just written",
    ("vtcc/explorer.py", "read_text"): "the explorer's script, shipped with vtcc",
    ("vtcc/utils/app_help.py", "read_text"): "vtcc's own config files",
    ("vtcc/utils/app_help.py", "load"): "yaml.safe_load of vtcc's own config files",
    ("vtcc/plugins.py", "read_text"): "an installed plugin's own config files",
    ("vtcc/plugins.py", "load"): "OmegaConf.load of an installed plugin's own config files",
    ("vtcc/config/resolve.py", "load"): "OmegaConf.load of vtcc's own config files",
    ("vtcc/config/data_defaults.py", "load"): "OmegaConf.load of vtcc's own config files",
    ("vtcc/config/curation_run.py", "load"): "OmegaConf.load of vtcc's own config files",
    (
        "vtcc/models/pretrained.py",
        "load",
    ): "torch.load of a weights file: a regular file (check_regular), weights_only",
    (
        "vtcc/data/cache_files.py",
        "load",
    ): "torch.load of vtcc's feature cache: a regular file (check_regular), weights_only",
    ("vtcc/data/shard_writer.py", "open"): "tarfile.open of the shards vtcc-shards has just written",
    ("vtcc/utils/checkpoint.py", "load"): "torch.load of a handle from open_regular (zip format checked)",
    ("vtcc/evaluate.py", "load"): "yaml.safe_load of bytes from read_bytes",
    ("vtcc/utils/environment.py", "load"): "yaml.safe_load of bytes from read_bytes",
    ("vtcc/data/benchmarks.py", "fromfile"): "STL-10's published binary files (not yet through the reader)",
}
# Calls that read a file: a method of a path (``.read_text()``), a loader of a module, ``open``.
PATH_READS = {"read_text", "read_bytes"}
MODULE_READS = {
    "np": {"load", "fromfile"},
    "numpy": {"load", "fromfile"},
    "torch": {"load"},
    "json": {"load"},
    "pickle": {"load"},
    "yaml": {"safe_load", "load"},
    "OmegaConf": {"load"},
    "tarfile": {"open"},
    "Image": {"open"},
    "zipfile": {"ZipFile"},
}


def raw_reads() -> set[tuple[str, str]]:
    """``(file, call)`` of every call in vtcc/ (but vtcc/io/) that reads a file itself."""
    found = set()
    for path in sorted((REPO / "vtcc").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith("vtcc/io/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            function = node.func
            if isinstance(function, ast.Name) and function.id == "open":
                found.add((relative, "open"))
            elif isinstance(function, ast.Attribute):
                owner = function.value.id if isinstance(function.value, ast.Name) else None
                if function.attr in MODULE_READS.get(owner, ()):
                    found.add((relative, "load" if function.attr in ("load", "safe_load") else function.attr))
                elif function.attr in PATH_READS and owner not in ("vtcc", "reader"):
                    found.add((relative, function.attr))
    return found


def test_vtcc_reads_files_only_through_the_reader():
    unknown = raw_reads() - set(RAW_READS_ALLOWED)
    assert not unknown, (
        f"files read around vtcc.io.reader (use it, or list the read with its reason): {sorted(unknown)}"
    )


@pytest.mark.parametrize(
    "recorded",
    [
        b"slurm_job_id: [5]\n",  # a list whose text is the job id: not a job id
        b"slurm_job_id: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",  # past YAML's recursion limit
    ],
    ids=["list", "nested"],
)
def test_a_requeued_job_takes_only_a_plain_job_id_as_its_folders(recorded, tmp_path, monkeypatch):
    """environment.yaml decides whether a requeued SLURM job may continue in a folder: only a
    string or number names the job (a list with aliases would be expanded to print it), and a
    file YAML cannot read is no record (never a traceback)."""
    from vtcc.config.resume import own_run_folder

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "[5]")
    (tmp_path / "environment.yaml").write_bytes(recorded)
    assert own_run_folder(tmp_path) is False
    (tmp_path / "environment.yaml").write_bytes(b"slurm_job_id: '[5]'\n")
    assert own_run_folder(tmp_path) is True


def test_a_shard_is_read_as_a_file_never_as_a_url(tmp_path, monkeypatch):
    """``read_shard`` opens the file itself: a shard named like one of WebDataset's URLs
    (``pipe:<command>``) is read as the file it is, and no command runs."""
    monkeypatch.chdir(tmp_path)
    shard = Path("pipe:touch pwned")
    shard.write_bytes(hostile_inputs._sample_tar({"index": 0, "path": "a.png"}))
    assert [(index, label) for index, _, label in read_shard(shard)] == [(0, 1)]
    assert not (tmp_path / "pwned").exists()


def test_only_the_image_formats_vtcc_reads_are_opened(tmp_path):
    """A file named as an image but holding another of PIL's formats (EPS, whose decoding runs
    Ghostscript on it) is refused in one line naming it, before anything decodes it."""
    path = tmp_path / "a.png"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    with pytest.raises(VtccError) as error:
        with open_image(path):
            pass
    assert_one_line(str(error.value), "a.png")
