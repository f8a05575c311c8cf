"""A SLURM job the scheduler starts again continues its own run (tests/test_slurm.py runs it on a
real cluster; these pin the rules without one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vtcc.config.resolve import _requeued
from vtcc.config.resume import requeued_checkpoint, requeued_job
from vtcc.errors import ConfigError
from vtcc.train import check_output_dir
from vtcc.utils.checkpoint import CONFIG_KEY


def run_cfg(folder: Path, **settings) -> OmegaConf:
    return OmegaConf.create(
        {"paths": {"output_dir": str(folder)}, "ckpt_path": None, "resume": None, **settings}
    )


def test_only_a_restarted_job_counts_as_requeued(monkeypatch):
    for value, expected in ((None, False), ("0", False), ("1", True), ("3", True), ("x", False)):
        if value is None:
            monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
        else:
            monkeypatch.setenv("SLURM_RESTART_COUNT", value)
        assert requeued_job() is expected, value


def test_a_requeued_job_takes_its_own_last_checkpoint_over_the_one_it_started_from(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    own = tmp_path / "checkpoints" / "last.ckpt"
    cfg = run_cfg(tmp_path, ckpt_path="elsewhere/start.ckpt", resume="latest")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued_checkpoint(cfg) is None  # no finished epoch yet: it starts over
    own.write_bytes(b"")
    assert requeued_checkpoint(cfg) == own
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert requeued_checkpoint(cfg) is None  # a first start resumes what it was told


def test_a_requeued_job_may_reuse_its_own_folder_and_no_other_run_may(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "interrupted.ckpt").write_bytes(b"")  # stopped in its first epoch
    with pytest.raises(ConfigError, match="already holds a run's checkpoints"):
        check_output_dir(tmp_path, overwrite=False, requeued=False)
    check_output_dir(tmp_path, overwrite=False, requeued=True)


def test_a_requeued_k_search_run_continues_at_the_k_it_chose(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    own = tmp_path / "checkpoints" / "last.ckpt"
    torch.save({CONFIG_KEY: {"num_clusters": 7}, "state_dict": {}}, own)
    cfg = run_cfg(tmp_path, num_clusters="auto", resume="latest")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    _requeued(cfg)
    assert cfg.num_clusters == 7 and cfg.ckpt_path == str(own) and cfg.resume is None
