"""Nearest neighbours for SCAN's and TEMI's mining (cosine similarity, each image's own row left out).

``exact``: chunked matrix products, the chunk sized so that one block of similarities stays under
:data:`CHUNK_BYTES` whatever N is (a fixed 4,096-row chunk would be 16 GB at a million images).
The exact search runs on a GPU when there is one. ``faiss``: FAISS's HNSW graph (``faiss-cpu``,
``pip install 'vtcc[scale]'``), approximate, for data where an exact search (N^2 similarities)
takes too long; with ``faiss-gpu`` its exact flat index on every GPU instead. ``auto`` (the
default): exact up to :data:`EXACT_LIMIT` images, FAISS above it when it is installed (the limit
and the figures behind it: ``scripts/benchmark_neighbors.py``, docs/performance.md).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from vtcc.errors import ConfigError
from vtcc.utils.extras import optional_module

log = logging.getLogger("vtcc")

CHUNK_BYTES = 256 * 2**20
EXACT_LIMIT = 100_000  # measured: exact 63 s, HNSW 42 s at 100,000 x 384 on 2 cores (recall 0.99999)
BACKENDS = ("auto", "exact", "faiss")
HNSW_LINKS = 32  # FAISS's M: graph links per vector


def _check(features: torch.Tensor, k: int, backend: str) -> None:
    if not 0 < k < len(features):
        raise ConfigError(
            f"num_neighbors={k} must be between 1 and the number of images - 1 ({len(features) - 1})"
        )
    if backend not in BACKENDS:
        raise ConfigError(f"neighbour search {backend!r} is unknown: use one of {', '.join(BACKENDS)}")


def _faiss_installed() -> bool:
    return optional_module("faiss", "pip install 'vtcc[scale]'") is not None


def choose_backend(count: int, backend: str = "auto", warn: bool = True) -> str:
    """``exact`` or ``faiss`` for ``count`` images (``warn``: say when FAISS would be used but is
    not installed)."""
    if backend == "faiss" and not _faiss_installed():
        raise ConfigError("the FAISS neighbour search needs faiss-cpu: pip install 'vtcc[scale]'")
    if backend != "auto":
        return backend
    if count <= EXACT_LIMIT:  # faiss is looked up only where it would be used
        return "exact"
    if not _faiss_installed():
        if not warn:
            return "exact"
        log.warning(
            "mining neighbours of %d images exactly (N^2 similarities); pip install 'vtcc[scale]' for "
            "FAISS's approximate search above %d images",
            count,
            EXACT_LIMIT,
        )
        return "exact"
    return "faiss"


def nearest_neighbors(
    features: torch.Tensor, k: int, chunk: int | None = None, backend: str = "auto", device: str = "auto"
) -> torch.Tensor:
    """Indices ``(N, k)`` of each row's ``k`` most cosine-similar other rows of ``(N, D)`` features,
    most similar first. ``chunk``: rows per block of the exact search (default: what fits
    :data:`CHUNK_BYTES`). ``device``: where the exact search runs (``auto``: a GPU when there is
    one; FAISS runs on the GPUs it was built for, ``faiss-gpu``)."""
    _check(features, k, backend)
    normed = torch.nn.functional.normalize(features.float(), dim=1)
    if choose_backend(len(normed), backend) == "faiss":
        return _faiss(normed.cpu(), k)
    if torch.cuda.is_available() and device in ("auto", "cuda"):  # the exact search on the GPU
        normed = normed.cuda()
    rows = chunk or max(1, CHUNK_BYTES // (4 * len(normed)))
    result = []
    for start in range(0, len(normed), rows):
        similarity = normed[start : start + rows] @ normed.T
        own = torch.arange(start, min(start + rows, len(normed)), device=normed.device)
        similarity[own - start, own] = -math.inf
        result.append(similarity.topk(k, dim=1).indices.cpu())
    return torch.cat(result)


def _faiss(normed: torch.Tensor, k: int) -> torch.Tensor:
    """HNSW over inner products of unit vectors (cosine), or with faiss-gpu the exact flat index
    on the GPUs; each row's own index dropped."""
    import faiss

    points = np.ascontiguousarray(normed.numpy(), dtype=np.float32)
    gpus = faiss.get_num_gpus()  # 0 with faiss-cpu
    if gpus:  # faiss-gpu: the exact inner-product search on every GPU (HNSW has no GPU version)
        index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(points.shape[1]))
    else:
        index = faiss.IndexHNSWFlat(points.shape[1], HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = max(128, 4 * k)
    index.add(points)
    _, found = index.search(points, k + 1)
    own = np.arange(len(points))[:, None]
    keep = found != own
    # a row whose own index was not returned (a duplicate ranked first) drops its last neighbour
    keep[keep.all(axis=1), -1] = False
    return torch.from_numpy(found[keep].reshape(len(points), k)).long()
