"""ACC, NMI and ARI against scikit-learn and a brute-force matching."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from vtcc.metrics import clustering_metrics


def brute_force_acc(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Best accuracy over every injective cluster -> label map (small K only)."""
    label_values, cluster_values = np.unique(labels), np.unique(clusters)
    best = 0
    size = max(len(label_values), len(cluster_values))
    for perm in itertools.permutations(range(size), len(cluster_values)):
        mapping = {c: perm[i] for i, c in enumerate(cluster_values)}
        mapped = np.array([mapping[c] for c in clusters])
        hits = sum(
            1 for m, y in zip(mapped, labels, strict=True) if m < len(label_values) and label_values[m] == y
        )
        best = max(best, hits)
    return best / len(labels)


def test_permuted_labels_are_perfect():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=500)
    permutation = rng.permutation(10)
    metrics = clustering_metrics(labels, permutation[labels] + 100)
    assert metrics == {
        "acc": 1.0,
        "acc_many_to_one": 1.0,
        "nmi": pytest.approx(1.0),
        "ari": pytest.approx(1.0),
    }


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("num_labels", "num_clusters"), [(4, 4), (3, 5), (5, 3)])
def test_random_labels_match_sklearn_and_brute_force(seed, num_labels, num_clusters):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels, size=60)
    clusters = np.where(rng.random(60) < 0.6, labels % num_clusters, rng.integers(0, num_clusters, size=60))
    metrics = clustering_metrics(labels, clusters)
    assert metrics["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=1e-10)
    assert metrics["ari"] == pytest.approx(adjusted_rand_score(labels, clusters), abs=1e-10)
    assert metrics["acc"] == pytest.approx(brute_force_acc(labels, clusters), abs=1e-12)


def test_single_cluster_has_zero_nmi_and_ari():
    labels = np.array([0, 1, 2, 0, 1, 2])
    metrics = clustering_metrics(labels, np.zeros(6, dtype=int))
    assert metrics["acc"] == pytest.approx(2 / 6)
    assert metrics["nmi"] == pytest.approx(normalized_mutual_info_score(labels, np.zeros(6)))
    assert metrics["ari"] == pytest.approx(0.0)


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="must be equal"):
        clustering_metrics(np.array([0, 1]), np.array([0]))


def test_many_to_one_accuracy_rewards_over_clustering():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    clusters = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # each class split in two pure clusters
    metrics = clustering_metrics(labels, clusters)
    assert metrics["acc_many_to_one"] == 1.0 and metrics["acc"] == 0.5
    mixed = clustering_metrics(labels, np.array([0, 0, 0, 1, 1, 1, 1, 2]))
    assert mixed["acc_many_to_one"] == pytest.approx(7 / 8)


@pytest.mark.parametrize(("labels", "clusters"), [([3], [0]), ([1, 1], [0, 1]), ([0, 1], [5, 5])])
def test_tiny_inputs_give_scikit_learns_ari_not_nan(labels, clusters):
    assert clustering_metrics(np.array(labels), np.array(clusters))["ari"] == pytest.approx(
        adjusted_rand_score(labels, clusters)
    )


@pytest.mark.parametrize(("num_labels", "num_clusters"), [(6, 3), (3, 6), (4, 4)])
def test_report_confusion_puts_the_hungarian_pairs_on_the_diagonal(num_labels, num_clusters):
    from scipy.optimize import linear_sum_assignment

    from vtcc.report.figures import matched_confusion

    rng = np.random.default_rng(num_labels * 10 + num_clusters)
    labels = rng.integers(0, num_labels, 300)
    clusters = (labels + rng.integers(0, 2, 300)) % num_clusters
    table, label_names, cluster_names = matched_confusion(labels, clusters)
    matched = min(num_labels, num_clusters)
    original = np.zeros((num_labels, num_clusters), dtype=int)
    np.add.at(original, (labels, clusters), 1)
    rows, cols = linear_sum_assignment(original, maximize=True)
    assert np.trace(table[:matched, :matched]) == original[rows, cols].sum()  # the best matching
    assert sorted(label_names) == np.unique(labels).tolist()
    assert sorted(cluster_names) == np.unique(clusters).tolist()
    assert (
        table[label_names.index(labels[0]), cluster_names.index(clusters[0])]
        == original[labels[0], clusters[0]]
    )
