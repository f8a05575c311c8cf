"""The losses against straightforward re-implementations of the Contrastive Clustering formulas."""

import math

import pytest
import torch

from vtcc.errors import ConfigError
from vtcc.losses import ClusterLoss, InstanceLoss, negative_entropy


def reference_nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> float:
    """Loop form: for each of the 2N rows, -log(exp(s_pos) / sum_{k != i} exp(s_ik))."""
    rows = torch.cat([a, b]).double()
    n2 = rows.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        positive = (i + n) % n2
        sims = [
            (torch.dot(rows[i], rows[k]) / (rows[i].norm() * rows[k].norm())).item() / temperature
            for k in range(n2)
        ]
        denominator = sum(math.exp(sims[k]) for k in range(n2) if k != i)
        total += -math.log(math.exp(sims[positive]) / denominator)
    return total / n2


def reference_entropy_term(p: torch.Tensor) -> float:
    """log K - H(q), q the column sums of p normalised to 1."""
    q = p.double().sum(0)
    q = q / q.sum()
    entropy = -sum(v * math.log(v) for v in q.tolist())
    return math.log(p.shape[1]) - entropy


@pytest.mark.parametrize(("batch", "dim", "temperature"), [(4, 8, 0.5), (7, 3, 0.1), (16, 128, 0.5)])
def test_instance_loss_matches_reference(batch, dim, temperature):
    generator = torch.Generator().manual_seed(batch * dim)
    z_a = torch.nn.functional.normalize(
        torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1
    )
    z_b = torch.nn.functional.normalize(
        torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1
    )
    expected = reference_nt_xent(z_a, z_b, temperature)
    assert InstanceLoss(temperature=temperature)(z_a, z_b).item() == pytest.approx(expected, abs=1e-6)
    single = InstanceLoss(temperature=temperature)(z_a.float(), z_b.float()).item()
    assert single == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("batch", "clusters", "temperature"), [(8, 3, 1.0), (32, 10, 1.0), (5, 20, 0.7)])
def test_cluster_loss_matches_reference(batch, clusters, temperature):
    generator = torch.Generator().manual_seed(batch + clusters)
    p_a = torch.softmax(2 * torch.randn(batch, clusters, generator=generator, dtype=torch.float64), dim=1)
    p_b = torch.softmax(2 * torch.randn(batch, clusters, generator=generator, dtype=torch.float64), dim=1)
    contrastive, entropy = ClusterLoss(temperature=temperature)(p_a, p_b)
    assert contrastive.item() == pytest.approx(reference_nt_xent(p_a.T, p_b.T, temperature), abs=1e-6)
    expected_entropy = reference_entropy_term(p_a) + reference_entropy_term(p_b)
    assert entropy.item() == pytest.approx(expected_entropy, abs=1e-6)


def test_entropy_term_is_zero_when_uniform_and_log_k_when_collapsed():
    uniform = torch.full((10, 4), 0.25)
    assert negative_entropy(uniform).item() == pytest.approx(0.0, abs=1e-7)
    collapsed = torch.zeros(10, 4)
    collapsed[:, 0] = 1.0
    assert negative_entropy(collapsed).item() == pytest.approx(math.log(4), abs=1e-6)


def test_entropy_weight_scales_the_term():
    p = torch.softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    _, full = ClusterLoss(entropy_weight=1.0)(p, p)
    _, half = ClusterLoss(entropy_weight=0.5)(p, p)
    assert half.item() == pytest.approx(full.item() / 2, abs=1e-7)


def test_matching_views_give_lower_instance_loss_than_random():
    generator = torch.Generator().manual_seed(1)
    z = torch.nn.functional.normalize(torch.randn(32, 16, generator=generator), dim=1)
    other = torch.nn.functional.normalize(torch.randn(32, 16, generator=generator), dim=1)
    loss = InstanceLoss(0.5)
    assert loss(z, z) < loss(z, other) - 1.0


def test_losses_stay_finite_and_float32_under_bf16_inputs():
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=1).bfloat16()
    p = torch.softmax(torch.randn(8, 4), dim=1).bfloat16()
    instance = InstanceLoss()(z, z.flip(0))
    contrastive, entropy = ClusterLoss()(p, p.flip(0))
    for value in (instance, contrastive, entropy):
        assert value.dtype == torch.float32 and torch.isfinite(value)


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"temperature": -1.0}])
def test_invalid_temperature_is_rejected(kwargs):
    with pytest.raises(ConfigError, match="temperature"):
        InstanceLoss(**kwargs)
    with pytest.raises(ConfigError, match="temperature"):
        ClusterLoss(**kwargs)


@pytest.mark.parametrize("batch", [3, 8, 50])
def test_identical_embeddings_give_log_2n_minus_1(batch):
    """Every similarity is 1 / tau: the positive is one of 2N - 1 equal terms."""
    z = torch.nn.functional.normalize(torch.ones(batch, 16, dtype=torch.float64), dim=1)
    assert InstanceLoss(temperature=0.5)(z, z).item() == pytest.approx(math.log(2 * batch - 1), abs=1e-9)


@pytest.mark.parametrize("clusters", [2, 10, 30])
def test_uniform_assignments_have_zero_entropy_term_and_log_2k_minus_1(clusters):
    """Equal columns: the cluster NT-Xent is log(2K - 1); the uniform marginal makes log K - H = 0."""
    p = torch.full((16, clusters), 1.0 / clusters, dtype=torch.float64)
    contrastive, entropy = ClusterLoss(temperature=1.0)(p, p)
    assert contrastive.item() == pytest.approx(math.log(2 * clusters - 1), abs=1e-9)
    assert entropy.item() == pytest.approx(0.0, abs=1e-12)
