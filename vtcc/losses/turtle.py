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

from vtcc.errors import ConfigError


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


class InnerClassifiers:
    """The inner linear classifiers of every space (space ``s``: ``logits = z_s W_s^T + b_s``),
    each fitted to a soft labelling by its own full-batch Adam (TURTLE's ``init_inner``: a plain
    ``nn.Linear(d_s, K)`` and ``torch.optim.Adam`` per space).

    The spaces are fitted together, one batched matmul a step: weights are held as ``(S, K,
    D)`` with ``D`` the widest space, and each space's features are zero-padded to ``D``. A padded
    column's gradient is zero, so its Adam moments stay zero and its update is ``0 / (0 + eps) =
    0``: every space's fit is exactly the one it would have alone. The gradient of the soft
    cross-entropy is written out, ``(softmax(logits) - y)^T z / B``, and the update is
    ``torch.optim.Adam``'s step for step (the same moments, bias corrections and epsilon), without
    autograd or an optimiser object: the inner loop is most of TURTLE's time on a CPU.
    """

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
    ) -> None:
        self.widths = [int(w.shape[1]) for w in weights]
        first = weights[0]
        self.weight = first.new_zeros(len(weights), first.shape[0], max(self.widths), dtype=torch.float32)
        for s, w in enumerate(weights):
            self.weight[s, :, : w.shape[1]] = w.detach().float()
        self.bias = torch.stack([b.detach().float() for b in biases])
        # first moments of (weight, bias), then second moments
        self.moments = [torch.zeros_like(p) for p in (self.weight, self.bias, self.weight, self.bias)]
        self.step, self.lr, self.betas, self.eps = 0, float(lr), betas, 1e-8

    @classmethod
    def fresh(
        cls, widths: Sequence[int], num_clusters: int, lr: float, device: torch.device
    ) -> InnerClassifiers:
        """PyTorch's default initialisation of ``nn.Linear(d_s, K)`` for each space in turn (from the
        global random stream, as separate layers draw it)."""
        layers = [torch.nn.Linear(d, num_clusters) for d in widths]
        return cls(
            [layer.weight.to(device) for layer in layers], [layer.bias.to(device) for layer in layers], lr
        )

    def stack(self, spaces: Sequence[torch.Tensor]) -> torch.Tensor:
        """The spaces' features ``[(B, d_s)]`` as one ``(S, B, D)`` tensor, zero-padded to ``D``."""
        width = self.weight.shape[2]
        if all(z.shape[1] == width for z in spaces):
            return torch.stack([z.detach().float() for z in spaces])
        stacked = spaces[0].new_zeros(len(spaces), len(spaces[0]), width, dtype=torch.float32)
        for s, z in enumerate(spaces):
            stacked[s, :, : z.shape[1]] = z.detach()
        return stacked

    def _scores(self, transposed: torch.Tensor) -> torch.Tensor:
        """Logits laid out ``(S, K, B)`` from features laid out ``(S, D, B)``: on a CPU both the
        matmul and a softmax over K run several times faster this way round than as ``(S, B, K)``."""
        return torch.baddbmm(self.bias.unsqueeze(2), self.weight, transposed)

    @torch.no_grad()
    def fit(self, spaces: Sequence[torch.Tensor], target: torch.Tensor, steps: int) -> list[torch.Tensor]:
        """``steps`` Adam steps of every space's classifier on ``CE(logits_s, target)``; returns
        each space's logits ``(B, K)`` after them."""
        beta1, beta2 = self.betas
        stacked = self.stack(spaces)  # (S, B, D)
        transposed = stacked.transpose(1, 2).contiguous()  # (S, D, B)
        target = target.detach().float().T.contiguous()  # (K, B)
        mass, count = target.sum(dim=0, keepdim=True), stacked.shape[1]
        for _ in range(steps):
            probabilities = torch.softmax(self._scores(transposed), dim=1)  # (S, K, B)
            residual = probabilities.mul_(mass).sub_(target).div_(count)
            grads = (torch.bmm(residual, stacked), residual.sum(dim=2))
            self.step += 1
            step_size = self.lr / (1 - beta1**self.step)
            correction = math.sqrt(1 - beta2**self.step)
            for param, grad, first, second in zip(
                (self.weight, self.bias), grads, self.moments[:2], self.moments[2:], strict=True
            ):
                first.lerp_(grad, 1 - beta1)
                second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                param.addcdiv_(first, (second.sqrt() / correction).add_(self.eps), value=-step_size)
        return list(self._scores(transposed).transpose(1, 2).unbind(0))

    def layer(self, space: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Space ``space``'s ``(weight (K, d_s), bias (K,))``."""
        return self.weight[space, :, : self.widths[space]], self.bias[space]

    def state_dict(self) -> list[dict[str, torch.Tensor]]:
        """One entry per space (weight, bias, Adam's moments and step), as separate layers store it."""
        states = []
        for s, width in enumerate(self.widths):
            own = [m[s, :, :width] if i % 2 == 0 else m[s] for i, m in enumerate(self.moments)]
            states.append(
                {
                    "weight": self.weight[s, :, :width].clone(),
                    "bias": self.bias[s].clone(),
                    **{f"moment{i}": m.clone() for i, m in enumerate(own)},
                    "step": torch.tensor(self.step),
                }
            )
        return states

    def load_state_dict(self, states: Sequence[dict[str, torch.Tensor]]) -> None:
        if [int(state["weight"].shape[1]) for state in states] != self.widths:
            raise ConfigError(
                "the checkpoint's TURTLE inner classifiers are for spaces of other widths than this run's: "
                "resume it with its own model.backbones"
            )
        for s, (state, width) in enumerate(zip(states, self.widths, strict=True)):
            self.weight[s, :, :width] = state["weight"].float()
            self.bias[s] = state["bias"].float()
            for i, moment in enumerate(self.moments):  # padded columns stay zero
                own = moment[s, :, :width] if i % 2 == 0 else moment[s]
                own.copy_(state[f"moment{i}"].float())
        self.step = int(states[0]["step"])
