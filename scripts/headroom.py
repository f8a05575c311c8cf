"""How much a stage that only re-partitions a finished run's representation could add: each cluster
head's ACC / NMI beside k-means (K clusters, 10 restarts) on the backbone's features and on the
instance embedding, all of the run's images under its evaluation view (labels only score).

Usage: .venv/bin/python scripts/headroom.py <run folder> <labelled image folder> [...pairs]
A head near the better k-means row means the representation, not the head, is the limit: SCAN's
clustering step or self-labelling on that backbone has little to gain (docs/own-folder.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from sklearn.cluster import KMeans

from vtcc.data.folder import list_images
from vtcc.inference import Assigner
from vtcc.metrics import clustering_metrics


@torch.no_grad()
def representations(assigner: Assigner, paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backbone features ``(N, D)``, instance embeddings ``(N, E)`` and each head's clusters ``(H, N)``."""
    network = assigner.network
    features, embeddings, clusters = [], [], []
    for batch in assigner.decoded(paths, 256):
        inputs = assigner.transform(
            batch.to(assigner.device).expand(-1, len(assigner.run_cfg.data.mean), -1, -1)
        )
        f = network.features(inputs)
        features.append(f.float().cpu())
        embeddings.append(network.embed(f).float().cpu())
        clusters.append(torch.stack([head(f).argmax(1) for head in network.cluster_heads]).cpu())
    return torch.cat(features).numpy(), torch.cat(embeddings).numpy(), torch.cat(clusters, 1).numpy()


def refuse(message: str) -> NoReturn:
    """A user mistake (a flat folder, no run to read, a bad option): one line on stderr, exit 2."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def run_folders(paths: list[Path]) -> list[Path]:
    """Each path that is a run folder (it holds config.yaml), and the run folders below each other path."""
    runs = []
    for path in paths:
        runs += (
            [path]
            if (path / "config.yaml").is_file()
            else sorted(p.parent for p in path.rglob("config.yaml"))
        )
    return runs


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def score(labels: np.ndarray, assignment: np.ndarray) -> str:
    m = clustering_metrics(labels, assignment)
    return f"{m['acc']:.3f} / {m['nmi']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", type=Path, help="<run folder> <image folder>, repeated")
    args = parser.parse_args()
    if len(args.pairs) % 2:
        refuse("headroom: give pairs of <run folder> <labelled image folder>")
    for run, folder in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        paths, classes, _ = list_images(folder)  # the images as training lists them
        if classes is None:
            refuse(f"headroom: {folder} is a flat folder: give one subfolder per class (labels only score)")
        labels = np.asarray(classes)
        assigner = Assigner(run / "checkpoints" / "last.ckpt", device="cpu")
        features, embeddings, clusters = representations(assigner, paths)
        k = assigner.num_clusters

        print(f"{run.name} ({len(paths)} images, K = {k}), ACC / NMI:")
        for head, assignment in enumerate(clusters):
            kept = " (kept)" if head == int(assigner.network.best_head) else ""
            print(f"  head {head}{kept}: {score(labels, assignment)}")
        for name, rows in (("backbone features", features), ("instance embedding", embeddings)):
            kmeans = KMeans(k, n_init=10, random_state=0).fit_predict(unit(rows))
            print(f"  k-means on the {name} ({rows.shape[1]} dims, L2-normalised): {score(labels, kmeans)}")


if __name__ == "__main__":
    main()
