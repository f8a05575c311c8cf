"""The few collectives vtcc needs, in one place."""

from __future__ import annotations

import torch
import torch.distributed as dist

from vtcc.errors import ConfigError, user_error


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank_and_count() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 outside a distributed run)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def agree(error: BaseException | None) -> None:
    """A step every process passes together: when any process failed (``error``), every process
    raises that failure's one line, instead of the others waiting at the next barrier forever.
    Outside a distributed run, ``error`` is raised as it is."""
    if not (dist.is_available() and dist.is_initialized()):
        if error is not None:
            raise error
        return
    failures: list[str | None] = [None] * dist.get_world_size()
    cause = None if error is None else (user_error(error) or error)
    dist.all_gather_object(failures, None if cause is None else f"{type(cause).__name__}: {cause}")
    if error is not None:
        raise error
    reported = [f for f in failures if f is not None]
    if reported:
        raise ConfigError(f"another process stopped ({reported[0]})")


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the gradients of all processes and keeps this one's slice.

    One all-reduce of a contiguous gradient works on every backend (gloo has no reduce-scatter)
    and is immune to the non-contiguous gradients that a transpose after the gather produces.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        ctx.rank, ctx.batch = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` ``(B, ...)`` from all processes along dim 0, keeping gradients.

    Every process must pass the same ``B``. The backward pass sums the incoming gradients over
    processes, so a loss computed on the gathered global batch (and averaged by DDP) trains each
    process's slice as one process on the global batch would.
    """
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over processes (no gradient), e.g. a batch statistic under DDP."""
    if world_size() == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor / world_size()
