"""Classical baselines on the embedded digits data, for comparison with `make train`.

Usage: .venv/bin/python scripts/digits_baselines.py [--seeds 5] [--no-umap]
(the UMAP row only if umap-learn is installed). Tiny (a test): --seeds 1 --no-umap
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.cluster import KMeans

from vtcc.data import load_digits
from vtcc.metrics import clustering_metrics


def kmeans_metrics(features: np.ndarray, labels: np.ndarray, seeds: range) -> dict[str, float]:
    runs = [
        clustering_metrics(labels, KMeans(10, n_init=10, random_state=s).fit_predict(features)) for s in seeds
    ]
    return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="k-means seeds averaged (0, 1, ...)")
    parser.add_argument("--umap", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    seeds = range(args.seeds)
    arrays = load_digits()
    pixels = arrays.images.flatten(1).float().numpy() / 255.0
    labels = arrays.labels.numpy()
    rows = {f"k-means on raw pixels (mean of {args.seeds} seeds)": kmeans_metrics(pixels, labels, seeds)}
    try:
        import umap
    except ImportError:
        umap = None
        if args.umap:
            print("(umap-learn not installed: pip install umap-learn for the UMAP baseline)")
    if umap is not None and args.umap:
        embedding = umap.UMAP(n_components=10, random_state=0).fit_transform(pixels)
        rows["UMAP + k-means on raw pixels"] = kmeans_metrics(embedding, labels, seeds)
    print(f"{'method':44s} {'ACC':>6s} {'NMI':>6s} {'ARI':>6s}")
    for name, m in rows.items():
        print(f"{name:44s} {m['acc']:6.3f} {m['nmi']:6.3f} {m['ari']:6.3f}")


if __name__ == "__main__":
    main()
