"""TEMI (Adaloglou et al., BMVC 2023): clustering heads on frozen features by the weighted
pointwise mutual information of an image and one of its nearest neighbours, with EMA teachers.

Written from the paper's equations and checked against the official code
(HHU-MMBS/TEMI-official-BMVC2023, ``losses/multihead_losses.py``, ``losses/loss_utils.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from vtcc.errors import ConfigError
from vtcc.registry import register
from vtcc.utils.dist import all_reduce_mean


@register("loss", "temi", target="vtcc.losses.TemiLoss")
class TemiLoss(nn.Module):
    """``forward(student_logits, teacher_logits)``: lists over heads of ``[(B, K) view 1, (B, K) view 2]``
    (an image and its neighbour); returns the per-head losses ``(H,)``.

    For head ``h``, student probabilities ``q = softmax(s / student_temperature)``, teacher
    probabilities ``p = softmax(t / teacher_temperature)`` (no gradient), and ``pi_h``, an EMA
    (``prior_momentum``) of the teacher's mean probability over the batch and both views:

        loss_h = mean over (student view v, teacher view w != v) and images of
                 -w_i * log sum_k (q_vk * p_wk) ** beta / pi_hk

    with the weight ``w_i = sum_k p_1k * p_2k`` of the teachers' two views, averaged over the heads
    (one weight per pair, shared by all heads, as the official ``compute_weight``). ``beta`` 0.6 is the
    paper's choice for frozen features.
    """

    def __init__(
        self,
        num_clusters: int,
        num_heads: int = 1,
        beta: float = 0.6,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.1,
        prior_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if not 0.0 < beta <= 1.0:
            raise ConfigError(f"module.temi_loss.beta={beta} must be in (0, 1], e.g. 0.6")
        if student_temperature <= 0 or teacher_temperature <= 0:
            raise ConfigError("TEMI's temperatures must be > 0")
        if not 0.0 <= prior_momentum < 1.0:
            raise ConfigError(f"module.temi_loss.prior_momentum={prior_momentum} must be in [0, 1)")
        self.beta = beta
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.prior_momentum = prior_momentum
        self.register_buffer("prior", torch.full((num_heads, num_clusters), 1.0 / num_clusters))

    def forward(
        self, student_logits: list[list[torch.Tensor]], teacher_logits: list[list[torch.Tensor]]
    ) -> torch.Tensor:
        teachers = [
            [torch.softmax(t.detach().float() / self.teacher_temperature, dim=1) for t in views]
            for views in teacher_logits
        ]
        with torch.no_grad():
            for head, views in enumerate(teachers):
                batch_mean = all_reduce_mean(torch.cat(views).mean(dim=0))
                self.prior[head] = (
                    self.prior_momentum * self.prior[head] + (1 - self.prior_momentum) * batch_mean
                )
            weight = torch.stack([(views[0] * views[1]).sum(dim=1) for views in teachers]).mean(dim=0)
        losses = []
        for head, (students, views) in enumerate(zip(student_logits, teachers, strict=True)):
            q = [torch.softmax(s.float() / self.student_temperature, dim=1) for s in students]
            terms = [
                -(weight * self.pointwise_mi(q[v], views[w], self.prior[head])).mean()
                for v in range(len(q))
                for w in range(len(views))
                if v != w
            ]
            losses.append(torch.stack(terms).mean())
        return torch.stack(losses)

    def pointwise_mi(self, q: torch.Tensor, p: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """``log sum_k (q_k p_k) ** beta / prior_k`` per image (the official ``beta_mi``, negated)."""
        return ((q * p).pow(self.beta) / prior).sum(dim=1).log()
