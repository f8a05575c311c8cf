"""How good a clustering looks without labels, and how much cluster structure the raw pixels hold.

``structure``: how reproducibly the run's clusters come back from its own embedding. The images
are split at random into two halves, k-means (K clusters) is fitted on each half's embeddings,
every image is assigned by both fits, and the adjusted Rand index of each fit's assignment
against the run's clusters is averaged over halves and repeats. A clustering that follows
structure the embedding holds scores near 1; one the embedding does not support (shuffled
clusters) near 0, and so does a collapsed one (ARI of one cluster against many is 0).

``stability``: the two halves' fits against each other, the resampling stability of Lange et al.
(2004, *Stability-based validation of clustering solutions*): how much cluster structure the
embedding holds, whatever the head says. ``pixel_stability`` is the same for the raw pixels of the
same images (reduced by PCA): a run whose embedding is more stable than the pixels found structure
the pixels do not show on their own.

Beside them: ``balance`` (entropy of the cluster sizes over ``log K``: 1 is even, 0 one cluster),
``confidence`` (mean top probability) and ``clusters_used``. No label is read: labels, when
present, only score these figures against ACC in the benchmarks (scripts/validate_quality.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

SAMPLE = 4000  # images the scores are computed on (a fixed random sample beyond it)
REPEATS = 3  # random halvings
PIXEL_DIMS = 50  # PCA dimensions of the raw-pixel baseline
PIXEL_SIDE = 32  # larger images are reduced to this side (area average) before the PCA


@dataclass(frozen=True)
class Quality:
    structure: float | None  # None: too few images for K clusters in each half
    stability: float | None
    balance: float
    confidence: float | None
    clusters_used: int
    pixel_stability: float | None = None
    images: int = 0

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    def line(self) -> str:
        """One line for the log: the figures and how the embedding compares with the pixels."""
        parts = []
        for name in ("structure", "stability", "balance", "confidence"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name} {value:.3f}")
        parts.append(f"{self.clusters_used} clusters used")
        text = "label-free quality: " + ", ".join(parts)
        if self.structure is None:
            text += " (too few images to resample)"
        if self.pixel_stability is not None and self.stability is not None:
            verdict = "more" if self.stability > self.pixel_stability else "no more"
            text += (
                f"; raw pixels: stability {self.pixel_stability:.3f} "
                f"(the run's embedding holds {verdict} cluster structure than the pixels)"
            )
        return text


def _kmeans(points: np.ndarray, k: int, seed: int) -> KMeans:
    return KMeans(k, n_init=3, random_state=seed).fit(points)


def resampled_fits(points: np.ndarray, k: int, seed: int, repeats: int = REPEATS) -> list[np.ndarray]:
    """Every image's k-means assignment by fits on random halves: ``2 * repeats`` arrays."""
    rng = np.random.default_rng(seed)
    assignments = []
    for repeat in range(repeats):
        order = rng.permutation(len(points))
        for half in (order[: len(points) // 2], order[len(points) // 2 :]):
            assignments.append(_kmeans(points[half], k, seed + repeat).predict(points))
    return assignments


def resamplable(images: int, k: int) -> bool:
    """Each half holds at least two images a cluster (else k-means on it means little)."""
    return k >= 2 and images // 2 >= 2 * k


def _halves_agree(fits: list[np.ndarray]) -> float:
    """Mean ARI of each halving's two fits against each other."""
    return float(np.mean([adjusted_rand_score(a, b) for a, b in zip(fits[::2], fits[1::2], strict=True)]))


def structure_score(points: np.ndarray, clusters: np.ndarray, k: int, seed: int = 0) -> tuple[float, float]:
    """``(structure, stability)`` of ``clusters`` over the embedding ``points`` (see the module)."""
    fits = resampled_fits(points, k, seed)
    return float(np.mean([adjusted_rand_score(clusters, fit) for fit in fits])), _halves_agree(fits)


def head_fit_agreements(
    points: np.ndarray, head_clusters: list[np.ndarray], k: int, seed: int = 0
) -> list[list[float]]:
    """ARI of each head's clusters against each k-means fit of one embedding (the fits shared),
    on the fixed sample of at most 4,000 images that :func:`label_free_quality` uses."""
    index = sample_index(len(points), seed)
    fits = resampled_fits(np.asarray(points, dtype=np.float32)[index], k, seed)
    return [[adjusted_rand_score(np.asarray(c)[index], fit) for fit in fits] for c in head_clusters]


def head_structures(
    points: np.ndarray, head_clusters: list[np.ndarray], k: int, seed: int = 0
) -> list[float]:
    """``structure`` of each head's clusters over one embedding: the mean of its
    :func:`head_fit_agreements`."""
    return [float(np.mean(row)) for row in head_fit_agreements(points, head_clusters, k, seed)]


@torch.no_grad()
def embed_and_assign_heads(
    network: Any, batches: Iterable[torch.Tensor]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The run's embedding (:meth:`~vtcc.models.ClusteringNetwork.embed`) and every cluster head's
    argmax, for batches of the network's inputs: ``(N, D)`` and one ``(N,)`` array a head."""
    training = network.training
    network.eval()
    embeddings, clusters = [], []
    try:
        for inputs in batches:
            features = network.features(inputs)
            embeddings.append(network.embed(features).float().cpu())
            clusters.append(torch.stack([head(features).argmax(1) for head in network.cluster_heads]).cpu())
    finally:
        network.train(training)
    per_head = torch.cat(clusters, dim=1).numpy()
    return torch.cat(embeddings).numpy(), list(per_head)


def stability_score(points: np.ndarray, k: int, seed: int = 0) -> float:
    return _halves_agree(resampled_fits(points, k, seed))


def balance(clusters: np.ndarray, k: int) -> float:
    sizes = np.bincount(clusters, minlength=k).astype(float)
    shares = sizes[sizes > 0] / sizes.sum()
    return float(-(shares * np.log(shares)).sum() / math.log(k)) if k > 1 else 1.0


def sample_index(n: int, seed: int, size: int = SAMPLE) -> np.ndarray:
    """The images the scores are computed on: all of ``n``, or a fixed random ``size`` of them."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def pixel_vectors(pixels: np.ndarray | torch.Tensor, chunk: int = 256) -> np.ndarray:
    """Raw images ``(N, C, H, W)`` (or vectors ``(N, D)``) as float vectors, images larger than
    32 px reduced by area averaging chunk by chunk (a sample of large photos stays small)."""
    pixels = torch.as_tensor(np.asarray(pixels))
    if pixels.ndim != 4:
        return pixels.reshape(len(pixels), -1).float().numpy()
    parts = []
    for start in range(0, len(pixels), chunk):
        part = pixels[start : start + chunk].float()
        if max(part.shape[-2:]) > PIXEL_SIDE:
            part = F.adaptive_avg_pool2d(part, PIXEL_SIDE)
        parts.append(part.reshape(len(part), -1))
    return torch.cat(parts).numpy()


def pixel_stability(pixels: np.ndarray | torch.Tensor, k: int, seed: int = 0) -> float:
    """``stability`` of the raw pixels ``(N, C, H, W)``: reduced (:func:`pixel_vectors`), PCA to 50
    dimensions, then k-means fits on random halves against each other."""
    flat = pixel_vectors(pixels)
    dims = min(PIXEL_DIMS, flat.shape[1], len(flat) - 1)
    reduced = PCA(dims, random_state=seed).fit_transform(flat) if dims < flat.shape[1] else flat
    return stability_score(reduced, k, seed)


def label_free_quality(
    embeddings: np.ndarray,
    clusters: np.ndarray,
    num_clusters: int,
    confidence: np.ndarray | None = None,
    pixels_at: Callable[[np.ndarray], np.ndarray | torch.Tensor] | None = None,
    seed: int = 0,
) -> Quality:
    """The figures of the module's docstring for one clustering of ``N`` images: ``embeddings``
    ``(N, D)``, ``clusters`` ``(N,)``, each image's top probability ``confidence`` ``(N,)``, and
    ``pixels_at(positions)``: the raw images at those positions, for the baseline. Structure and
    stability use a fixed random sample of at most 4,000 images; with fewer than four images a
    cluster they are None."""
    index = sample_index(len(clusters), seed)
    structure = stability = pixel = None
    if resamplable(len(index), num_clusters):
        points = np.asarray(embeddings, dtype=np.float32)[index]
        structure, stability = structure_score(points, np.asarray(clusters)[index], num_clusters, seed)
        if pixels_at is not None:  # fetched and reduced a chunk at a time: large photos stay small
            chunks = [pixel_vectors(pixels_at(index[s : s + 256])) for s in range(0, len(index), 256)]
            pixel = pixel_stability(np.concatenate(chunks), num_clusters, seed)
    return Quality(
        structure=None if structure is None else round(structure, 4),
        stability=None if stability is None else round(stability, 4),
        balance=round(balance(np.asarray(clusters), num_clusters), 4),
        confidence=None if confidence is None else round(float(np.mean(confidence)), 4),
        clusters_used=int(len(np.unique(clusters))),
        pixel_stability=None if pixel is None else round(pixel, 4),
        images=len(index),
    )


def generalization_score(
    spaces: list[np.ndarray], clusters: np.ndarray, folds: int = 10, max_iter: int = 1000, seed: int = 42
) -> float:
    """TURTLE's label-free generalisation score (``cross_val.py``): how well a linear classifier
    learns the clustering. Per space, ``folds``-fold cross-validation (a random permutation cut
    into ``folds`` parts as ``cross_val.py`` cuts it, not stratified) of an L2-regularised
    multinomial logistic regression (C = 1) fitted on that space's raw features to predict
    ``clusters``; the held-out accuracy is averaged over folds, then over spaces.
    scikit-learn's L-BFGS instead of cuML's, at scikit-learn's tolerance (cuML's 1e-9 runs
    every one of ``max_iter`` iterations on a CPU).
    Higher is better; it favours few clusters (two halves are easier to learn than ten)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clusters = np.asarray(clusters)
    order = np.random.RandomState(seed).permutation(len(clusters))  # cross_val.py's folds
    parts = np.array_split(order, folds)
    scores = []
    for features in spaces:
        features = np.asarray(features, dtype=np.float32)
        accuracies = []
        for held_out in parts:
            train = np.setdiff1d(order, held_out, assume_unique=True)
            if len(np.unique(clusters[train])) < 2:  # one cluster: predicted perfectly by a constant
                accuracies.append(float(np.mean(clusters[held_out] == clusters[train][0])))
                continue
            model = LogisticRegression(C=1.0, max_iter=max_iter)
            with warnings.catch_warnings():  # max_iter is a budget, as in TURTLE's code
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(features[train], clusters[train])
            accuracies.append(float(np.mean(model.predict(features[held_out]) == clusters[held_out])))
        scores.append(float(np.mean(accuracies)))
    return float(np.mean(scores))
