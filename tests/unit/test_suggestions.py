"""The label-free suggestions on an embedding whose groups the test knows."""

from __future__ import annotations

import numpy as np
import pytest

from vtcc.suggestions import merge_clusters, neighbour_shares, similar_pairs, suggest, suggestions_section


def three_groups(per_group: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three tight, far-apart groups A, B, C in 8 dimensions, clustered wrongly on purpose:
    cluster 0 holds A and B (mixed), clusters 1 and 2 cut C in halves (alike), cluster 3 is empty."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:3] * 10
    embeddings = np.concatenate([centre + rng.normal(size=(per_group, 8)) for centre in centres])
    clusters = np.zeros(3 * per_group, np.int64)
    clusters[2 * per_group :] = 1
    clusters[2 * per_group :: 2] = 2
    return embeddings.astype(np.float32), clusters


def test_shares_count_each_clusters_neighbours_in_every_cluster():
    embeddings, clusters = three_groups()
    shares = neighbour_shares(embeddings, clusters, 4, k=10)
    assert np.allclose(shares[:3].sum(axis=1), 1) and shares[3].sum() == 0  # an empty cluster: no row
    assert shares[0, 0] == 1  # A and B are far from C: their neighbours are all in cluster 0
    assert 0.3 < shares[1, 2] < 0.7 and 0.3 < shares[2, 1] < 0.7  # C's halves are interleaved


def test_the_halves_of_one_group_are_the_top_pair_and_the_two_groups_the_mixed_cluster():
    embeddings, clusters = three_groups()
    found = suggest(embeddings, clusters, 4)
    assert found.pairs[0][:2] == (1, 2) and found.pairs[0][2] > 0.3
    assert all(score < 0.05 for a, b, score in found.pairs if 0 in (a, b))
    assert found.mixed[0][0] == 0 and found.mixed[0][1] > 0.7  # A + B: two separate groups
    assert sorted(found.mixed[0][2]) == [200, 200]  # split exactly into A and B
    assert all(score < 0.5 for cluster, score, _ in found.mixed if cluster != 0)
    part = found.parts[2][clusters == 0]
    assert set(part[:200].tolist()) != set(part[200:].tolist())  # the parts are A and B
    assert found.centroids[2][0].shape == (2, 8) and found.centroids[3][1].shape == (3, 8)
    section = suggestions_section(found)
    assert 'data-merge="1,2"' in section and 'data-split="0"' in section


def test_no_pair_of_clusters_that_share_no_neighbour_is_listed():
    shares = np.eye(3)
    assert similar_pairs(shares) == []


def test_merging_joins_the_halves_of_one_group_and_keeps_separate_groups_apart():
    """Four far-apart groups, each cut in two clusters (ids interleaved) plus an empty cluster:
    merged to four, every group is one cluster again and no cluster holds two groups."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(4), 100)
    embeddings = (np.eye(8)[groups] * 10 + rng.normal(size=(400, 8))).astype(np.float32)
    clusters = groups * 2 + np.tile([0, 1], 200)  # group g: clusters 2g and 2g + 1, interleaved
    merged = merge_clusters(embeddings, clusters, 9, target=4)  # cluster 8 is empty
    assert sorted(np.unique(merged).tolist()) == [0, 1, 2, 3]
    assert (merged == groups).all()  # numbered by the smallest old id: group g is cluster g


def test_merging_stops_at_the_target_and_only_renumbers_below_it():
    embeddings, clusters = three_groups()  # clusters 0, 1, 2 hold images; 3 is empty
    merged = merge_clusters(embeddings, clusters, 4, target=2)
    assert (merged[clusters == 1] == merged[clusters == 2]).all()  # C's halves: the top pair
    assert merged[0] != merged[-1] and len(np.unique(merged)) == 2
    renumbered = merge_clusters(embeddings, clusters * 2, 8, target=5)  # 3 clusters: ids 0, 2, 4
    assert (renumbered == clusters).all()


def test_a_merged_cluster_is_scored_by_its_summed_neighbour_counts(monkeypatch):
    """Hand-made counts: 0 and 1 merge first (share 0.48); then cluster 2, whose neighbours are
    15 % in 0 and 15 % in 1, scores 0.16 with the merged cluster against 0.10 with 3, so it joins
    0 and 1. Shares not recounted after the first merge (0.085 with 0) would pair 2 with 3."""
    counts = np.array([[50, 48, 2, 0], [48, 50, 2, 0], [15, 15, 60, 10], [0, 0, 10, 90]], float)
    monkeypatch.setattr("vtcc.suggestions.neighbour_counts", lambda *args, **kwargs: counts.copy())
    embeddings = np.eye(4, dtype=np.float32)  # one image a cluster; the counts above decide
    assert merge_clusters(embeddings, np.arange(4), 4, target=2).tolist() == [0, 0, 0, 1]


def test_clusters_that_share_no_neighbour_merge_by_their_mean_direction():
    """Three tight groups, far enough apart that no image's neighbours cross (every share 0): A
    and B point 45 degrees apart, C at right angles to both, so A and B merge, whatever their ids
    (A is cluster 0, C cluster 1, B cluster 2: by id alone, A would join C)."""
    rng = np.random.default_rng(0)
    directions = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0.5**0.5, 0.5**0.5, 0, 0]]) * 10
    embeddings = np.concatenate([d + 0.05 * rng.normal(size=(50, 4)) for d in directions]).astype(np.float32)
    clusters = np.repeat([0, 1, 2], 50)
    merged = merge_clusters(embeddings, clusters, 3, target=2)
    assert (merged == np.repeat([0, 1, 0], 50)).all()
    with pytest.raises(ValueError, match="target=0"):
        merge_clusters(embeddings, clusters, 3, target=0)
