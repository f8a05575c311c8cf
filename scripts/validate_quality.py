"""How well the label-free ``structure`` score ranks runs by their ACC and NMI (labels only score).

Reads every run folder given (or found below a folder): its ``final_metrics.json`` (or an eval's
``metrics.json``) and ``report/quality.json``; prints each run's ACC, NMI, structure and the
pixels' structure, then Spearman's rank correlation of each score with ACC and with NMI over all
runs and within each folder of images (the data each run names in its ``config.yaml``).

``--rescore`` also scores each run on a labelled folder by other label-free candidates, from its
checkpoint on its images under the evaluation view (the kept head's clusters, on the sample of at
most 4,000 images that ``structure`` uses): ``structure_nmi`` (structure with NMI in place of ARI),
``neighbours`` (the share of each image's 10 nearest neighbours, cosine on the embedding, in its
cluster, as SCAN mines them), ``generalization`` (TURTLE's linear-probe score, 5 folds) and
``heads`` (the mean ARI between the run's cluster heads, on all its images).

Usage: .venv/bin/python scripts/validate_quality.py <runs folder or run> [...] [--rescore]
"""

from __future__ import annotations

import argparse
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import spearmanr

CANDIDATES = ("structure_nmi", "neighbours", "generalization", "heads")


def read_run(run: Path) -> dict | None:
    quality = run / "report" / "quality.json"
    metrics = next(
        (run / name for name in ("final_metrics.json", "metrics.json") if (run / name).is_file()), None
    )
    if not quality.is_file() or metrics is None:
        return None
    scores = json.loads(metrics.read_text())
    if "acc" not in scores:  # unlabelled data: nothing to validate against
        return None
    config = run / "config.yaml"
    if not config.is_file() and scores.get("ckpt_path"):  # a vtcc-eval folder: its run's config
        config = Path(scores["ckpt_path"]).resolve().parents[1] / "config.yaml"
    root = None
    if config.is_file():
        root = (yaml.safe_load(config.read_text()).get("data") or {}).get("root")
    q = json.loads(quality.read_text())
    return {
        "path": str(run),
        "root": str(root) if root else None,
        "run": run.name,
        "data": Path(str(root)).name if root else "?",
        "acc": scores["acc"],
        "nmi": scores["nmi"],
        "structure": q["structure"],
        "stability": q.get("stability"),
        "pixel_stability": q.get("pixel_stability"),
    }


def rescore(row: dict) -> dict | None:
    """The candidates of the module's docstring for one run on a labelled folder (else None)."""
    from headroom import representations, unit  # scripts/ is on the path when a script runs
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.neighbors import NearestNeighbors

    from vtcc.data.folder import list_images
    from vtcc.inference import Assigner
    from vtcc.quality import generalization_score, resampled_fits, sample_index

    root = Path(row["root"]) if row["root"] else None
    checkpoint = Path(row["path"]) / "checkpoints" / "last.ckpt"
    if root is None or not root.is_dir() or not checkpoint.is_file():
        return None
    paths, classes, _ = list_images(root)
    if classes is None:
        return None
    assigner = Assigner(checkpoint, device="cpu")
    _, embeddings, heads = representations(assigner, paths)
    index = sample_index(len(paths), 0)
    points, clusters = embeddings[index].astype(np.float32), heads[int(assigner.network.best_head)][index]
    fits = resampled_fits(points, assigner.num_clusters, 0)
    rows = unit(points)
    neighbours = NearestNeighbors(n_neighbors=11).fit(rows).kneighbors(rows, return_distance=False)[:, 1:]
    pairs = list(combinations(range(len(heads)), 2))
    return {
        "structure_nmi": float(np.mean([normalized_mutual_info_score(clusters, f) for f in fits])),
        "neighbours": float(np.mean(clusters[neighbours] == clusters[:, None])),
        "generalization": generalization_score([points], clusters, folds=5, max_iter=200),
        "heads": float(np.mean([adjusted_rand_score(heads[a], heads[b]) for a, b in pairs]))
        if pairs
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--rescore", action="store_true", help="also score the candidates (see above)")
    args = parser.parse_args()
    runs = []
    for path in args.paths:
        candidates = (
            [path]
            if (path / "report").is_dir()
            else sorted(p for p in path.rglob("*") if (p / "report").is_dir())
        )
        runs += [row for row in map(read_run, candidates) if row]
    scores = ["structure", "stability"]
    if args.rescore:
        runs = [{**row, **extra} for row in runs if (extra := rescore(row))]
        scores += CANDIDATES
    for row in runs:
        print(json.dumps({k: v for k, v in row.items() if k not in ("path", "root")}))
    groups = [("all runs", runs)] + [
        (data, [r for r in runs if r["data"] == data]) for data in sorted({r["data"] for r in runs})
    ]
    for name, rows in groups:
        if len(rows) < 3:
            continue
        for score in scores:
            values = [r[score] for r in rows]
            if None not in values:
                rho = [spearmanr(values, [r[m] for r in rows]).statistic for m in ("acc", "nmi")]
                print(f"{name} ({len(rows)} runs): Spearman({score}, ACC) = {rho[0]:.3f}, NMI {rho[1]:.3f}")


if __name__ == "__main__":
    main()
