"""The label-free quality figures (vtcc/quality.py) against first principles, and every run's report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import compose_train
from vtcc.quality import balance, label_free_quality, pixel_stability, structure_score
from vtcc.train import train


def blobs(k: int = 4, per: int = 150, spread: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` tight, far-apart Gaussian blobs in 16-D and which blob each point is from."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, 16)) * 3
    truth = np.repeat(np.arange(k), per)
    return centres[truth] + spread * rng.normal(size=(len(truth), 16)), truth


def test_the_structure_score_ranks_a_good_clustering_above_a_shuffled_and_a_collapsed_one():
    points, truth = blobs()
    good, _ = structure_score(points, truth, 4)
    shuffled, _ = structure_score(points, np.random.default_rng(1).permutation(truth), 4)
    collapsed, _ = structure_score(points, np.zeros_like(truth), 4)
    assert good > 0.95  # separated blobs: every half's k-means finds them again
    assert abs(shuffled) < 0.05  # ARI's expectation under random labels is 0
    assert collapsed == 0.0  # ARI of one cluster against any partition is exactly 0
    assert good > shuffled and good > collapsed


def test_stability_tells_an_embedding_with_clusters_from_one_without():
    points, _ = blobs()
    noise = np.random.default_rng(2).normal(size=points.shape)  # no cluster structure at all
    _, clustered = structure_score(points, np.zeros(len(points), int), 4)
    _, unstructured = structure_score(noise, np.zeros(len(noise), int), 4)
    assert clustered > 0.95 and unstructured < clustered - 0.3


def test_balance_is_the_normalised_entropy_of_the_sizes():
    assert balance(np.repeat(np.arange(5), 10), 5) == pytest.approx(1.0)
    assert balance(np.zeros(50, int), 5) == 0.0
    sizes = np.array([30, 10])  # entropy of (3/4, 1/4) over log 2
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert balance(np.repeat([0, 1], sizes), 2) == pytest.approx(expected)


def test_the_pixel_baseline_sees_structure_in_two_kinds_of_images_and_none_in_noise():
    rng = np.random.default_rng(0)
    kinds = np.repeat([0, 1], 100)
    images = rng.integers(0, 40, (200, 1, 48, 48)) + 180 * kinds[:, None, None, None]  # > 32 px: pooled
    noise = rng.integers(0, 256, (200, 1, 48, 48))
    assert pixel_stability(images.astype(np.uint8), 2) > 0.95
    assert pixel_stability(noise.astype(np.uint8), 2) < 0.5


def test_label_free_quality_reads_no_label_and_compares_with_the_pixels():
    points, truth = blobs(k=2, per=100)
    noise = np.random.default_rng(0).integers(0, 256, (200, 1, 8, 8))  # pixels with no clusters
    quality = label_free_quality(
        points, truth, 2, confidence=np.full(200, 0.9), pixels_at=lambda positions: noise[positions]
    )
    assert quality.structure > 0.95 and quality.balance == pytest.approx(1.0)
    assert quality.confidence == pytest.approx(0.9) and quality.clusters_used == 2
    assert quality.pixel_stability < quality.stability
    assert "holds more cluster structure than the pixels" in quality.line()


def test_too_few_images_for_k_clusters_give_no_resampled_figures_and_no_error():
    points, truth = blobs(k=4, per=3)  # 12 images: halves of 6 for 4 clusters
    quality = label_free_quality(points, truth, 4, pixels_at=lambda positions: points[positions])
    assert quality.structure is None and quality.stability is None and quality.pixel_stability is None
    assert quality.balance == pytest.approx(1.0) and "too few images" in quality.line()


def test_every_training_run_ends_with_its_report_and_quality_line(tmp_path, caplog):
    cfg = compose_train(tmp_path / "run", ["trainer.max_epochs=1", "report=true"])
    with caplog.at_level("INFO", logger="vtcc"):
        train(cfg)
    report = tmp_path / "run/report"
    page = (report / "report.html").read_text()
    assert 'id="quality"' in page and "raw pixels" in page
    assert "Training stopped after 1 epoch because its epochs were done" in page  # and why it ended
    quality = json.loads((report / "quality.json").read_text())
    assert set(quality) >= {"structure", "pixel_stability", "stability", "balance", "confidence"}
    assert "label-free quality: structure" in caplog.text
    assert "training stopped after 1 epoch because its epochs were done" in caplog.text
    assert -1.0 <= quality["structure"] <= 1.0 and 0.0 <= quality["balance"] <= 1.0
    assert quality["images"] == 1797  # digits: every image (under the 4,000 sample)


def test_report_false_writes_none(tmp_path):
    train(compose_train(tmp_path / "run", ["trainer.max_epochs=1", "report=false"]))
    assert not (tmp_path / "run/report").exists()
    assert torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["epoch"] == 0
