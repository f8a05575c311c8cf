"""Two CPU processes (gloo) against one process on the same global batch."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir

from tests.conftest import TINY, WARM, compose_train, evaluate_in_process, run_cli
from tests.dist_workers import BATCH, failing_worker, losses_and_grads, make_problem, worker
from vtcc.train import train
from vtcc.utils.cli import CONFIG_DIR


def test_two_processes_equal_one_process_on_the_global_batch(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    x_a, x_b, instance_head, cluster_head = make_problem()
    single = losses_and_grads(x_a, x_b, instance_head, cluster_head, gather=False)
    for rank in range(2):
        distributed = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(distributed) == set(single)
        for key, expected in single.items():
            assert torch.allclose(distributed[key], expected, atol=1e-5, rtol=0), (
                key,
                distributed[key] / expected,
            )
    # Without the gather, each process would see only its slice: a different loss.
    halves = losses_and_grads(x_a[:BATCH], x_b[:BATCH], *make_problem()[2:], gather=False)
    assert abs(halves["instance"] - single["instance"]) > 1e-3


def test_a_failure_in_one_process_stops_every_process_with_its_line(tmp_path):
    """No process waits at a barrier for one that stopped: both raise, the other naming the cause."""
    mp.spawn(failing_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "rank1.txt").read_text() == "data.root=x does not exist: set it"
    assert (tmp_path / "rank0.txt").read_text() == (
        "another process stopped (ConfigError: data.root=x does not exist: set it)"
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("ddp")
    train(compose_train(cwd / "run", ["trainer.max_epochs=1", f"paths.log_dir={cwd / 'outputs'}"]))
    return cwd / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_distributed_evaluation_equals_single_process(checkpoint):
    """1,797 digits over 2 processes: the sampler pads one duplicate, which must not count."""
    cwd = checkpoint.parents[2]
    common = [f"ckpt_path={checkpoint}", "trainer.accelerator=cpu"]
    one = evaluate_in_process(checkpoint, cwd / "eval1")
    double = run_cli("evaluate", *common, "strategy=ddp", "trainer.devices=2", "hydra.run.dir=eval2", cwd=cwd)
    assert double.returncode == 0, double.stderr[-2000:]
    two = json.loads((cwd / "eval2" / "metrics.json").read_text())
    for key in ("acc", "nmi", "ari", "num_clusters"):
        assert two[key] == one[key], key


def test_gradient_accumulation_is_refused(train_in_process):
    code, stderr = train_in_process("trainer.accumulate_grad_batches=2")
    assert code == 2 and "fewer negatives" in stderr and "Traceback" not in stderr


@pytest.mark.slow
def test_ddp_training_on_two_cpu_processes_saves_once_and_resumes(tmp_path):
    ddp = ["strategy=ddp", "trainer.devices=2", "data.batch_size=64"]
    first = run_cli("train", *TINY, *ddp, "trainer.max_epochs=1", "hydra.run.dir=run1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    checkpoint = torch.load(tmp_path / "run1/checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 1797 // (2 * 64)  # each step takes 64 images on each process
    assert sorted(p.name for p in (tmp_path / "run1/checkpoints").iterdir()) == ["last.ckpt"]
    # Each process draws its own augmentations: seeded alike, their random streams must part.
    per_rank = checkpoint["rng_states_per_rank"]
    assert len(per_rank) == 2 and not torch.equal(per_rank[0]["torch"], per_rank[1]["torch"])
    second = run_cli(
        "train",
        *TINY,
        *ddp,
        "trainer.max_epochs=2",
        f"ckpt_path={tmp_path}/run1/checkpoints/last.ckpt",
        "hydra.run.dir=run2",
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = torch.load(tmp_path / "run2/checkpoints/last.ckpt", weights_only=True)
    assert resumed["global_step"] == 2 * (1797 // (2 * 64))
    with open(tmp_path / "run2/logs/metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row["train/loss"]]
    assert [row["epoch"] for row in rows] == ["1"]  # one row: rank 0 alone logs
    straight = run_cli("train", *TINY, *ddp, "trainer.max_epochs=2", "hydra.run.dir=run3", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    uninterrupted = torch.load(tmp_path / "run3/checkpoints/last.ckpt", weights_only=True)
    for key, value in uninterrupted["state_dict"].items():  # resume under DDP is exact
        assert torch.equal(value, resumed["state_dict"][key]), key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_of_one_process_equal_one_node_of_two(tmp_path, monkeypatch):
    """Two nodes simulated on one host, started as torchrun or a cluster starts them: the same
    command on each node, its rank and the master's address from the environment (NODE_RANK,
    MASTER_ADDR, MASTER_PORT, LOCAL_RANK). They train exactly what one node of two processes trains."""
    # one thread a process in both layouts (Lightning would give a lone process on a node all of its
    # cores): the same float summation order, so the same weights to the bit
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = [*TINY, "data.batch_size=64", "trainer.max_epochs=1"]
    one_node = run_cli(
        "train", *common, "strategy=ddp", "trainer.devices=2", "hydra.run.dir=one", cwd=tmp_path
    )
    assert one_node.returncode == 0, one_node.stderr[-2000:]
    command = [
        sys.executable,
        "-m",
        "vtcc.train",
        *common,
        "strategy=ddp_multinode",
        "trainer.num_nodes=2",
        "trainer.devices=1",
        "hydra.run.dir=two",
    ]
    environment = {
        **os.environ,
        "VTCC_LOG_DIR": str(tmp_path / "outputs"),
        "PYTHONWARNINGS": "ignore",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "LOCAL_RANK": "0",
    }
    nodes = [
        WARM.start(command, cwd=tmp_path, env={**environment, "NODE_RANK": str(rank)}) for rank in (0, 1)
    ]
    errors = [node.communicate(timeout=600)[1] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], errors[0][-1500:] + errors[1][-1500:]
    ours = torch.load(tmp_path / "two/checkpoints/last.ckpt", weights_only=True)
    theirs = torch.load(tmp_path / "one/checkpoints/last.ckpt", weights_only=True)
    assert ours["global_step"] == theirs["global_step"] == 1797 // (2 * 64)
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
    two, one = (json.loads((tmp_path / f"{run}/final_metrics.json").read_text()) for run in ("two", "one"))
    assert two.pop("stopped")["epochs"] == one.pop("stopped")["epochs"]  # training_seconds differ
    assert two == one


def test_slurm_launcher_preset_follows_the_trainer():
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "strategy=ddp_multinode", "trainer.devices=4"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.num_nodes == 2


def test_compile_keeps_the_checkpoint_keys(tiny_cfg):
    """module.compile=true compiles the backbone in place: the state-dict keys stay those of eager
    checkpoints (compiling for real runs in the gpu-marked test, where it pays)."""
    from hydra.utils import instantiate

    module = instantiate(tiny_cfg.module, network=instantiate(tiny_cfg.model), compile=True)
    eager = set(module.state_dict())
    calls = []
    compile_in_place = module.network.backbone.compile
    module.network.backbone.compile = lambda: calls.append(1) or compile_in_place()
    module.configure_model()
    module.configure_model()  # Lightning calls the hook again for every validate
    assert calls == [1]  # compiled once
    assert set(module.state_dict()) == eager and not any("_orig_mod" in key for key in eager)


@pytest.mark.gpu
def test_bf16_and_compile_train_on_the_gpu(tmp_path):
    result = run_cli(
        "train",
        *[o for o in TINY if "accelerator" not in o],
        "trainer.accelerator=gpu",
        "trainer.max_epochs=1",
        "trainer.precision=bf16-mixed",
        "module.compile=true",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert "network.backbone.cls_token" in state and not any("_orig_mod" in key for key in state)


def test_bf16_trains_with_finite_losses(tmp_path):
    result = run_cli(
        "train",
        *TINY,
        "trainer.max_epochs=1",
        "trainer.precision=bf16-mixed",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "run/logs/metrics.csv") as handle:
        losses = [float(row["train/loss"]) for row in csv.DictReader(handle) if row["train/loss"]]
    assert losses and all(math.isfinite(loss) for loss in losses)
    state = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert "network.backbone.cls_token" in state and not any("_orig_mod" in key for key in state)
