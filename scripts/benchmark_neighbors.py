"""Neighbour mining at scale: time and peak memory of vtcc.knn's exact search and FAISS's HNSW.

Usage: .venv/bin/python scripts/benchmark_neighbors.py [--sizes 100000 1000000] [--dim 384] [--k 20]
           [--exact-up-to 100000]
Tiny (a test): --sizes 300 --dim 8 --k 5 --exact-up-to 300
Synthetic features: 1,000 Gaussian clusters in ``--dim`` dimensions (float32). Each (size, search)
runs in a fresh process, so its peak resident memory (ru_maxrss) is its own; the features
themselves are counted in it (``before``: the process with its features, before the search). The exact search runs up to ``--exact-up-to`` images (it is N^2);
at the sizes where both run, FAISS's recall@k against the exact neighbours is printed. Then the
measured times are extrapolated to 10M and 100M images: exact as N^2, HNSW as N log N, memory as
N x (4 dim + 8 M) bytes for HNSW's vectors and links (vtcc.knn.HNSW_LINKS = M).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SCRATCH = Path(tempfile.gettempdir())  # the exact neighbours, for the recall of the next search


def features(count: int, dim: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim), dtype=np.float32)
    points = centres[rng.integers(0, 1000, count)]
    points += 0.7 * rng.standard_normal((count, dim), dtype=np.float32)
    return torch.from_numpy(points)


def one(count: int, dim: int, k: int, backend: str, truth: str | None) -> None:
    """In a child process: one search, its seconds and peak memory as a JSON line."""
    from vtcc.knn import nearest_neighbors

    torch.set_num_threads(torch.get_num_threads())
    data = features(count, dim)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (Linux: KiB)
    start = time.perf_counter()
    found = nearest_neighbors(data, k, backend=backend)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    row = {"size": count, "search": backend, "seconds": seconds, "peak_gib": peak, "data_gib": before}
    if truth:
        exact = np.load(truth)
        row["recall"] = float(
            np.mean([len(set(a) & set(b)) / k for a, b in zip(found.numpy(), exact, strict=True)])
        )
    else:
        np.save(SCRATCH / f"knn_exact_{count}.npy", found.numpy())
    print(json.dumps(row), flush=True)


def run(count: int, dim: int, k: int, backend: str, truth: Path | None) -> dict:
    command = [sys.executable, __file__, "--one", str(count), backend, "--dim", str(dim), "--k", str(k)]
    if truth is not None:
        command += ["--truth", str(truth)]
    result = subprocess.run(command, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        print(f"FAILED {backend} search of {count:,} images (exit {result.returncode}):", file=sys.stderr)
        print(result.stderr[-3000:], file=sys.stderr)
        raise SystemExit(1)
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--exact-up-to", type=int, default=100_000)
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "SEARCH"))
    parser.add_argument("--truth")
    args = parser.parse_args()
    if args.one:
        one(int(args.one[0]), args.dim, args.k, args.one[1], args.truth)
        return
    rows = []
    for count in args.sizes:
        truth = None
        if count <= args.exact_up_to:
            rows.append(run(count, args.dim, args.k, "exact", None))
            truth = SCRATCH / f"knn_exact_{count}.npy"
            print(json.dumps(rows[-1]), flush=True)
        rows.append(run(count, args.dim, args.k, "faiss", truth))
        print(json.dumps(rows[-1]), flush=True)
        if truth is not None:
            truth.unlink()
    print(
        f"\n{'images':>10s} {'search':7s} {'seconds':>9s} {'peak GiB':>9s} {'before GiB':>13s} {'recall@k':>9s}"
    )
    for row in rows:
        recall = f"{row['recall']:.5f}" if "recall" in row else "-"
        print(
            f"{row['size']:>10,d} {row['search']:7s} {row['seconds']:9.1f} {row['peak_gib']:9.2f} "
            f"{row['data_gib']:13.2f} {recall:>9s}"
        )
    from vtcc.knn import HNSW_LINKS

    print("\nextrapolated from the largest measured size of each search (this machine's cores):")
    for search in ("exact", "faiss"):
        measured = [r for r in rows if r["search"] == search]
        if not measured:
            continue
        last = measured[-1]
        for target in (10_000_000, 100_000_000):
            ratio = target / last["size"]
            scale = ratio**2 if search == "exact" else ratio * math.log(target) / math.log(last["size"])
            hours = last["seconds"] * scale / 3600
            memory = target * (4 * args.dim + (0 if search == "exact" else 8 * HNSW_LINKS)) / 2**30
            print(
                f"  {search:5s} {target:>12,d} images: about {hours:,.1f} h, features (+ graph) {memory:,.0f} GiB"
            )


if __name__ == "__main__":
    main()
