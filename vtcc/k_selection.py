"""``num_clusters=auto``: choose K from the data, never from labels.

The backbone is trained once (its cluster head over-clusters at the largest candidate K); then
k-means partitions its embeddings of the evaluation images for every candidate K, a label-free
criterion scores each partition, and a fresh cluster head at the chosen K is trained on.
Criteria (``k_search.criterion``; the default, ``davies_bouldin``, was chosen by measurement on
digits, see the README): ``davies_bouldin`` (lower is better), ``silhouette`` (cosine, higher),
``calinski_harabasz`` (higher), ``stability`` (ARI between the k-means partitions of two random
80 % subsamples, on the images they share; higher), ``generalization`` (TURTLE's score: 10-fold
cross-validated accuracy of a logistic regression predicting the partition, higher; computed only
when chosen). Its bias, measured: merging true clusters keeps them linearly separable, so every K
up to the true one scores about as high and the smallest such K wins (tests/integration/test_k_selection.py;
digits in docs/selflabel-temi-k.md).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)

from vtcc.errors import ConfigError
from vtcc.io.writer import Writer
from vtcc.quality import generalization_score
from vtcc.utils.progress import Progress

log = logging.getLogger("vtcc")

CRITERIA = {
    "silhouette": max,
    "calinski_harabasz": max,
    "davies_bouldin": min,
    "stability": max,
    "generalization": max,
}
ON_REQUEST = ("generalization",)  # costly (a 10-fold fit per K): computed only when it chooses K
EMBEDDINGS = ("backbone", "instance")


def search_range(k_min: int, k_max: int | None, num_images: int) -> list[int]:
    """Candidate Ks: ``k_min..k_max`` (default ``k_max``: 50, or N/10 for small data)."""
    if k_max is None:
        k_max = min(50, num_images // 10)
    if k_min < 2:
        raise ConfigError(
            f"k_search.min={k_min}: a clustering needs at least 2 clusters; set k_search.min>=2"
        )
    if k_max >= num_images:
        raise ConfigError(f"k_search.max={k_max} is not below the {num_images} images: lower k_search.max")
    if k_max < k_min:
        raise ConfigError(
            f"num_clusters=auto searches K from {k_min} to {k_max}, an empty range for {num_images} images "
            f"(the default maximum is N/10): add images, or set k_search.min and k_search.max"
        )
    return list(range(k_min, k_max + 1))


def _kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(points)


def score_candidates(
    embeddings: np.ndarray,
    candidates: list[int],
    seed: int = 0,
    max_points: int = 5000,
    criterion: str | None = None,
) -> list[dict[str, float]]:
    """One row per K: every criterion for the k-means partition of ``embeddings`` (L2-normalised);
    those of :data:`ON_REQUEST` only when ``criterion`` names them (else NaN)."""
    points = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(min=1e-12)
    rng = np.random.default_rng(seed)
    if len(points) > max_points:  # the criteria are quadratic in N: a fixed random sample
        points = points[np.sort(rng.choice(len(points), max_points, replace=False))]
    subsets = [np.sort(rng.choice(len(points), int(0.8 * len(points)), replace=False)) for _ in range(2)]
    shared = np.intersect1d(*subsets)
    rows = []
    progress = Progress("K search", len(candidates), "candidate Ks scored")
    for k in candidates:
        labels = _kmeans(points, k, seed)
        partitions = []
        for subset in subsets:
            assignment = np.full(len(points), -1)
            assignment[subset] = _kmeans(points[subset], k, seed)
            partitions.append(assignment[shared])
        rows.append(
            {
                "k": k,
                "silhouette": float(silhouette_score(points, labels, metric="cosine")),
                "calinski_harabasz": float(calinski_harabasz_score(points, labels)),
                "davies_bouldin": float(davies_bouldin_score(points, labels)),
                "stability": float(adjusted_rand_score(*partitions)),
                "generalization": generalization_score([points], labels, seed=seed)
                if criterion == "generalization"
                else float("nan"),
            }
        )
        progress.advance()
    return rows


def check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise ConfigError(f"k_search.criterion={criterion!r} is unknown: use one of {', '.join(CRITERIA)}")


def choose(rows: list[dict[str, float]], criterion: str) -> int:
    check_criterion(criterion)
    best = CRITERIA[criterion](rows, key=lambda row: row[criterion])
    return int(best["k"])


def write_table(
    path: Path, rows: list[dict[str, float]], chosen: int, criterion: str, writer: Writer | None = None
) -> Path:
    """``k_selection.csv``: every candidate K, every criterion, and which K was chosen by which
    (through ``writer``, default one over the file's folder)."""
    scored = [name for name in CRITERIA if not all(np.isnan(row[name]) for row in rows)]  # computed ones
    with (writer or Writer(path.parent)).open(path, "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(["k", *scored, "chosen"])
        for row in rows:
            marker = criterion if row["k"] == chosen else ""
            table.writerow([row["k"], *(f"{row[name]:.6g}" for name in scored), marker])
    return path


@torch.no_grad()
def embed(network: torch.nn.Module, dataloader, on_batch, device: torch.device, which: str) -> np.ndarray:
    """Backbone features or instance vectors of every evaluation image, in loader order."""
    if which not in EMBEDDINGS:
        raise ConfigError(f"k_search.embedding={which!r} is unknown: use backbone or instance")
    if which == "instance" and network.instance_projector is None:
        raise ConfigError(
            "k_search.embedding=instance needs an objective that trains instance vectors "
            "(objective=contrastive): use k_search.embedding=backbone"
        )
    training = network.training  # the refine phase trains this network on: its mode comes back
    network.eval().to(device)
    outputs = []
    try:
        for batch in dataloader:
            images = on_batch(batch)[0].to(device)
            features = network.features(images)
            outputs.append(
                (features if which == "backbone" else network.instance_projector(features)).float().cpu()
            )
    finally:
        network.train(training)
    return torch.cat(outputs).numpy()
