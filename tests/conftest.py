"""Shared fixtures: the real Hydra config, composed with tiny CPU settings."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from tests.warm_interpreter import WarmInterpreter
from vtcc.config.data_defaults import resolve_data_defaults
from vtcc.config.recipe import resolve_learning_rate
from vtcc.config.resolve import resolve_cluster_heads
from vtcc.objectives import objective_class
from vtcc.utils.cli import CONFIG_DIR


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests run only where CUDA exists; everywhere else they are reported as skipped."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# A model and run small enough for a 2-core CPU; every CLI test shares them.
TINY = [
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "data.image_size=8",
    "data.batch_size=128",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "trainer.check_val_every_n_epoch=1",
    "trainer.enable_progress_bar=false",
    "report=false",  # the report's own tests ask for it
]


def compose_train(
    output_dir: Path, overrides: list[str] = (), tiny: bool = True, resolve: bool = True
) -> DictConfig:
    """The real train config, its ``auto`` settings resolved as vtcc-train does (from the images
    when ``data.root`` exists; ``resolve=False`` leaves that to ``train``); ``tiny`` adds the
    small-model settings of :data:`TINY`."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        base = TINY if tiny else []
        cfg = compose("train", overrides=[*base, f"paths.output_dir={output_dir}", *overrides])
    if not resolve:
        return cfg
    if not (cfg.get("resume") or cfg.get("ckpt_path") or cfg.get("init_from")):
        resolve_cluster_heads(cfg, {})  # a new run's (resolve reads a resumed or source run's)
        resolve_learning_rate(cfg, objective_class(cfg), {})
    root = cfg.data.get("root")
    resolve_data_defaults(
        cfg,
        probe=root is not None and not OmegaConf.is_missing(cfg.data, "root") and Path(str(root)).exists(),
    )
    return cfg


def evaluate_in_process(checkpoint: Path, output_dir: Path, *overrides: str) -> dict[str, float]:
    """``vtcc-eval ckpt_path=<checkpoint>`` in this interpreter; its metrics."""
    from vtcc.evaluate import evaluate

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "eval",
            [
                f"ckpt_path={checkpoint}",
                "trainer.accelerator=cpu",
                f"paths.output_dir={output_dir}",
                *overrides,
            ],
        )
    return evaluate(cfg)


@pytest.fixture
def fresh_extras():
    """The optional extras looked up afresh, and the fake ones a test imports from its own folders
    dropped after it."""
    from vtcc.utils import extras

    extras.optional_module.cache_clear()
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.partition(".")[0] in ("umap", "faiss"):  # the fake packages those tests write
            del sys.modules[name]
    extras.optional_module.cache_clear()


@pytest.fixture
def no_extras(fresh_extras, monkeypatch: pytest.MonkeyPatch):
    """As if no optional extra (umap-learn, faiss, pyarrow) were installed."""
    from vtcc.utils import extras

    monkeypatch.setattr(extras, "_find_spec", lambda name: None)


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> DictConfig:
    return compose_train(tmp_path / "run")


def run_cli(module: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m vtcc.<module>`` like a user would, with outputs under ``cwd``."""
    env = {**os.environ, "VTCC_LOG_DIR": str(cwd / "outputs"), "PYTHONWARNINGS": "ignore"}
    return WARM.run([sys.executable, "-m", f"vtcc.{module}", *overrides], cwd=cwd, env=env, timeout=600)


# One per test process: commands fork from an interpreter that has imported vtcc already.
WARM = WarmInterpreter()


@pytest.fixture(scope="session", autouse=True)
def _close_warm_interpreter():
    yield
    WARM.close()


@pytest.fixture
def train_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """``vtcc-train`` without a new interpreter: the composed config through the CLI's own
    ``run_safely``; returns ``(exit code, stderr)``. For the user-mistake paths, whose cost would
    otherwise be the import of torch and Lightning in a subprocess."""
    from vtcc.train import train
    from vtcc.utils.cli import run_safely

    def run(*overrides: str) -> tuple[int, str]:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("VTCC_LOG_DIR", str(tmp_path / "outputs"))
        try:
            run_safely(train, compose_train(tmp_path / "run", list(overrides), resolve=False))
            code = 0
        except SystemExit as error:
            code = int(error.code or 0)
        return code, capsys.readouterr().err

    return run


@pytest.fixture
def predict_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """``vtcc-predict`` in this interpreter, from ``cwd``: ``(exit code, stderr)``."""
    from vtcc.predict import predict
    from vtcc.utils.cli import run_safely

    def run(cwd: Path, *overrides: str) -> tuple[int, str]:
        monkeypatch.chdir(cwd)
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            cfg = compose("predict", overrides=[*overrides, f"paths.output_dir={cwd / 'predict_log'}"])
        try:
            run_safely(predict, cfg)
            code = 0
        except SystemExit as error:
            code = int(error.code or 0)
        return code, capsys.readouterr().err

    return run


# Checkpoints of in-process runs, compared bit for bit (resume tests at every level).
def last_checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def assert_same_training_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for state_a, state_b in zip(
        a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(), strict=True
    ):
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key]), key


def input_snapshot(*paths: Path) -> dict[str, tuple]:
    """Everything under ``paths`` (folders walked without following links, or single files): each
    file's SHA-256, size, mode and modification time, each link's target, each folder's mode,
    time and entries. What a command must leave as it found it in a user's input."""
    snapshot: dict[str, tuple] = {}

    def record(path: str) -> None:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            snapshot[path] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            snapshot[path] = ("folder", info.st_mode, info.st_mtime_ns, tuple(sorted(os.listdir(path))))
        else:
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            snapshot[path] = ("file", digest, info.st_size, info.st_mode, info.st_mtime_ns)

    for top in map(str, paths):
        record(top)
        if os.path.isdir(top) and not os.path.islink(top):
            for base, folders, files in os.walk(top):  # links to folders are listed, not entered
                for name in folders + files:
                    record(os.path.join(base, name))
    return snapshot


def changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """What differs between two :func:`input_snapshot` s, one line a path."""
    lines = [f"{path}: removed" for path in sorted(set(before) - set(after))]
    lines += [f"{path}: added" for path in sorted(set(after) - set(before))]
    lines += [
        f"{path}: {before[path]} -> {after[path]}"
        for path in sorted(set(before) & set(after))
        if before[path] != after[path]
    ]
    return lines


@pytest.fixture
def untouched_inputs():
    """``untouched_inputs(folder_or_file, ...)`` before a command runs on a user's input: when the
    test ends, every file there has the same bytes, mode and time, every link the same target and
    every folder the same entries (the test fails naming what changed)."""
    watched: list[tuple[tuple[Path, ...], dict[str, tuple]]] = []

    def watch(*paths: Path) -> None:
        watched.append((paths, input_snapshot(*paths)))

    yield watch
    changed = [line for paths, before in watched for line in changes(before, input_snapshot(*paths))]
    assert not changed, "a command changed its input:\n" + "\n".join(changed[:20])
