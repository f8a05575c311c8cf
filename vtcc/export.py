"""Results to take away: ``clusters.csv``, the embeddings with their paths, Parquet, the 2-D map.

Formats (each row ``i`` is the ``i``-th image, in one order for every file):

- ``clusters.csv``: ``path,cluster,confidence`` (confidence: the largest cluster probability).
- ``embeddings.npy``: float32 ``(N, D)``, the run's embeddings; ``paths.txt``: one path a line.
- ``clusters.parquet`` (``pyarrow``): ``path`` (string), ``cluster`` (int32), ``confidence``
  (float32), ``map_x``, ``map_y`` (float32, the 2-D map of :func:`map_2d`), with the map's method in
  the file's metadata (``vtcc.map_method``).
- with a curation (``curation=``, :mod:`vtcc.curation`), both tables also have ``name`` (the
  cluster's name, empty where unnamed), ``outlier`` (true: set aside by the person) and
  ``model_cluster`` (the run's own cluster, before the curation).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vtcc.errors import ConfigError
from vtcc.io.writer import Writer
from vtcc.utils.extras import optional_module

log = logging.getLogger("vtcc")

# openTSNE's schedule, 250 exaggerated steps then 500 (scikit-learn's default is 1,000 in all): on
# scikit-learn's 1,797 digits the map's trustworthiness (10 neighbours) is 0.9927 at 750 and at 1,000
# steps, in three quarters of the time (4.8 s against 6.4 s on one core)
TSNE_STEPS = 750
TSNE_LIMIT = 10_000  # beyond it, without umap-learn, the map is PCA (t-SNE's time grows as N log N)


def _umap():
    return optional_module("umap", "pip install umap-learn (or remove the umap folder left behind)")


def _pyarrow():
    return optional_module("pyarrow", "pip install 'vtcc[export]' (or pyarrow)")


def require_parquet() -> None:
    if _pyarrow() is None:
        raise ConfigError(
            "parquet=true needs pyarrow: pip install 'vtcc[export]' (or pyarrow), or drop parquet"
        )


def map_method(count: int) -> str:
    """The 2-D map vtcc draws for ``count`` points: UMAP when umap-learn is installed, else t-SNE up
    to :data:`TSNE_LIMIT` points, else PCA."""
    if _umap() is not None:
        return "UMAP"
    return "t-SNE" if count <= TSNE_LIMIT else "PCA"


def map_2d(embeddings: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """Float32 ``(N, 2)`` coordinates of ``(N, D)`` embeddings, and the method's name."""
    points = np.asarray(embeddings, dtype=np.float32)
    method = map_method(len(points))
    if len(points) < 5 or points.shape[1] <= 2:
        padded = np.zeros((len(points), 2), np.float32)
        padded[:, : min(2, points.shape[1])] = points[:, :2]
        return padded, "the embeddings themselves"
    if method == "UMAP":
        neighbours = min(15, len(points) - 1)
        coordinates = _umap().UMAP(n_neighbors=neighbours, random_state=seed).fit_transform(points)
    elif method == "t-SNE":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(points) - 1) // 3)))
        coordinates = TSNE(
            2, perplexity=perplexity, init="pca", max_iter=TSNE_STEPS, random_state=seed
        ).fit_transform(points)
    else:
        from sklearn.decomposition import PCA

        coordinates = PCA(2, random_state=seed).fit_transform(points)
    return np.asarray(coordinates, dtype=np.float32), method


def write_assignments(
    output: Path,
    paths: Sequence[str],
    assigned,
    embeddings: bool = False,
    parquet: bool = False,
    seed: int = 0,
    writer: Writer | None = None,
) -> None:
    """``clusters.csv`` always; ``embeddings.npy`` + ``paths.txt`` and ``clusters.parquet`` when asked
    (``assigned``: :class:`vtcc.inference.Assignments`), through ``writer`` (default: one over
    ``output``)."""
    writer = writer or Writer(output)
    clusters, confidence = assigned.clusters, assigned.confidence
    extra = assigned.columns() if hasattr(assigned, "columns") else {}  # a curation's (vtcc.curation)
    with writer.open(output / "clusters.csv", "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(["path", "cluster", "confidence", *extra])
        rows = zip(paths, clusters.tolist(), confidence.tolist(), *extra.values(), strict=True)
        for path, cluster, value, *more in rows:
            table.writerow([path, cluster, f"{value:.6f}", *more])
    if embeddings:
        writer.save_array(output / "embeddings.npy", assigned.embeddings.astype(np.float32))
        writer.write_text(output / "paths.txt", "".join(f"{path}\n" for path in paths))
    if parquet:
        write_parquet(
            output / "clusters.parquet", paths, clusters, confidence, assigned.embeddings, seed, writer, extra
        )


def write_parquet(
    path: Path,
    paths: Sequence[str],
    clusters: np.ndarray,
    confidence: np.ndarray,
    embeddings: np.ndarray,
    seed: int = 0,
    writer: Writer | None = None,
    extra: dict[str, list] | None = None,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    coordinates, method = map_2d(embeddings, seed)
    table = pa.table(
        {
            "path": pa.array([str(p) for p in paths], pa.string()),
            "cluster": pa.array(np.asarray(clusters, dtype=np.int32)),
            "confidence": pa.array(np.asarray(confidence, dtype=np.float32)),
            "map_x": pa.array(coordinates[:, 0]),
            "map_y": pa.array(coordinates[:, 1]),
            **{name: pa.array(values) for name, values in (extra or {}).items()},
        }
    ).replace_schema_metadata({"vtcc.map_method": method})
    with (writer or Writer(path.parent)).temporary(path) as temporary:
        pq.write_table(table, temporary)
    log.info("clusters.parquet written with a %s map", method)
