"""Label-free suggestions for curating a run's clusters: which look alike, which mix two groups.

- **Similar pairs** (merge candidates): for every image, its ``k`` nearest neighbours in the run's
  embedding (cosine, :func:`vtcc.knn.nearest_neighbors`); ``share[a, b]`` is the fraction of the
  neighbours of cluster ``a``'s images that lie in cluster ``b``. A pair's score is the mean of
  ``share[a, b]`` and ``share[b, a]``: two clusters cut from one group of images score high
  (their images' neighbours cross the boundary), two distinct groups near 0.
- **Mixed clusters** (split candidates): each cluster's images are split in two by 2-means on
  their embedding; the score is the silhouette of that split (-1 to 1): high when the cluster holds
  two separate groups, low when it is one. The same k-means (k = 2 and 3) gives the sub-clusters
  the explorer proposes, with their centroids, which ``curation.json`` keeps so that a split
  applies to new images (:mod:`vtcc.curation`).

So over-clustering (a K above the expected count) followed by merging the listed pairs is a
guided path; :func:`merge_clusters` walks it without a person (greedy, the top pair each time).
No label is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from vtcc.knn import nearest_neighbors

NEIGHBOURS = 10
SAMPLE = 20_000  # images the neighbour shares are computed on (a fixed random sample beyond)
SPLIT_SAMPLE = 2_000  # images of one cluster its sub-clusters are fitted on
PARTS = (2, 3)  # the sub-cluster counts the explorer proposes
SHOWN = 8  # rows of each table


@dataclass
class Suggestions:
    pairs: list[tuple[int, int, float]]  # (a, b, score), most alike first
    mixed: list[tuple[int, float, tuple[int, int]]]  # (cluster, silhouette, part sizes), most mixed first
    parts: dict[int, np.ndarray] = field(default_factory=dict)  # k -> each image's part (-1: none)
    centroids: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)  # k -> cluster -> (k, D)


def neighbour_counts(
    embeddings: np.ndarray, clusters: np.ndarray, num_clusters: int, k: int = NEIGHBOURS, seed: int = 0
) -> np.ndarray:
    """``(K, K)``: row ``a`` how many of the ``k`` nearest neighbours of cluster ``a``'s images lie
    in each cluster (a random sample of :data:`SAMPLE` images beyond it)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(len(clusters)) if len(clusters) <= SAMPLE else rng.choice(len(clusters), SAMPLE, False)
    k = min(k, len(rows) - 1)
    neighbours = nearest_neighbors(
        torch.from_numpy(np.asarray(embeddings[rows], np.float32)), k, device="cpu"
    )
    own = np.repeat(clusters[rows], k)
    counts = np.zeros((num_clusters, num_clusters))
    np.add.at(counts, (own, clusters[rows][neighbours.numpy().ravel()]), 1)
    return counts


def row_shares(counts: np.ndarray) -> np.ndarray:
    """Each row of a count matrix over its total (a row of zeros stays zeros)."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def neighbour_shares(
    embeddings: np.ndarray, clusters: np.ndarray, num_clusters: int, k: int = NEIGHBOURS, seed: int = 0
) -> np.ndarray:
    """``(K, K)``: row ``a`` the share of the ``k`` nearest neighbours of cluster ``a``'s images in
    each cluster (a random sample of :data:`SAMPLE` images beyond it)."""
    return row_shares(neighbour_counts(embeddings, clusters, num_clusters, k, seed))


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """Each row over its L2 norm (a row of zeros stays zeros)."""
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def merge_clusters(
    embeddings: np.ndarray, clusters: np.ndarray, num_clusters: int, target: int, seed: int = 0
) -> np.ndarray:
    """Over-clustering, then merging, without a person: the pair of clusters with the highest mean
    neighbour share (the report's first merge candidate) is merged, the shares of the merged
    cluster recounted from the summed neighbour counts, until ``target`` clusters hold images.
    Pairs of equal share (most often 0: no neighbour in common) go by the cosine of their mean
    L2-normalised embeddings, the closer first. Returns each image's cluster, numbered
    ``0..target-1`` in the order of the smallest old id (a clustering already at or under
    ``target`` non-empty clusters is only renumbered)."""
    if target < 1:
        raise ValueError(f"merge_clusters: target={target}; merge to at least 1 cluster")
    clusters = np.asarray(clusters, np.int64)
    counts = neighbour_counts(embeddings, clusters, num_clusters, seed=seed)
    points = np.asarray(embeddings, np.float64)
    sums = np.zeros((num_clusters, points.shape[1]))
    np.add.at(sums, clusters, unit_rows(points))
    groups = {c: [c] for c in np.unique(clusters).tolist()}  # cluster -> the old clusters it holds
    while len(groups) > target:
        ids = sorted(groups)
        shares = row_shares(counts[np.ix_(ids, ids)])
        score = (shares + shares.T) / 2
        np.fill_diagonal(score, -1.0)
        directions = unit_rows(sums[ids])
        cosine = np.where(score >= score.max(), directions @ directions.T, -np.inf)  # the tied best
        a, b = np.unravel_index(int(np.argmax(cosine)), cosine.shape)  # first highest: deterministic
        keep, gone = ids[min(a, b)], ids[max(a, b)]
        counts[keep] += counts[gone]
        counts[:, keep] += counts[:, gone]
        counts[gone] = counts[:, gone] = 0
        sums[keep] += sums[gone]
        groups[keep] += groups.pop(gone)
    relabel = np.zeros(num_clusters, np.int64)
    for new, old in enumerate(sorted(groups)):
        relabel[groups[old]] = new
    return relabel[clusters]


def similar_pairs(shares: np.ndarray, top: int = SHOWN) -> list[tuple[int, int, float]]:
    """The ``top`` pairs of clusters with the highest mean cross share (above 0)."""
    score = (shares + shares.T) / 2
    a, b = np.triu_indices(len(shares), 1)
    order = np.argsort(-score[a, b], kind="stable")[:top]
    return [(int(a[i]), int(b[i]), float(score[a[i], b[i]])) for i in order if score[a[i], b[i]] > 0]


def split_proposals(
    embeddings: np.ndarray, clusters: np.ndarray, seed: int = 0
) -> tuple[dict[int, np.ndarray], dict[int, dict[int, np.ndarray]], dict[int, float]]:
    """Per k of :data:`PARTS`: each image's part in its cluster's k-means (-1 where its cluster
    has fewer than ``2k`` images) and each cluster's centroids; and each cluster's 2-split
    silhouette."""
    points = np.asarray(embeddings, np.float32)
    parts = {k: np.full(len(clusters), -1, np.int64) for k in PARTS}
    centroids: dict[int, dict[int, np.ndarray]] = {k: {} for k in PARTS}
    silhouettes: dict[int, float] = {}
    rng = np.random.default_rng(seed)
    for cluster in np.unique(clusters).tolist():
        members = np.flatnonzero(clusters == cluster)
        fitted = members if len(members) <= SPLIT_SAMPLE else rng.choice(members, SPLIT_SAMPLE, False)
        for k in PARTS:
            if len(fitted) < 2 * k or len(np.unique(points[fitted], axis=0)) < k:
                continue
            model = KMeans(k, n_init=3, random_state=seed).fit(points[fitted])
            parts[k][members] = model.predict(points[members])
            centroids[k][cluster] = model.cluster_centers_.astype(np.float32)
            if k == 2 and len(set(model.labels_.tolist())) == 2:
                silhouettes[cluster] = float(silhouette_score(points[fitted], model.labels_))
    return parts, centroids, silhouettes


def suggest(embeddings: np.ndarray, clusters: np.ndarray, num_clusters: int, seed: int = 0) -> Suggestions:
    """The similar pairs, the mixed clusters and the explorer's split proposals of a run."""
    clusters = np.asarray(clusters, np.int64)
    pairs = similar_pairs(neighbour_shares(embeddings, clusters, num_clusters, seed=seed))
    parts, centroids, silhouettes = split_proposals(embeddings, clusters, seed)
    mixed = []
    for cluster, score in sorted(silhouettes.items(), key=lambda item: -item[1])[:SHOWN]:
        sizes = np.bincount(parts[2][clusters == cluster], minlength=2)
        mixed.append((cluster, score, (int(sizes[0]), int(sizes[1]))))
    return Suggestions(pairs, mixed, parts, centroids)


def suggestions_section(suggestions: Suggestions) -> str:
    """The report's tables; each row's button merges or splits in the explorer (curation.js)."""
    pairs = "".join(
        f"<tr><td>{a} and {b}</td><td>{score:.3f}</td><td>"
        f'<button type="button" data-merge="{a},{b}">merge in the explorer</button></td></tr>'
        for a, b, score in suggestions.pairs
    )
    mixed = "".join(
        f"<tr><td>{cluster}</td><td>{score:.3f}</td><td>{sizes[0]} + {sizes[1]}</td><td>"
        f'<button type="button" data-split="{cluster}">split in 2 in the explorer</button></td></tr>'
        for cluster, score, sizes in suggestions.mixed
    )
    return (
        '<section id="suggestions"><h2>Suggestions without labels</h2>'
        f"<p>Clusters that look alike: the share of each one's images' {NEIGHBOURS} nearest neighbours "
        "in the embedding that lie in the other (mean of both ways; 0: none). Merge candidates: "
        "with more clusters than kinds of images, merging these is the guided path.</p>"
        f"<table><tr><th>clusters</th><th>shared neighbours</th><th></th></tr>{pairs}"
        "</table><p>Clusters that may mix two groups: the silhouette of their split in two "
        "(2-means on the embedding; near 1: two separate groups, near 0: one).</p>"
        f"<table><tr><th>cluster</th><th>silhouette</th><th>parts</th><th></th></tr>{mixed}</table></section>"
    )
