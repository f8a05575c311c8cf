"""The report's cluster grid, drawn as one mosaic: which image lands in which cell."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vtcc.report.figures import GRID_CELL, GRID_GAP, cluster_grid, grid_mosaic


def numbered_images(count: int, channels: int) -> torch.Tensor:
    """uint8 ``(count, C, 4, 6)``: image ``i`` is the constant ``i + 1`` in every pixel (0 is kept
    out of reach, 255 the gap's white)."""
    values = torch.arange(1, count + 1, dtype=torch.uint8)
    return values.view(count, 1, 1, 1).expand(count, channels, 4, 6).clone()


def test_each_row_holds_its_clusters_most_confident_images_in_order():
    clusters = np.array([2, 0, 2, 0, 2, 5, 0, 2])
    confidence = np.array([0.5, 0.9, 0.7, 0.1, 0.95, 0.3, 0.4, 0.2])
    indices = np.arange(10, 18)  # dataset positions of the evaluated images
    images = numbered_images(20, 1)
    read = []

    def images_at(positions: torch.Tensor) -> torch.Tensor:
        read.extend(positions.tolist())
        return images[positions]

    mosaic, labels = grid_mosaic(images_at, indices, clusters, confidence, per_cluster=3)
    assert labels == ["cluster 0 (3)", "cluster 2 (4)", "cluster 5 (1)"]
    height, width = 4, 6
    assert mosaic.shape == (3 * (height + GRID_GAP) - GRID_GAP, 3 * (width + GRID_GAP) - GRID_GAP, 3)
    expected = [  # dataset positions, most confident first; None: an empty (white) cell
        [11, 16, 13],  # cluster 0: confidence 0.9, 0.4, 0.1
        [14, 12, 10],  # cluster 2: 0.95, 0.7, 0.5 (0.2 is the fourth, not shown)
        [15, None, None],  # cluster 5: one image
    ]
    for row, positions in enumerate(expected):
        for column, position in enumerate(positions):
            top, left = row * (height + GRID_GAP), column * (width + GRID_GAP)
            cell = mosaic[top : top + height, left : left + width]
            assert (cell == (255 if position is None else position + 1)).all(), (row, column)
    assert (mosaic[height : height + GRID_GAP] == 255).all()  # the gap between rows
    assert sorted(read) == [10, 11, 12, 13, 14, 15, 16]  # only the images shown are read


def test_colour_images_keep_their_channels_and_the_figure_is_a_png(tmp_path):
    images = numbered_images(4, 3)
    images[:, 0] = 200  # red channel
    clusters, confidence = np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.8, 0.6])
    mosaic, _ = grid_mosaic(lambda p: images[p], np.arange(4), clusters, confidence, per_cluster=2)
    assert (mosaic[:4, :6, 0] == 200).all() and (mosaic[:4, :6, 1] == 4).all()  # cluster 0's best: image 3
    cluster_grid(
        lambda p: images[p], np.arange(4), clusters, confidence, tmp_path / "grid.png", per_cluster=2
    )
    with Image.open(tmp_path / "grid.png") as figure:
        assert figure.format == "PNG" and min(figure.size) > 50


def test_large_images_are_scaled_to_the_cell_and_other_sizes_to_the_first():
    """A thousand clusters of 224 px images must not make a gigabyte mosaic: the first images set
    the cell (at most GRID_CELL px a side, aspect kept); images of another size are resized to it."""
    large = torch.full((2, 3, 2 * GRID_CELL + 8, GRID_CELL + 4), 90, dtype=torch.uint8)  # 200 x 100
    other = torch.full((1, 3, 30, 30), 200, dtype=torch.uint8)

    def images_at(positions: torch.Tensor) -> torch.Tensor:
        return large if len(positions) == 2 else other

    clusters, confidence = np.array([0, 0, 1]), np.array([0.9, 0.8, 0.7])
    mosaic, labels = grid_mosaic(images_at, np.arange(3), clusters, confidence, per_cluster=2)
    height, width = GRID_CELL, round((GRID_CELL + 4) * GRID_CELL / (2 * GRID_CELL + 8))
    assert mosaic.shape == (2 * height + GRID_GAP, 2 * width + GRID_GAP, 3)
    assert (mosaic[:height, :width] == 90).all()  # a constant image stays that constant
    assert (mosaic[height + GRID_GAP :, :width] == 200).all()  # the 30 px image, resized to the cell
    assert labels == ["cluster 0 (2)", "cluster 1 (1)"]


def test_no_images_draw_an_empty_grid(tmp_path):
    mosaic, labels = grid_mosaic(lambda p: None, np.arange(0), np.array([], int), np.array([]))
    assert labels == [] and mosaic.shape == (1, 1, 3)
    cluster_grid(lambda p: None, np.arange(0), np.array([], int), np.array([]), tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0
