"""The functions ``tests/e2e/test_distributed.py`` runs in ``torch.multiprocessing`` processes.

A spawned process imports the module its function lives in: here, one that imports torch and
vtcc's losses only, not the test module (which imports Lightning through vtcc.train, about 5 s
of CPU more per process).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from vtcc.losses import ClusterLoss, InstanceLoss

BATCH, FEATURES, CLUSTERS = 6, 5, 4


def make_problem() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear, torch.nn.Linear]:
    """Two views of 2 x BATCH samples and two linear heads, identical in every process."""
    generator = torch.Generator().manual_seed(0)
    x_a = torch.randn(2 * BATCH, FEATURES, generator=generator, dtype=torch.float64)
    x_b = x_a + 0.3 * torch.randn(2 * BATCH, FEATURES, generator=generator, dtype=torch.float64)
    torch.manual_seed(1)
    return x_a, x_b, torch.nn.Linear(FEATURES, 8).double(), torch.nn.Linear(FEATURES, CLUSTERS).double()


def losses_and_grads(x_a, x_b, instance_head, cluster_head, gather: bool) -> dict[str, torch.Tensor]:
    instance, cluster = InstanceLoss(gather_distributed=gather), ClusterLoss(gather_distributed=gather)
    z_a, z_b = F.normalize(instance_head(x_a), dim=1), F.normalize(instance_head(x_b), dim=1)
    p_a, p_b = torch.softmax(cluster_head(x_a), dim=1), torch.softmax(cluster_head(x_b), dim=1)
    loss_instance = instance(z_a, z_b)
    loss_cluster, loss_entropy = cluster(p_a, p_b)
    (loss_instance + loss_cluster + loss_entropy).backward()
    grads = {
        f"grad_{head}_{name}": p.grad
        for head, module in (("instance", instance_head), ("cluster", cluster_head))
        for name, p in module.named_parameters()
    }
    values = {
        "instance": loss_instance.detach(),
        "cluster": loss_cluster.detach(),
        "entropy": loss_entropy.detach(),
    }
    return {**values, **grads}


def worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    x_a, x_b, instance_head, cluster_head = make_problem()
    local = slice(rank * BATCH, (rank + 1) * BATCH)
    result = losses_and_grads(x_a[local], x_b[local], instance_head, cluster_head, gather=True)
    for key, value in result.items():
        if key.startswith("grad_"):  # what DDP does: average the gradients over processes
            dist.all_reduce(value)
            value /= world_size
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def failing_worker(rank: int, init_file: str, out_dir: str) -> None:
    """Process 1 fails with a user's one line before a step both must pass; process 0 does not."""
    from vtcc.errors import ConfigError
    from vtcc.utils.dist import agree

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        agree(ConfigError("data.root=x does not exist: set it") if rank == 1 else None)
        outcome = "passed"
    except ConfigError as error:
        outcome = str(error)
    Path(out_dir, f"rank{rank}.txt").write_text(outcome)
    dist.destroy_process_group()
