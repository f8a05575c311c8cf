"""A SLURM job the scheduler starts again continues its own run (tests/e2e/test_slurm.py runs it on a
real cluster; these pin the rules without one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vtcc.config.resolve import _requeued
from vtcc.config.resume import own_run_folder, requeued_checkpoint, requeued_job
from vtcc.errors import ConfigError
from vtcc.train import check_output_dir
from vtcc.utils.checkpoint import CONFIG_KEY
from vtcc.utils.environment import collect_environment, write_environment

JOB = "4242"


def run_cfg(folder: Path, **settings) -> OmegaConf:
    return OmegaConf.create(
        {"paths": {"output_dir": str(folder)}, "ckpt_path": None, "resume": None, **settings}
    )


def started_by(folder: Path, job: str | None, monkeypatch) -> None:
    """``folder`` as a run's first start leaves it: its environment.yaml, written under SLURM job
    ``job`` (None: outside SLURM)."""
    folder.mkdir(parents=True, exist_ok=True)
    if job is None:
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    else:
        monkeypatch.setenv("SLURM_JOB_ID", job)
    write_environment(folder, collect_environment(["vtcc-train"]))


def requeue(monkeypatch, job: str = JOB) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", job)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")


def test_only_a_restarted_job_counts_as_requeued(monkeypatch):
    for value, expected in ((None, False), ("0", False), ("1", True), ("3", True), ("x", False)):
        if value is None:
            monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
        else:
            monkeypatch.setenv("SLURM_RESTART_COUNT", value)
        assert requeued_job() is expected, value


def test_a_run_records_its_slurm_job(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", JOB)
    assert collect_environment([])["slurm_job_id"] == JOB
    monkeypatch.delenv("SLURM_JOB_ID")
    assert collect_environment([])["slurm_job_id"] is None


def test_a_requeued_job_takes_its_own_last_checkpoint_over_the_one_it_started_from(tmp_path, monkeypatch):
    started_by(tmp_path, JOB, monkeypatch)
    (tmp_path / "checkpoints").mkdir()
    own = tmp_path / "checkpoints" / "last.ckpt"
    cfg = run_cfg(tmp_path, ckpt_path="elsewhere/start.ckpt", resume="latest")
    requeue(monkeypatch)
    assert requeued_checkpoint(cfg) is None  # no finished epoch yet: it starts over
    own.write_bytes(b"")
    assert requeued_checkpoint(cfg) == own
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert requeued_checkpoint(cfg) is None  # a first start resumes what it was told


def test_a_requeued_job_may_reuse_its_own_folder_and_no_other_run_may(tmp_path, monkeypatch):
    started_by(tmp_path, JOB, monkeypatch)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "interrupted.ckpt").write_bytes(b"")  # stopped in its first epoch
    with pytest.raises(ConfigError, match="already holds a run's checkpoints"):
        check_output_dir(tmp_path, overwrite=False, requeued=False)
    requeue(monkeypatch)
    check_output_dir(tmp_path, overwrite=False, requeued=True)  # its own: it starts over there


@pytest.mark.parametrize("first_start", [None, "1111"], ids=["outside SLURM", "another job"])
@pytest.mark.parametrize("checkpoint", ["interrupted.ckpt", "last.ckpt"])
def test_a_requeued_job_keeps_the_guard_in_another_runs_folder(
    tmp_path, monkeypatch, first_start, checkpoint
):
    """The folder holds another run's files (its environment.yaml names no job, or another): the
    requeued job neither writes over them nor continues that run's last.ckpt."""
    started_by(tmp_path, first_start, monkeypatch)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / checkpoint).write_bytes(b"")
    requeue(monkeypatch)
    assert not own_run_folder(tmp_path)
    assert requeued_checkpoint(run_cfg(tmp_path)) is None
    with pytest.raises(ConfigError, match="not this requeued job's.*overwrite=true"):
        check_output_dir(tmp_path, overwrite=False, requeued=True)
    check_output_dir(tmp_path, overwrite=True, requeued=True)  # asked to: allowed


def test_a_requeued_job_keeps_the_guard_where_no_run_recorded_itself(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")  # no environment.yaml at all
    requeue(monkeypatch)
    assert requeued_checkpoint(run_cfg(tmp_path)) is None
    with pytest.raises(ConfigError, match="already holds a run's checkpoints"):
        check_output_dir(tmp_path, overwrite=False, requeued=True)
    (tmp_path / "environment.yaml").write_text("- not a mapping\n")
    assert not own_run_folder(tmp_path)


def test_a_requeued_k_search_run_continues_at_the_k_it_chose(tmp_path, monkeypatch):
    started_by(tmp_path, JOB, monkeypatch)
    (tmp_path / "checkpoints").mkdir()
    own = tmp_path / "checkpoints" / "last.ckpt"
    torch.save({CONFIG_KEY: {"num_clusters": 7}, "state_dict": {}}, own)
    cfg = run_cfg(tmp_path, num_clusters="auto", resume="latest")
    requeue(monkeypatch)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    _requeued(cfg)
    assert cfg.num_clusters == 7 and cfg.ckpt_path == str(own) and cfg.resume is None
