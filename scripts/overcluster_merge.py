"""Over-clustering, then merging, measured: a run trained at more clusters than kinds
(`num_clusters=2K`), each head merged down to K two ways: by the report's merge candidates
(vtcc.suggestions.merge_clusters: the pair with the highest mean share of nearest neighbours in the
run's instance embedding, again and again) and by Ward's linkage of
the clusters' centroids in that embedding (L2-normalised images), scored next to k-means at K on
the same embedding (labels only score).

Usage: .venv/bin/python scripts/overcluster_merge.py <runs folder or run> [...] --clusters K
           [--json rows.jsonl]
Each run folder holds checkpoints/last.ckpt and its config.yaml names the labelled image folder
(one subfolder a class), as scripts/benchmark_folder_defaults.py leaves them (there with
--extra num_clusters=<2K>). K is the count to merge to, given as a user gives num_clusters.
Per run: the trained K and the clusters the kept head uses, the kept head before the merge (ACC at
its own K and many-to-one ACC), after each merge (ACC / NMI), every head after the neighbour
merge, and k-means at K on the instance embedding.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml
from headroom import refuse, representations, run_folders, unit  # scripts/ is on the path when a script runs
from sklearn.cluster import AgglomerativeClustering, KMeans

from vtcc.data.folder import list_images
from vtcc.inference import Assigner
from vtcc.metrics import clustering_metrics
from vtcc.suggestions import merge_clusters


def centroid_merge(points: np.ndarray, clusters: np.ndarray, target: int) -> np.ndarray:
    """Ward's linkage of the non-empty clusters' centroids down to ``target`` groups; each image's group."""
    ids = np.unique(clusters)
    if len(ids) <= target:
        return np.searchsorted(ids, clusters)
    centroids = np.stack([points[clusters == i].mean(axis=0) for i in ids])
    groups = np.zeros(int(ids.max()) + 1, np.int64)
    groups[ids] = AgglomerativeClustering(target, linkage="ward").fit(centroids).labels_
    return groups[clusters]


def study(run: Path, target: int) -> dict | None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    paths, classes, _ = list_images(Path(config["data"]["root"]))
    if classes is None:
        return None
    labels = np.asarray(classes)
    assigner = Assigner(run / "checkpoints" / "last.ckpt", device="cpu")
    if assigner.num_clusters <= target:
        return None
    _, embedding, heads = representations(assigner, paths)
    seed = int(config.get("seed") or 0)
    kept = int(assigner.network.best_head)
    merged = [merge_clusters(embedding, h, assigner.num_clusters, target, seed) for h in heads]
    before = clustering_metrics(labels, heads[kept])
    after = [clustering_metrics(labels, m) for m in merged]
    points = unit(embedding)  # the images' directions, as the neighbour search sees them
    ward = clustering_metrics(labels, centroid_merge(points, heads[kept], target))
    kmeans = KMeans(target, n_init=10, random_state=seed).fit_predict(points)
    reference = clustering_metrics(labels, kmeans)
    return {
        "run": run.name,
        "data": Path(str(config["data"]["root"])).name,
        "trained_k": assigner.num_clusters,
        "k": target,
        "kept": kept,
        "clusters_before": len(np.unique(heads[kept])),
        "clusters_after": len(np.unique(merged[kept])),
        "acc_before": round(before["acc"], 3),
        "acc_many_to_one_before": round(before["acc_many_to_one"], 3),
        "acc": round(after[kept]["acc"], 3),
        "nmi": round(after[kept]["nmi"], 3),
        "heads_acc": [round(m["acc"], 3) for m in after],
        "ward_acc": round(ward["acc"], 3),
        "ward_nmi": round(ward["nmi"], 3),
        "kmeans_acc": round(reference["acc"], 3),
        "kmeans_nmi": round(reference["nmi"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--clusters", type=int, required=True, help="K to merge to")
    parser.add_argument("--json", type=Path, default=None, help="also write one JSON row a run here")
    args = parser.parse_args()
    if args.clusters < 2:
        refuse(f"overcluster_merge: --clusters {args.clusters}: merge to at least 2 clusters")
    runs = run_folders(args.paths)
    rows = [row for row in (study(run, args.clusters) for run in runs) if row]
    if not rows:
        refuse(
            f"overcluster_merge: no finished run on a labelled folder with more than {args.clusters} "
            "clusters found (train one with num_clusters=<2K>)"
        )
    print(
        f"{'run':28s} {'trained K':>9s} {'used':>4s} {'ACC at K':>8s} {'many-1':>6s} {'neighbours ACC':>14s} {'NMI':>6s} "
        f"{'Ward ACC':>8s} {'NMI':>6s} {'k-means ACC':>11s} {'NMI':>6s}  every head by neighbours"
    )
    for r in rows:
        print(
            f"{r['run']:28s} {r['trained_k']:9d} {r['clusters_before']:4d} {r['acc_before']:8.3f} {r['acc_many_to_one_before']:6.3f} "
            f"{r['acc']:14.3f} {r['nmi']:6.3f} {r['ward_acc']:8.3f} {r['ward_nmi']:6.3f} "
            f"{r['kmeans_acc']:11.3f} {r['kmeans_nmi']:6.3f}  " + " ".join(f"{a:.3f}" for a in r["heads_acc"])
        )
    if args.json:
        args.json.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
