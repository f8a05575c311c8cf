"""A real SLURM cluster (``.ci/slurm-up`` starts a one-host one): a run submitted through the
documented command trains exactly what the same processes train locally, and a job the scheduler
requeues mid-run finishes from its own checkpoint as if it had never stopped.

These carry the ``slurm`` marker: ``make test-slurm`` runs them (CI does, after starting the
cluster); without a cluster they are skipped, unless ``VTCC_REQUIRE_SLURM`` is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, run_cli

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

# Two CPU processes of one node, one SLURM task each; one thread a process, here and locally
# (the same float summation order, so the same weights to the bit).
PROCESSES = ["strategy=ddp", "trainer.devices=2"]  # TINY: trainer.accelerator=cpu
ON_SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=30",
]
SETTINGS = [*TINY, "data.batch_size=64", "seed=0"]


def slurm_cluster_up() -> bool:
    """A SLURM controller answers and a node is up."""
    if shutil.which("sinfo") is None:
        return False
    try:
        nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return nodes.returncode == 0 and any(state in nodes.stdout for state in ("idle", "mix", "alloc"))


@pytest.fixture(autouse=True, scope="module")
def cluster() -> None:
    if slurm_cluster_up():
        return
    if os.environ.get("VTCC_REQUIRE_SLURM"):  # CI's SLURM step: a missing cluster is a failure
        pytest.fail("VTCC_REQUIRE_SLURM is set but no SLURM cluster answers: run .ci/slurm-up")
    pytest.skip("needs a SLURM cluster (.ci/slurm-up starts a one-host one)")


def submit(tmp_path: Path, name: str, *overrides: str) -> subprocess.Popen:
    """``vtcc-train -m hydra/launcher=slurm ...``, as docs/distributed.md shows it; it waits for the job."""
    command = [
        sys.executable,
        "-m",
        "vtcc.train",
        "-m",
        *ON_SLURM,
        *PROCESSES,
        *SETTINGS,
        *overrides,
        f"hydra.sweep.dir={tmp_path / name}",
        f"hydra.launcher.name={job_name(tmp_path)}",  # ids repeat when a cluster restarts; names do not
    ]
    environment = {**os.environ, "VTCC_LOG_DIR": str(tmp_path / "outputs"), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def job_id(sweep: Path) -> str:
    """The SLURM job id submitit filed the job's logs under."""
    (folder,) = [p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    return folder.name


def job_name(tmp_path: Path) -> str:
    return f"vtcc-test-{abs(hash(str(tmp_path))) % 10**10}"


def job_states(job: str, name: str) -> list[str]:
    """Every record SLURM's job completion log holds for ``job`` (one per end: requeued, then
    completed), once the last is final: the controller writes it a moment after the job's result."""
    deadline = time.monotonic() + 60
    while True:
        listed = subprocess.run(
            ["sacct", "--completion", "-j", job, "-o", "JobName,State", "-n", "-P"],
            capture_output=True,
            text=True,
            check=True,
        )
        records = [line.split("|") for line in listed.stdout.split()]
        states = [state for named, state in records if named == name]
        if states and states[-1] not in ("PENDING", "RUNNING", "REQUEUED") or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def squeue(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout


def wait(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def same_run(ours: Path, theirs: Path) -> None:
    """The same final metrics, and the same weights to the bit."""
    mine, reference = (json.loads((run / "final_metrics.json").read_text()) for run in (ours, theirs))
    assert mine.pop("stopped")["epochs"] == reference.pop("stopped")["epochs"]  # its seconds differ
    assert mine == reference
    mine = torch.load(ours / "checkpoints/last.ckpt", weights_only=True)
    reference = torch.load(theirs / "checkpoints/last.ckpt", weights_only=True)
    assert mine["global_step"] == reference["global_step"]
    for key, value in reference["state_dict"].items():
        assert torch.equal(mine["state_dict"][key], value), key


@pytest.fixture
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # sbatch hands the environment on to the job


def test_a_submitted_run_completes_and_equals_the_same_processes_run_locally(tmp_path, one_thread):
    wait(submit(tmp_path, "sweep", "trainer.max_epochs=2"))
    run = tmp_path / "sweep" / "0"
    assert job_states(job_id(tmp_path / "sweep"), job_name(tmp_path)) == ["COMPLETED"]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    local = run_cli(
        "train", *PROCESSES, *SETTINGS, "trainer.max_epochs=2", "hydra.run.dir=local", cwd=tmp_path
    )
    assert local.returncode == 0, local.stderr[-2000:]
    same_run(run, tmp_path / "local")


def test_a_requeued_job_finishes_from_its_own_checkpoint_as_if_uninterrupted(tmp_path, one_thread):
    """``scontrol requeue`` stops the job mid-run, as a preemption does, and puts it back in the
    queue; started again (SLURM_RESTART_COUNT=1) in its own folder, it resumes its last
    checkpoint and ends with the weights and metrics of a run that was never stopped."""
    epochs = ["trainer.max_epochs=6"]
    process = submit(tmp_path, "sweep", *epochs)
    run = tmp_path / "sweep" / "0"
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.ckpt").is_file():  # the first epoch is done
        assert process.poll() is None and time.monotonic() < deadline, "the job never saved a checkpoint"
        time.sleep(0.5)
    job = job_id(tmp_path / "sweep")
    subprocess.run(["scontrol", "requeue", job], check=True)
    while "PENDING" not in squeue(job):  # stopped and back in the queue
        assert time.monotonic() < deadline, "the job was not requeued"
        time.sleep(0.5)
    stopped_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert stopped_at < 5  # mid-run: epochs were left to train
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True)  # no requeue delay
    wait(process)
    states = job_states(job, job_name(tmp_path))
    assert len(states) == 2 and states[-1] == "COMPLETED", states  # stopped once, then completed
    log = (run / "train.log").read_text()
    assert "SLURM requeued this job (restart 1): resuming" in log
    local = run_cli("train", *PROCESSES, *SETTINGS, *epochs, "hydra.run.dir=local", cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    same_run(run, tmp_path / "local")
