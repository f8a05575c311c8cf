"""Exact resume, crash recovery, safe checkpoints and clear errors for bad input."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import TINY, WARM, assert_same_training_state, compose_train, last_checkpoint, run_cli
from tests.warm_interpreter import WarmProcess
from vtcc.data import load_digits
from vtcc.errors import ConfigError, TrainingDivergedError
from vtcc.objectives import ContrastiveClustering
from vtcc.train import train


def train_run(output_dir: Path, *overrides: str) -> dict[str, float]:
    return train(compose_train(output_dir, list(overrides)))


def logged_losses(run: Path) -> dict[str, str]:
    with open(run / "logs" / "metrics.csv") as handle:
        return {row["epoch"]: row["train/loss"] for row in csv.DictReader(handle) if row["train/loss"]}


def test_stopped_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path):
    train_run(tmp_path / "whole", "trainer.max_epochs=4")
    train_run(tmp_path / "first", "trainer.max_epochs=2")
    train_run(
        tmp_path / "second", "trainer.max_epochs=4", f"ckpt_path={tmp_path / 'first/checkpoints/last.ckpt'}"
    )
    assert_same_training_state(last_checkpoint(tmp_path / "whole"), last_checkpoint(tmp_path / "second"))
    whole, resumed = logged_losses(tmp_path / "whole"), logged_losses(tmp_path / "second")
    assert resumed == {"2": whole["2"], "3": whole["3"]}  # the same losses to the last digit


@pytest.mark.slow
def test_twenty_resume_cycles_equal_one_run(tmp_path):
    arrays = load_digits()
    np.savez(tmp_path / "small.npz", x=arrays.images[:160, 0].numpy(), y=arrays.labels[:160].numpy())
    small = [
        "data=npz",
        f"data.root={tmp_path / 'small.npz'}",
        "data.in_chans=1",
        "data.batch_size=64",
        "data.image_size=8",
        "data.mean=[0.3]",
        "data.std=[0.4]",
        "trainer.check_val_every_n_epoch=5",
    ]
    train_run(tmp_path / "whole", *small, "trainer.max_epochs=20")
    previous = None
    for cycle in range(1, 21):
        resume = [f"ckpt_path={previous}"] if previous else []
        train_run(tmp_path / f"cycle{cycle}", *small, f"trainer.max_epochs={cycle}", *resume)
        previous = tmp_path / f"cycle{cycle}" / "checkpoints" / "last.ckpt"
    assert_same_training_state(last_checkpoint(tmp_path / "whole"), last_checkpoint(tmp_path / "cycle20"))


def start_training(cwd: Path, *overrides: str) -> WarmProcess:
    """``vtcc-train`` started as a process of its own (forked from the warm interpreter), to signal."""
    env = {**os.environ, "VTCC_LOG_DIR": str(cwd / "outputs"), "PYTHONWARNINGS": "ignore"}
    return WARM.start([sys.executable, "-m", "vtcc.train", *TINY, *overrides], cwd=cwd, env=env)


def wait_for(path: Path, process: WarmProcess, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_latest_finishes(tmp_path):
    process = start_training(tmp_path, "trainer.max_epochs=50", "hydra.run.dir=outputs/train/killed")
    checkpoint = tmp_path / "outputs/train/killed/checkpoints/last.ckpt"
    wait_for(checkpoint, process)
    time.sleep(0.5)  # into the next epoch
    process.kill()
    process.wait()
    saved = torch.load(checkpoint, weights_only=True)  # whole and loadable
    assert saved["epoch"] < 49  # killed before the run could finish
    result = run_cli(
        "train",
        *TINY,
        f"trainer.max_epochs={saved['epoch'] + 2}",  # one more epoch than the checkpoint holds
        "resume=latest",
        "hydra.run.dir=outputs/train/resumed",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = last_checkpoint(tmp_path / "outputs/train/resumed")
    assert resumed["epoch"] == saved["epoch"] + 1
    assert resumed["global_step"] == (saved["epoch"] + 2) * (1797 // 128)


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_a_checkpoint_that_resume_latest_uses(tmp_path, sent):
    """Ctrl-C also leaves the run's report; a pre-emption's SIGTERM does not wait for one."""
    process = start_training(
        tmp_path, "trainer.max_epochs=50", "hydra.run.dir=outputs/train/stopped", "report=true"
    )
    wait_for(tmp_path / "outputs/train/stopped/checkpoints/last.ckpt", process)
    time.sleep(0.3)
    process.send_signal(sent)
    process.wait(timeout=120)
    interrupted = tmp_path / "outputs/train/stopped/checkpoints/interrupted.ckpt"
    assert interrupted.is_file(), process.stderr.read()[-3000:]
    state = torch.load(interrupted, weights_only=True)
    assert state["global_step"] > 0 and "vtcc_config" in state
    report = tmp_path / "outputs/train/stopped/report"
    assert (report / "report.html").is_file() == (sent == signal.SIGINT)
    stopped = json.loads((tmp_path / "outputs/train/stopped/final_metrics.json").read_text())["stopped"]
    assert stopped["reason"] == "signal" and stopped["epochs"] > 0  # why training ended
    if sent == signal.SIGINT:
        assert "structure" in json.loads((report / "quality.json").read_text())
        assert "because it was interrupted" in (report / "report.html").read_text()
        assert "Traceback" not in process.stderr.read()


def test_resume_with_another_model_says_what_differs(tmp_path):
    train_run(tmp_path / "run", "trainer.max_epochs=1")
    result = run_cli(
        "train",
        *TINY,
        "model.embed_dim=64",
        f"ckpt_path={tmp_path / 'run/checkpoints/last.ckpt'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model.embed_dim: 32 -> 64" in result.stderr


def test_a_run_never_writes_over_another(tmp_path):
    first = run_cli("train", *TINY, "trainer.max_epochs=1", "hydra.run.dir=same", cwd=tmp_path)
    assert first.returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "same/checkpoints").iterdir()}
    again = compose_train(tmp_path / "same", ["trainer.max_epochs=1"])  # the same run folder
    with pytest.raises(ConfigError, match="overwrite=true"):
        train(again)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "same/checkpoints").iterdir()} == before


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    train_run(tmp_path / "good", "trainer.max_epochs=1")
    good = tmp_path / "good/checkpoints/last.ckpt"
    before = good.read_bytes()
    losses = ContrastiveClustering.losses

    def diverging(self, *args, **kwargs):  # a NaN weight is refused by its range before any work
        terms = losses(self, *args, **kwargs)
        return {**terms, "loss": terms["loss"] * float("nan")}

    monkeypatch.setattr(ContrastiveClustering, "losses", diverging)
    with pytest.raises(TrainingDivergedError, match="NaN or infinite"):
        train_run(tmp_path / "bad", "trainer.max_epochs=3", f"ckpt_path={good}")
    assert good.read_bytes() == before
    assert not (tmp_path / "bad/checkpoints/last.ckpt").exists()


def test_collapse_is_reported_with_remedies(tiny_cfg, caplog):
    module = instantiate(tiny_cfg.module, network=instantiate(tiny_cfg.model))
    module._trainer = SimpleNamespace(is_global_zero=True)
    with caplog.at_level(logging.WARNING, logger="vtcc"):
        module._warn_on_collapse(np.zeros(100, dtype=int))
        assert not caplog.records  # one evaluation is not yet a trend
        module._warn_on_collapse(np.zeros(100, dtype=int))
    assert "cluster collapse" in caplog.text and "entropy_weight" in caplog.text
    caplog.clear()
    module._warn_on_collapse(np.arange(100) % 10)  # all clusters used again: the count restarts
    module._warn_on_collapse(np.zeros(100, dtype=int))
    assert not caplog.records


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=folder", "data.root=missing_folder"], "does not exist"),
        (["data=folder", "data.root=empty"], "no images"),
        (["data=folder", "data.root=broken"], "unreadable image"),
        (["model.patch_size=3"], "power of two"),
    ],
)
def test_more_bad_input_is_one_clear_line(tmp_path, train_in_process, overrides, message):
    (tmp_path / "empty").mkdir()
    for name in ("a", "b"):
        (tmp_path / "broken" / name).mkdir(parents=True)
        (tmp_path / "broken" / name / "x.png").write_bytes(b"not a png")
    code, stderr = train_in_process(*overrides)
    assert code == 2 and message in stderr and "Traceback" not in stderr


def test_an_unknown_key_through_the_cli_is_hydras_one_line(tmp_path):
    result = run_cli("train", *TINY, "no_such_key=1", cwd=tmp_path)
    assert result.returncode != 0 and "Could not override 'no_such_key'" in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_without_the_runs_data(tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(tmp_path / "imgs" / name / f"{i}.png")
    overrides = ["data=folder", f"data.root={tmp_path / 'imgs'}", "data.batch_size=8", "trainer.max_epochs=1"]
    train(compose_train(tmp_path / "run", [*overrides, f"paths.log_dir={tmp_path / 'outputs'}"]))
    (tmp_path / "imgs").rename(tmp_path / "moved")
    result = run_cli("evaluate", "ckpt_path=run/checkpoints/last.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
