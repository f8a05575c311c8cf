"""Classical baselines on the embedded digits data, for comparison with `make train`.

Usage: .venv/bin/python scripts/digits_baselines.py   (UMAP row only if umap-learn is installed)
"""

from __future__ import annotations

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
    arrays = load_digits()
    pixels = arrays.images.flatten(1).float().numpy() / 255.0
    labels = arrays.labels.numpy()
    rows = {"k-means on raw pixels": kmeans_metrics(pixels, labels, range(5))}
    try:
        import umap

        embedding = umap.UMAP(n_components=10, random_state=0).fit_transform(pixels)
        rows["UMAP + k-means on raw pixels"] = kmeans_metrics(embedding, labels, range(5))
    except ImportError:
        print("(umap-learn not installed: pip install umap-learn for the UMAP baseline)")
    print(f"{'method':32s} {'ACC':>6s} {'NMI':>6s} {'ARI':>6s}")
    for name, m in rows.items():
        print(f"{name:32s} {m['acc']:6.3f} {m['nmi']:6.3f} {m['ari']:6.3f}")


if __name__ == "__main__":
    main()
