"""Neighbour mining: the exact search against brute force, FAISS's against the exact one."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from vtcc import knn
from vtcc.errors import ConfigError


def brute_force(features: torch.Tensor, k: int) -> torch.Tensor:
    """Every pair's cosine similarity at once, the diagonal excluded."""
    normed = torch.nn.functional.normalize(features.double(), dim=1)
    similarity = normed @ normed.T
    similarity.fill_diagonal_(-np.inf)
    return similarity.topk(k, dim=1).indices


def clustered(count: int, dim: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim)) * 4
    return torch.from_numpy(centres[rng.integers(0, 8, count)] + rng.standard_normal((count, dim))).float()


@pytest.mark.parametrize("chunk", [None, 1, 7, 1000])
def test_the_exact_search_is_brute_force_in_any_chunk(chunk):
    features = torch.randn(150, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        knn.nearest_neighbors(features, 6, chunk=chunk, backend="exact"), brute_force(features, 6)
    )


def test_the_exact_search_bounds_its_memory_by_rows(monkeypatch):
    """A block of similarities is at most CHUNK_BYTES: with 400 bytes and 50 images, 2 rows a block."""
    blocks = []
    real_topk = torch.Tensor.topk

    def counting(self, *args, **kwargs):
        blocks.append(self.shape)
        return real_topk(self, *args, **kwargs)

    monkeypatch.setattr(knn, "CHUNK_BYTES", 400)
    monkeypatch.setattr(torch.Tensor, "topk", counting)
    features = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    found = knn.nearest_neighbors(features, 3, backend="exact")
    assert {shape for shape in blocks} == {(2, 50)} and len(blocks) == 25
    monkeypatch.setattr(torch.Tensor, "topk", real_topk)
    assert torch.equal(found, brute_force(features, 3))


def test_faiss_finds_the_exact_neighbours_on_small_data():
    faiss = pytest.importorskip("faiss")
    faiss.omp_set_num_threads(1)  # HNSW's graph is built the same way every time
    features = clustered(600, 16)
    exact = knn.nearest_neighbors(features, 10, backend="exact")
    approximate = knn.nearest_neighbors(features, 10, backend="faiss")
    assert approximate.shape == (600, 10) and approximate.dtype == torch.long
    own = torch.arange(600)[:, None]
    assert not (approximate == own).any()  # each image's own row is never its neighbour
    same = [set(a) == set(b) for a, b in zip(approximate.tolist(), exact.tolist(), strict=True)]
    assert all(same), f"{same.count(False)} of 600 rows differ"


def test_auto_is_exact_up_to_the_limit_then_faiss(monkeypatch, caplog, request):
    pytest.importorskip("faiss")
    monkeypatch.setattr(knn, "EXACT_LIMIT", 100)
    assert knn.choose_backend(100) == "exact" and knn.choose_backend(101) == "faiss"
    request.getfixturevalue("no_extras")  # faiss not installed
    with caplog.at_level(logging.WARNING, logger="vtcc"):
        assert knn.choose_backend(101) == "exact"
    assert "pip install 'vtcc[scale]'" in caplog.text
    with pytest.raises(ConfigError, match=r"needs faiss-cpu: pip install 'vtcc\[scale\]'"):
        knn.choose_backend(10, "faiss")


def test_bad_searches_are_one_line():
    features = torch.randn(10, 3)
    with pytest.raises(ConfigError, match="between 1 and the number of images - 1"):
        knn.nearest_neighbors(features, 10)
    with pytest.raises(ConfigError, match="use one of auto, exact, faiss"):
        knn.nearest_neighbors(features, 3, backend="fast")


def test_the_setting_is_checked_before_any_work(tmp_path):
    from tests.conftest import compose_train
    from vtcc.config.validate import validate_config

    overrides = ["model=pretrained", "objective=scan", "features.neighbor_search=fast"]
    cfg = compose_train(tmp_path, overrides, tiny=False, resolve=False)
    with pytest.raises(ConfigError, match="features.neighbor_search") as caught:
        validate_config(cfg)
    assert "\n" not in str(caught.value)
