"""Self-labelling (SCAN's third step, Van Gansbeke et al., ECCV 2020): confident predictions on a
weak view become labels for a strong view of the same image; and the score that ranks several heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vtcc.errors import ConfigError
from vtcc.losses.cluster import negative_entropy
from vtcc.registry import register


# threshold: auto is SCAN's 0.99 after sharp heads, else 0.9 (vtcc.config.init_from)
@register("loss", "selflabel", target="vtcc.losses.ConfidenceCrossEntropy", auto=("threshold",))
class ConfidenceCrossEntropy(nn.Module):
    """SCAN's ``ConfidenceBasedCE``: ``forward(p_weak, logits_strong)`` returns ``(loss, confident)``.

    Images whose weak-view probability peaks at or above ``threshold`` are labelled with that peak's
    cluster; the loss is the cross-entropy of their strong-view logits against those labels. With
    ``balance``, each confident image is weighted by ``n / n_c`` (``n`` confident images, ``n_c`` of
    them in its cluster) and the mean is weighted (``F.cross_entropy``'s), as SCAN's code does, so a
    large cluster does not take over. ``confident`` is the boolean mask; with no confident image the
    loss is 0 (and no gradient), where SCAN's code raises.
    (SCAN's mask is ``max > threshold``; ``>=`` differs only at exact equality and lets 1.0 be valid.)
    """

    def __init__(self, threshold: float = 0.99, balance: bool = True) -> None:
        super().__init__()
        if not isinstance(threshold, int | float):
            raise ConfigError(
                f"module.selflabel_loss.threshold={threshold!r}: 'auto' is decided from init_from's run; "
                "give a number in (0, 1], e.g. 0.99"
            )
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"module.selflabel_loss.threshold={threshold} must be in (0, 1], e.g. 0.99")
        self.threshold = threshold
        self.balance = balance

    def forward(self, p_weak: torch.Tensor, logits_strong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        confidence, target = p_weak.detach().float().max(dim=1)
        confident = confidence >= self.threshold
        if not bool(confident.any()):
            return logits_strong.sum() * 0.0, confident
        return balanced_cross_entropy(logits_strong[confident], target[confident], self.balance), confident


def balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor, balance: bool = True) -> torch.Tensor:
    """The cross-entropy of ``logits`` ``(n, K)`` against ``target`` ``(n,)``; with ``balance``, each
    image weighted by ``n / n_c`` (``n_c`` of the ``n`` in its cluster) and the mean weighted, as
    SCAN's code does. Zero (and no gradient) when ``n`` is 0."""
    if len(target) == 0:
        return logits.sum() * 0.0
    weight = None
    if balance:
        counts = torch.bincount(target, minlength=logits.shape[1]).float()
        weight = torch.where(counts > 0, len(target) / counts.clamp_min(1), torch.ones_like(counts))
    return F.cross_entropy(logits.float(), target, weight=weight)


@torch.no_grad()
def self_label_score(p_weak: torch.Tensor, logits_strong: torch.Tensor) -> torch.Tensor:
    """How well a head self-labels, to rank heads (lower is better; no gradient), from ``(B, K)`` weak
    probabilities and strong logits: the cross-entropy of the strong view against the weak view's
    argmax over *all* ``B`` images (no threshold), plus ``log K - H(mean strong p)``.

    Not the training loss: a head with no confident image has loss 0 and would win by abstaining.
    Here every image counts, so a flat head scores ``log K``. The entropy term (SCAN's and CC's)
    stops the other degenerate head, all images confidently in one cluster, from scoring 0: it
    scores ``log K`` too, a sharp, consistent, balanced head about 0. With identical views the score
    is at most ``log K - I`` (``I`` the mutual information of image and cluster under the head), as
    ``-log max p <= H(p)``: no head scores worse than a flat one unless its two views disagree.
    """
    target = p_weak.float().argmax(dim=1)
    logits = logits_strong.float()
    return F.cross_entropy(logits, target) + negative_entropy(torch.softmax(logits, dim=1))
