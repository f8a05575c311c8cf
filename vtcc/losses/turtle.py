"""TURTLE's objective (Gadetsky, Jiang & Brbic, ICML 2024; ``run_turtle.py``), first order.

For a batch, the task encoder labels each image with the mean over spaces of its softmax
probabilities; per space an inner linear classifier is fitted to that labelling for a few steps
(its logits then detached); the outer loss is how badly those classifiers predict the labelling,
summed over spaces, minus ``gamma`` times the summed entropies (nats) of each space's batch-mean
prediction. Gradients reach the task encoder only through the labelling.
"""

from __future__ import annotations

import math
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


class InnerClassifier:
    """One space's inner linear classifier ``logits = z W^T + b``, fitted to a soft labelling by
    full-batch Adam (TURTLE's ``init_inner``: a plain ``nn.Linear(d, K)`` and ``torch.optim.Adam``).

    The gradient of the soft cross-entropy is written out, ``(softmax(logits) - y)^T z / B``, and
    the update is ``torch.optim.Adam``'s step for step (the same moments, bias corrections and
    epsilon), without autograd or an optimiser object: the inner loop is most of TURTLE's time
    on a CPU, and this runs it about five times faster with the same numbers.
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999)
    ) -> None:
        self.weight, self.bias = weight.detach().float().clone(), bias.detach().float().clone()
        # first moments of (weight, bias), then second moments
        self.moments = [torch.zeros_like(p) for p in (self.weight, self.bias, self.weight, self.bias)]
        self.step, self.lr, self.betas, self.eps = 0, float(lr), betas, 1e-8

    @classmethod
    def fresh(cls, width: int, num_clusters: int, lr: float, device: torch.device) -> InnerClassifier:
        """PyTorch's default initialisation of ``nn.Linear(width, K)`` (from the global random stream)."""
        layer = torch.nn.Linear(width, num_clusters)
        return cls(layer.weight.to(device), layer.bias.to(device), lr)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, features, self.weight.T)

    @torch.no_grad()
    def fit(self, features: torch.Tensor, target: torch.Tensor, steps: int) -> None:
        beta1, beta2 = self.betas
        features, target = features.detach().float(), target.detach().float()
        for _ in range(steps):
            probabilities = torch.softmax(self.logits(features), dim=1)
            residual = (probabilities * target.sum(dim=1, keepdim=True) - target) / len(features)
            grads = (residual.T @ features, residual.sum(dim=0))
            self.step += 1
            step_size = self.lr / (1 - beta1**self.step)
            correction = math.sqrt(1 - beta2**self.step)
            for param, grad, first, second in zip(
                (self.weight, self.bias), grads, self.moments[:2], self.moments[2:], strict=True
            ):
                first.lerp_(grad, 1 - beta1)
                second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                param.addcdiv_(first, (second.sqrt() / correction).add_(self.eps), value=-step_size)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "weight": self.weight,
            "bias": self.bias,
            **{f"moment{i}": m for i, m in enumerate(self.moments)},
            "step": torch.tensor(self.step),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weight, self.bias = state["weight"].float().clone(), state["bias"].float().clone()
        self.moments = [state[f"moment{i}"].float().clone() for i in range(4)]
        self.step = int(state["step"])
