"""The classical baselines every own-folder figure is printed next to: k-means on raw pixels, and
UMAP + k-means on raw pixels (UMAP's documented clustering settings: 30 neighbours, min_dist 0,
a low-dimensional embedding), each for one seed. ``umap-learn`` is the ``bench`` extra.

Usage: .venv/bin/python scripts/baselines.py <folder> [<folder> ...] [--seeds 0 1 2]
           [--methods kmeans umap_kmeans]
Tiny (a test): <a small folder> --seeds 0 --methods kmeans
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from folders import read_folder  # scripts/ is on the path when a script runs
from sklearn.cluster import KMeans

from vtcc.metrics import clustering_metrics


def kmeans_pixels(pixels: np.ndarray, k: int, seed: int) -> np.ndarray:
    return KMeans(k, n_init=10, random_state=seed).fit_predict(pixels)


def umap_kmeans_pixels(pixels: np.ndarray, k: int, seed: int, dims: int = 10) -> np.ndarray:
    try:
        import umap
    except ImportError as error:
        raise SystemExit("UMAP + k-means needs umap-learn: pip install -e '.[bench]'") from error
    embedding = umap.UMAP(n_neighbors=30, min_dist=0.0, n_components=dims, random_state=seed).fit_transform(
        pixels
    )
    return KMeans(k, n_init=10, random_state=seed).fit_predict(embedding)


BASELINES = {"kmeans": kmeans_pixels, "umap_kmeans": umap_kmeans_pixels}


def score(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    metrics = clustering_metrics(labels, clusters)
    return {key: round(float(metrics[key]), 3) for key in ("acc", "nmi", "ari")}


def run_baselines(root: Path, seeds: list[int], methods: list[str] | None = None) -> list[dict]:
    pixels, labels = read_folder(root)
    k = len(np.unique(labels))
    rows = []
    for name in methods or list(BASELINES):
        method = BASELINES[name]
        for seed in seeds:
            start = time.perf_counter()
            clusters = method(pixels, k, seed)
            rows.append(
                {
                    "folder": root.name,
                    "method": name,
                    "seed": seed,
                    "seconds": round(time.perf_counter() - start, 1),
                    **score(labels, clusters),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(BASELINES), default=list(BASELINES))
    args = parser.parse_args()
    for root in args.folders:
        for row in run_baselines(root, args.seeds, args.methods):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
