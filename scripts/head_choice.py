"""Which cluster head a label-free rule keeps, and what that head's ACC is: the rules side by side
over finished runs of several heads (labels only score the choice; no rule reads them).

Rules, each a score a head (the highest kept):
  structure   mean ARI of the head's clusters against k-means fits on random halves of the run's
              instance embedding (vtcc.quality.head_structures: what training keeps today)
  consensus   mean ARI of the head's clusters against every other head's: the median partition of
              the heads (Strehl & Ghosh 2002, *Cluster ensembles*, with ARI for NMI)
  both        mean ARI against the k-means fits and the other heads together
  loss        the lowest training loss of the last epoch (the rule before structure), as the run's
              logs/metrics.csv records it (train/best_head)

Usage: .venv/bin/python scripts/head_choice.py <runs folder or run> [...] [--json rows.jsonl]
Each run folder holds checkpoints/last.ckpt and its config.yaml names the labelled image folder
(one subfolder a class), as scripts/benchmark_folder_defaults.py leaves them.
"""

from __future__ import annotations

import argparse
import csv
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import yaml
from headroom import refuse, representations, run_folders  # scripts/ is on the path when a script runs
from sklearn.metrics import adjusted_rand_score

from vtcc.data.folder import list_images
from vtcc.inference import Assigner
from vtcc.metrics import clustering_metrics
from vtcc.quality import head_fit_agreements, sample_index

RULES = ("structure", "consensus", "both", "loss")


def rule_scores(embedding: np.ndarray, heads: np.ndarray, k: int, seed: int) -> dict[str, list[float]]:
    """Every rule's score of every head, on the sample of images the training's choice uses."""
    against_fits = head_fit_agreements(embedding, heads, k, seed)
    index = sample_index(len(embedding), seed)  # the sample those agreements are on
    clusters = [np.asarray(c)[index] for c in heads]
    pair = np.eye(len(clusters))
    for a, b in combinations(range(len(clusters)), 2):
        pair[a, b] = pair[b, a] = adjusted_rand_score(clusters[a], clusters[b])
    others = [[pair[h, g] for g in range(len(clusters)) if g != h] for h in range(len(clusters))]
    return {
        "structure": [float(np.mean(row)) for row in against_fits],
        "consensus": [float(np.mean(row)) for row in others],
        "both": [float(np.mean(f + o)) for f, o in zip(against_fits, others, strict=True)],
    }


def loss_choice(run: Path) -> int | None:
    """The head the training losses chose after the last epoch (logs/metrics.csv), if logged."""
    table = run / "logs" / "metrics.csv"
    if not table.is_file():
        return None
    with open(table, newline="") as rows:
        chosen = [row["train/best_head"] for row in csv.DictReader(rows) if row.get("train/best_head")]
    return int(float(chosen[-1])) if chosen else None


def study(run: Path) -> dict | None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    if config["module"].get("num_cluster_heads", 1) < 2:
        return None
    paths, classes, _ = list_images(Path(config["data"]["root"]))
    if classes is None:
        return None
    labels = np.asarray(classes)
    assigner = Assigner(run / "checkpoints" / "last.ckpt", device="cpu")
    _, embedding, heads = representations(assigner, paths)
    k = assigner.num_clusters
    metrics = [clustering_metrics(labels, c) for c in heads]
    accuracy = [round(m["acc"], 3) for m in metrics]
    nmi = [round(m["nmi"], 3) for m in metrics]
    scores = rule_scores(embedding, heads, k, int(config.get("seed") or 0))
    picks = {rule: int(np.argmax(values)) for rule, values in scores.items()}
    loss = loss_choice(run)
    if loss is not None:
        picks["loss"] = loss
    return {
        "run": run.name,
        "data": Path(str(config["data"]["root"])).name,
        "head_acc": accuracy,
        "head_nmi": nmi,
        "kept": int(assigner.network.best_head),
        "scores": {rule: [round(v, 3) for v in values] for rule, values in scores.items()},
        "picks": picks,
        **{f"acc_{rule}": accuracy[head] for rule, head in picks.items()},
    }


def rule_means(rows: list[dict]) -> str:
    """The mean ACC of the head each rule kept, over ``rows`` (a rule without a pick is left out)."""
    return " ".join(
        f"{np.mean([r[f'acc_{rule}'] for r in rows if f'acc_{rule}' in r]):9.3f}" for rule in RULES
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, default=None, help="also write one JSON row a run here")
    args = parser.parse_args()
    runs = run_folders(args.paths)
    rows = [row for row in map(study, runs) if row]
    if not rows:
        refuse("head_choice: no finished run of several heads on labelled folders found")
    print(f"{'run':28s} {'heads ACC':>36s}  " + " ".join(f"{r:>9s}" for r in RULES))
    for row in rows:
        heads = " ".join(f"{a:.3f}" for a in row["head_acc"])
        picked = " ".join(f"{row.get(f'acc_{r}', float('nan')):9.3f}" for r in RULES)
        print(f"{row['run']:28s} {heads:>36s}  {picked}")
    print(f"\n{'mean ACC of the head kept':28s} {'':>36s}  {rule_means(rows)}")
    for data in sorted({r["data"] for r in rows}):
        group = [r for r in rows if r["data"] == data]
        print(f"  {data + ' (' + str(len(group)) + ' runs)':26s} {'':>36s}  {rule_means(group)}")
    best = np.mean([max(r["head_acc"]) for r in rows])
    worst = np.mean([min(r["head_acc"]) for r in rows])
    print(f"best head {best:.3f}, worst head {worst:.3f} (mean over runs; labels only score)")
    if args.json:
        args.json.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
