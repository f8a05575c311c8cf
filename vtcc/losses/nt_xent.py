"""NT-Xent over two views, shared by the instance and the cluster loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Upcast half precision so logits and logs are computed safely under autocast."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def nt_xent(view_a: torch.Tensor, view_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean NT-Xent over ``2N`` rows; row ``i`` of ``view_a`` is the positive of row ``i`` of ``view_b``.

    Inputs ``(N, D)``; similarities are cosine; each row's negatives are the other ``2N - 2``
    rows (itself excluded). Computed in at least float32.
    """
    rows = F.normalize(at_least_float32(torch.cat([view_a, view_b])), dim=1)
    n = view_a.shape[0]
    logits = rows @ rows.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.arange(2 * n, device=rows.device).roll(n)
    return F.cross_entropy(logits, targets)
