"""TURTLE's objective (Gadetsky, Jiang & Brbic, ICML 2024; ``run_turtle.py``), first order.

For a batch, the task encoder labels each image with the mean over spaces of its softmax
probabilities; per space an inner linear classifier is fitted to that labelling for a few steps
(its logits then detached); the outer loss is how badly those classifiers predict the labelling,
summed over spaces, minus ``gamma`` times the summed entropies (nats) of each space's batch-mean
prediction. Gradients reach the task encoder only through the labelling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_n -sum_k target_nk log softmax(logits)_nk``: ``F.cross_entropy`` with probability
    targets, differentiable in both arguments."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def marginal_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """The entropy (nats) of the batch-mean of ``(B, K)`` probabilities; ``log K`` at most."""
    return torch.special.entr(probabilities.float().mean(dim=0)).sum()


def turtle_loss(
    inner_logits: Sequence[torch.Tensor],
    labelling: torch.Tensor,
    space_probabilities: Sequence[torch.Tensor],
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, prediction error, entropy)``: ``sum_s CE(inner_s detached, labelling) - gamma *
    sum_s H(mean_n p_s)``, with ``labelling`` the mean of the spaces' probabilities ``p_s``."""
    prediction = torch.stack([soft_cross_entropy(z.detach(), labelling) for z in inner_logits]).sum()
    entropy = torch.stack([marginal_entropy(p) for p in space_probabilities]).sum()
    return prediction - gamma * entropy, prediction, entropy
