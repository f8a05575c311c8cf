"""The report's figures, each drawn into the path it is given (PNG): the most confident images of
each cluster, cluster sizes, the confusion matrix after Hungarian matching, the 2-D map of the
embeddings, the training curves from the run's CSV log and ``num_clusters=auto``'s K criteria."""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from vtcc.io.reader import open_regular, reader
from vtcc.metrics import contingency_table

CURVE_GROUPS = (
    ("loss terms", ("loss",)),
    ("clustering metrics (labels only score)", ("val/acc", "val/nmi", "val/ari")),
)


@reader("run_log")
def read_curves(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """``name -> [(epoch, value)]`` from Lightning's CSV log: epoch-level training losses
    (``train/*loss*`` logged per epoch) and the evaluation metrics."""
    curves: dict[str, list[tuple[int, float]]] = {}
    try:  # a regular file only; a malformed log is skipped and named (the report has no curves)
        with io.TextIOWrapper(open_regular(metrics_csv), newline="") as handle:
            for row in csv.DictReader(handle):
                epoch = row.get("epoch")
                if not epoch:
                    continue
                for name, value in row.items():
                    if not value or not isinstance(name, str) or name in ("epoch", "step"):
                        continue
                    per_step = name.endswith("_step")
                    is_loss = name.startswith("train/") and "loss" in name and not per_step
                    if is_loss or name in ("val/acc", "val/nmi", "val/ari"):
                        curves.setdefault(name.removesuffix("_epoch"), []).append((int(epoch), float(value)))
    except (ValueError, TypeError, csv.Error, OSError) as error:  # UnreadableFile is a ValueError
        logging.getLogger("vtcc").warning(
            "no training curves: %s is not a readable CSV log (%s)", metrics_csv, error
        )
        return {}
    return {name: points for name, points in curves.items() if all(math.isfinite(v) for _, v in points)}


def curves_figure(curves: dict[str, list[tuple[int, float]]], path: Path) -> bool:
    """Loss terms and, when logged, ACC / NMI / ARI per epoch; False when the log has neither."""
    panels = [
        (title, {name: points for name, points in curves.items() if any(key in name for key in keys)})
        for title, keys in CURVE_GROUPS
    ]
    panels = [(title, series) for title, series in panels if series]
    if not panels:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4), squeeze=False)
    for axis, (title, series) in zip(axes[0], panels, strict=True):
        for name, points in sorted(series.items()):
            epochs, values = zip(*points, strict=True)
            axis.plot(epochs, values, marker="." if len(points) < 30 else None, label=name)
        axis.set_xlabel("epoch")
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def k_selection_figure(table: Path, path: Path) -> bool:
    """num_clusters=auto: every criterion against K (scaled to its own range), the chosen K marked;
    False (and a warning naming it) when the table is not readable."""
    try:
        with io.TextIOWrapper(open_regular(table), newline="") as handle:
            rows = list(csv.DictReader(handle))
        criteria = [name for name in rows[0] if name not in ("k", "chosen")]
        ks = [int(row["k"]) for row in rows]
        chosen = [(int(row["k"]), row["chosen"]) for row in rows if row["chosen"]]
        columns = {name: np.array([float(row[name]) for row in rows]) for name in criteria}
    except (ValueError, TypeError, KeyError, IndexError, csv.Error, OSError) as error:
        logging.getLogger("vtcc").warning("no K figure: %s is not a readable K table (%s)", table, error)
        return False
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 3.4))
    for name in criteria:
        values = columns[name]
        span = values.max() - values.min()
        axis.plot(ks, (values - values.min()) / (span if span > 0 else 1), marker=".", label=name)
    for k, criterion in chosen:
        axis.axvline(k, color="black", linestyle="--", linewidth=1)
        axis.text(k, 1.02, f"K={k} ({criterion})", fontsize=8, ha="center")
    axis.set_xlabel("K")
    axis.set_ylabel("score, scaled to [0, 1]")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def matched_confusion(labels: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, list[int], list[int]]:
    """Counts ``(labels, clusters)``, rows and columns reordered so the Hungarian-matched pairs lie on
    the diagonal (first), then the unmatched labels and clusters: also with more classes than clusters."""
    label_values, cluster_values = np.unique(labels), np.unique(clusters)
    table = contingency_table(labels, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    row_order = list(rows) + [r for r in range(table.shape[0]) if r not in set(rows)]
    col_order = list(cols) + [c for c in range(table.shape[1]) if c not in set(cols)]
    return (
        table[np.ix_(row_order, col_order)],
        [int(label_values[r]) for r in row_order],
        [int(cluster_values[c]) for c in col_order],
    )


GRID_GAP = 2  # white pixels between the images of the cluster grid
GRID_CELL = 96  # the grid's images at most this many pixels a side (the figure shows each ~120 px)


def grid_mosaic(
    images_at: Callable[[torch.Tensor], torch.Tensor],
    indices: np.ndarray,
    clusters: np.ndarray,
    confidence: np.ndarray,
    per_cluster: int = 8,
) -> tuple[np.ndarray, list[str]]:
    """One uint8 RGB image, ``(rows * (H + gap) - gap, per_cluster * (W + gap) - gap, 3)``: row ``r``
    holds the ``per_cluster`` most confident images of the ``r``-th non-empty cluster (ascending),
    most confident first, white where a cluster has fewer; and each row's label. ``H x W`` is the
    first images' size, scaled down to :data:`GRID_CELL` px a side where larger (so a thousand
    clusters of 224 px images stay small); images of another size are resized to it.

    ``images_at(dataset_indices)`` returns uint8 ``(n, C, H, W)`` (C 1 or 3); only the images shown
    are read."""
    used = np.unique(clusters)
    if not len(used):
        return np.full((1, 1, 3), 255, np.uint8), []
    cells, labels, size = [], [], None
    for cluster in used:
        members = np.flatnonzero(clusters == cluster)
        best = members[np.argsort(-confidence[members], kind="stable")][:per_cluster]
        shown = torch.as_tensor(images_at(torch.as_tensor(indices[best])))
        if size is None:
            scale = min(1.0, GRID_CELL / max(shown.shape[2:]))
            size = (max(1, round(shown.shape[2] * scale)), max(1, round(shown.shape[3] * scale)))
        if tuple(shown.shape[2:]) != size:
            resized = torch.nn.functional.interpolate(shown.float(), size, mode="bilinear", antialias=True)
            shown = resized.round().clamp(0, 255).to(torch.uint8)
        cells.append(shown.numpy())
        labels.append(f"cluster {cluster} ({len(members)})")
    height, width = size
    mosaic = np.full(
        (len(used) * (height + GRID_GAP) - GRID_GAP, per_cluster * (width + GRID_GAP) - GRID_GAP, 3),
        255,
        np.uint8,
    )
    for row, shown in enumerate(cells):
        for column, image in enumerate(shown):
            top, left = row * (height + GRID_GAP), column * (width + GRID_GAP)
            mosaic[top : top + height, left : left + width] = image.transpose(1, 2, 0)  # gray: broadcast
    return mosaic, labels


def cluster_grid(
    images_at: Callable[[torch.Tensor], torch.Tensor],
    indices: np.ndarray,
    clusters: np.ndarray,
    confidence: np.ndarray,
    path: Path,
    per_cluster: int = 8,
) -> None:
    """:func:`grid_mosaic` drawn as one picture, each row named by its cluster and size (one
    picture, not an axis per image: thousands of images draw in about a second)."""
    plt = _pyplot()
    mosaic, labels = grid_mosaic(images_at, indices, clusters, confidence, per_cluster)
    rows = len(labels)
    figure, axis = plt.subplots(figsize=(per_cluster * 1.1 + 1.4, max(1, rows) * 1.1 + 0.2))
    axis.imshow(mosaic)
    step = mosaic.shape[0] / max(1, rows)
    axis.set_yticks([(row + 0.5) * step - GRID_GAP / 2 for row in range(rows)], labels, fontsize=7)
    axis.set_xticks([])
    axis.tick_params(length=0)
    for side in axis.spines.values():
        side.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def size_histogram(clusters: np.ndarray, num_clusters: int, path: Path) -> None:
    plt = _pyplot()
    sizes = np.bincount(clusters, minlength=num_clusters)
    figure, axis = plt.subplots(figsize=(max(4, num_clusters * 0.35), 3))
    axis.bar(range(num_clusters), sizes, color="#4878a8")
    axis.set_xlabel("cluster")
    axis.set_ylabel("images")
    axis.set_title("cluster sizes")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def confusion_figure(table: np.ndarray, label_names: list[int], cluster_names: list[int], path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(4, len(cluster_names) * 0.45), max(3.5, len(label_names) * 0.4)))
    axis.imshow(table, cmap="Blues")
    axis.set_xticks(range(len(cluster_names)), cluster_names, fontsize=7)
    axis.set_yticks(range(len(label_names)), label_names, fontsize=7)
    axis.set_xlabel("cluster (Hungarian-matched order)")
    axis.set_ylabel("label")
    if table.size <= 900:
        for (i, j), count in np.ndenumerate(table):
            if count:
                axis.text(j, i, int(count), ha="center", va="center", fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def embedding_figure(
    points: np.ndarray, clusters: np.ndarray, labels: np.ndarray | None, method: str, path: Path
) -> None:
    """The 2-D map ``points`` ``(n, 2)`` coloured by cluster and, with labels, by label."""
    plt = _pyplot()
    panels = [("by cluster", clusters)] + ([("by label", labels)] if labels is not None else [])
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
    for axis, (title, colours) in zip(axes[0], panels, strict=True):
        axis.scatter(points[:, 0], points[:, 1], c=colours, s=4, cmap="tab20")
        axis.set_title(f"{method} of the embeddings, {title}", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
