"""Which head clusters: for every objective with several heads, a sharp head (well separated groups,
consistent views) beats a flat one (uniform output) and a collapsed one (every image in cluster 0).

The heads are single Linear layers on one-hot features ``e_g`` of ``G`` equal groups, set by hand;
a tiny learning rate keeps them where they were set, so every head's score is its closed form.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vtcc.data.batch import TrainingPair
from vtcc.losses import ClusterLoss, ConfidenceCrossEntropy, InstanceLoss, ScanLoss, TemiLoss
from vtcc.models.network import ClusteringNetwork
from vtcc.objectives import ContrastiveClustering, ScanClustering, SelfLabelClustering, TemiClustering

pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no")

SCALE = 20.0  # logit of the chosen cluster: p = 1 - (K - 1) e^-20 ~ 1
SGD = partial(torch.optim.SGD, lr=1e-9)


class Identity(nn.Module):
    """Stands for a backbone; 2-D inputs skip it (cached features)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def network(num_clusters: int) -> ClusteringNetwork:
    """Heads 0, 1, 2: flat, collapsed, sharp (last, so a tie could not pick it by index)."""
    net = ClusteringNetwork(Identity(num_clusters), num_clusters, head_style="linear", num_cluster_heads=3)
    collapsed = torch.zeros(num_clusters)
    collapsed[0] = SCALE
    settings = [
        (torch.zeros(num_clusters, num_clusters), torch.zeros(num_clusters)),
        (torch.zeros(num_clusters, num_clusters), collapsed),
        (SCALE * torch.eye(num_clusters), torch.zeros(num_clusters)),
    ]
    with torch.no_grad():
        for head, (weight, bias) in zip(net.cluster_heads, settings, strict=True):
            head.mlp[0].weight.copy_(weight)
            head.mlp[0].bias.copy_(bias)
    return net


def features(num_clusters: int, groups: int, per_group: int = 2, batches: int = 4) -> torch.Tensor:
    """``batches * groups * per_group`` one-hot rows; each batch holds every group equally."""
    labels = torch.arange(groups).repeat_interleave(per_group).repeat(batches)
    return torch.eye(num_clusters)[labels]


def fit_one_epoch(module, x: torch.Tensor, groups: int, per_group: int = 2) -> list[float]:
    """One epoch on pairs ``(x_i, x_i)`` (two views, or an image and a neighbour of its group);
    returns each head's mean ranking score."""
    loader = DataLoader(
        TensorDataset(x, x.clone()),
        batch_size=groups * per_group,
        shuffle=False,
        collate_fn=lambda rows: TrainingPair(*(torch.stack(column) for column in zip(*rows, strict=True))),
    )
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    return (module._head_score_sums / module._head_score_batches).tolist()


def test_contrastive_ranks_the_sharp_head_first():
    """Cosines of non-negative columns lie in [0, 1]. Sharp: the positive column at cosine 1, the
    2K - 2 others at 0: log(1 + (2K - 2) / e); flat and collapsed: all columns parallel, log(2K - 1);
    entropy (log K - H) per view: 0, 2 log K, 0."""
    k = 4
    module = ContrastiveClustering(network(k), InstanceLoss(), ClusterLoss(), SGD, num_cluster_heads=3)
    scores = fit_one_epoch(module, features(k, k), groups=k)
    expected = [
        math.log(2 * k - 1),
        math.log(2 * k - 1) + 2 * math.log(k),
        math.log(1 + (2 * k - 2) / math.e),
    ]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert int(module.network.best_head) == 2


def test_scan_ranks_the_sharp_head_first():
    """-log <p_anchor, p_neighbour> + 5 (log K - H(mean p)): flat log K + 0, collapsed 0 + 5 log K,
    sharp (neighbours share the group) 0 + 0."""
    k = 4
    module = ScanClustering(network(k), ScanLoss(entropy_weight=5.0), SGD, num_cluster_heads=3)
    scores = fit_one_epoch(module, features(k, k), groups=k)
    assert scores == pytest.approx([math.log(k), 5 * math.log(k), 0.0], abs=1e-4)
    assert int(module.network.best_head) == 2


def test_selflabel_ranks_the_sharp_head_first_and_counts_every_heads_labels():
    """Threshold 0.9, weak view = strong view. The flat head has no confident image, so its loss is
    exactly 0 (the old ranking chose it, and counting only its images stopped the run); its score is
    the cross-entropy of uniform predictions, log K. Collapsed: cross-entropy 0 + log K of entropy;
    sharp: 0 + 0. Two heads of three label every image: confident_fraction 2/3."""
    k = 4
    module = SelfLabelClustering(network(k), ConfidenceCrossEntropy(threshold=0.9), SGD, num_cluster_heads=3)
    scores = fit_one_epoch(module, features(k, k), groups=k)
    assert int(module.network.best_head) == 2
    assert scores == pytest.approx([math.log(k), math.log(k), 0.0], abs=1e-4)
    metrics = module.trainer.callback_metrics
    assert float(metrics["train/head0_loss"]) == 0.0
    assert float(metrics["train/confident_fraction"]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("beta", "num_clusters", "groups"),
    [
        (0.4, 4, 4),  # beta <= 1/2: TEMI's loss of a flat head, -w (2 - 2 beta) log K, beats -w log K
        (0.6, 10, 2),  # beta 0.6: a flat head's -w 0.8 log 10 beats a sharp 2-group head's -w log 2
    ],
)
def test_temi_ranks_the_sharp_head_first(beta, num_clusters, groups):
    """Teachers fixed (momentum 1). TEMI's loss of the flat head: sum_k (1/K^2)^beta / (1/K) =
    K^(2 - 2 beta), times the pair weight w = mean over heads of sum_k p_1k p_2k = (1/K + 1 + 1) / 3;
    it is the lowest loss, so ranking by loss chose the flat head. Score: -mean log sum_k p_1k p_2k /
    pbar_k of the teacher's pair, pbar the batch mean. Flat and collapsed heads ignore the image:
    p = pbar, sum_k p_k = 1, score 0. Sharp over G equal groups: -log (1 / (1 / G)) = -log G."""
    temi = partial(TemiLoss, beta=beta)
    module = TemiClustering(network(num_clusters), temi, SGD, num_cluster_heads=3, teacher_momentum=1.0)
    scores = fit_one_epoch(module, features(num_clusters, groups), groups=groups)
    assert int(module.network.best_head) == 2
    assert scores == pytest.approx([0.0, 0.0, -math.log(groups)], abs=1e-4)
    losses = [float(module.trainer.callback_metrics[f"train/head{i}_loss"]) for i in range(3)]
    weight = (1 / num_clusters + 2) / 3
    assert losses[0] == pytest.approx(-weight * (2 - 2 * beta) * math.log(num_clusters), abs=1e-4)
    assert losses[0] < losses[2]
