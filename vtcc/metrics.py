"""Clustering metrics from one contingency table: ACC (Hungarian matching), NMI and ARI."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import comb


def contingency_table(labels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Counts ``(num_labels, num_clusters)`` over the values that actually occur."""
    _, label_index = np.unique(labels, return_inverse=True)
    _, cluster_index = np.unique(clusters, return_inverse=True)
    table = np.zeros((label_index.max() + 1, cluster_index.max() + 1), dtype=np.int64)
    np.add.at(table, (label_index, cluster_index), 1)
    return table


def accuracy_from_table(table: np.ndarray) -> float:
    """Best one-to-one cluster-to-label matching; unmatched clusters count as errors."""
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def many_to_one_accuracy_from_table(table: np.ndarray) -> float:
    """Each cluster takes its majority label; the score for over-clustering (K above the class count)."""
    return float(table.max(axis=0).sum() / table.sum())


def nmi_from_table(table: np.ndarray) -> float:
    """Mutual information over the arithmetic mean of the entropies (scikit-learn's default)."""
    n = table.sum()
    joint = table[table > 0] / n
    outer = np.outer(table.sum(1), table.sum(0))[table > 0] / n**2
    mutual_information = float((joint * np.log(joint / outer)).sum())
    h_labels = _entropy(table.sum(1) / n)
    h_clusters = _entropy(table.sum(0) / n)
    if h_labels == 0 and h_clusters == 0:
        return 1.0
    denominator = (h_labels + h_clusters) / 2
    return float(max(mutual_information, 0.0) / denominator) if denominator > 0 else 0.0


def ari_from_table(table: np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie); 1 for fewer than two samples, as scikit-learn."""
    n = table.sum()
    if n < 2:
        return 1.0
    index = comb(table, 2).sum()
    rows = comb(table.sum(1), 2).sum()
    cols = comb(table.sum(0), 2).sum()
    expected = rows * cols / comb(n, 2)
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def clustering_metrics(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """ACC, NMI, ARI of predicted ``clusters`` against ground-truth ``labels`` (both shape ``(N,)``).

    ``acc_many_to_one`` maps each cluster to its majority label; it equals or exceeds ACC and is
    the fair score when there are more clusters than classes.
    """
    labels, clusters = np.asarray(labels).ravel(), np.asarray(clusters).ravel()
    if labels.shape != clusters.shape or labels.size == 0:
        raise ValueError(f"labels {labels.shape} and clusters {clusters.shape} must be equal, non-empty")
    table = contingency_table(labels, clusters)
    return {
        "acc": accuracy_from_table(table),
        "acc_many_to_one": many_to_one_accuracy_from_table(table),
        "nmi": nmi_from_table(table),
        "ari": ari_from_table(table),
    }
