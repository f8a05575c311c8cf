"""k-means, contrastive heads, SCAN, TEMI and TURTLE side by side on the same cached features of
frozen vtcc backbones trained on the embedded digits, in one space and in two.

Usage: .venv/bin/python scripts/benchmark_turtle.py [--out turtle_bench] [--seeds 42 1 2]
           [--backbones <a>.ckpt <b>.ckpt] [--methods kmeans contrastive scan temi turtle]
           [--spaces A B A+B] [--turtle-epochs 30] [--turtle-lrs 1e-3 1e-2] [--k-bias]
Without --backbones, two backbones are trained first: `vtcc-train seed=0` and `vtcc-train seed=1`
(make train's job with two seeds: two different representation spaces of the same images).
Every method runs as `vtcc-train model=pretrained model.checkpoint=<a>.ckpt objective=<method>`
(two spaces: `model.backbones=[<a>.ckpt,<b>.ckpt]`) with its config's defaults and `seed=<s>`,
TURTLE with T scaled to the data (`trainer.max_epochs=30`: 3,000 steps of the whole 1,797
images, where the official 6,000 steps are for batches of 10,000 of 50,000; its training loss
is flat from about 2,000 steps on these features);
the features of each backbone set are extracted once and shared by every method that reads only
the evaluation features (TEMI, TURTLE); contrastive heads and SCAN add their augmented views.
k-means (10 restarts) runs on the cached evaluation features themselves (each space
L2-normalised, as TURTLE's k-means baseline does with several spaces). Prints ACC / NMI / ARI per
seed, their means, the seconds of each run (process start to exit, extraction included where it
happened) and TURTLE's label-free generalisation score. --spaces picks the backbone sets (A: the
first backbone, B: the second, A+B: both). --turtle-lrs runs TURTLE once per rate, inner and outer
alike and not scaled by the spaces' width (`module.inner_lr=<r> module.optimizer.lr=<r>
module.rate_width=null`; without it, the config's rates, scaled by width).
Tiny (a test): --backbones <a>.ckpt <a>.ckpt --spaces A --methods kmeans turtle --seeds 42 --turtle-epochs 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from train_runs import run_vtcc_train  # scripts/ is on the path when a script runs

from vtcc.metrics import clustering_metrics
from vtcc.models.spaces import normalize_each_space

METHODS = ("kmeans", "contrastive", "scan", "temi", "turtle")
SPACES = ("A", "B", "A+B")


def backbone_runs(out: Path) -> list[Path]:
    """Two `make train` jobs (seeds 0 and 1); reused when already there."""
    paths = []
    for seed in (0, 1):
        run_dir = out / "backbones" / f"seed{seed}"
        checkpoint = run_dir / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            seconds = run_vtcc_train(
                f"backbone seed {seed}", [f"seed={seed}", f"paths.log_dir={out}"], run_dir
            )
            print(
                f"backbone seed {seed}: {seconds:.0f} s, {json.loads((run_dir / 'final_metrics.json').read_text())}"
            )
        paths.append(checkpoint)
    return paths


def space_overrides(checkpoints: list[Path]) -> list[str]:
    if len(checkpoints) == 1:
        return [f"model.checkpoint={checkpoints[0]}"]
    return [f"model.backbones=[{','.join(str(c) for c in checkpoints)}]"]


def newest_cache(out: Path, widths: int) -> dict[str, torch.Tensor]:
    """The newest cache of evaluation features ``widths`` columns wide."""
    for path in sorted(
        (out / "cache" / "features").glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True
    ):
        cache = torch.load(path, map_location="cpu", weights_only=True)
        if cache["eval"].shape[1] == widths:
            return cache
    raise SystemExit(f"no cached features {widths} wide under {out / 'cache'}")


def kmeans_on_cache(cache: dict[str, torch.Tensor], dims: list[int], seed: int) -> dict[str, float]:
    features = cache["eval"].float()
    points = (normalize_each_space(features, dims) if len(dims) > 1 else features).numpy()
    labels = cache["labels"].numpy()
    start = time.perf_counter()
    clusters = KMeans(len(np.unique(labels)), n_init=10, random_state=seed).fit_predict(points)
    return {**clustering_metrics(labels, clusters), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("turtle_bench"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--backbones", nargs=2, type=Path)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--spaces", nargs="+", choices=SPACES, default=list(SPACES))
    parser.add_argument(
        "--turtle-epochs", type=int, default=30, help="TURTLE's T / 100 (official: 60; 30 on 1,797 images)"
    )
    parser.add_argument(
        "--turtle-lrs",
        nargs="+",
        type=float,
        default=[None],
        help="TURTLE's inner and outer rate, one run each",
    )
    parser.add_argument(
        "--k-bias", action="store_true", help="also score K = 2..30 by every criterion on space A (minutes)"
    )
    args = parser.parse_args()
    out = args.out.resolve()
    checkpoints = [c.resolve() for c in args.backbones] if args.backbones else backbone_runs(out)
    sets = {"A": checkpoints[:1], "B": checkpoints[1:], "A+B": checkpoints}
    sets = {label: members for label, members in sets.items() if label in args.spaces}
    rows, variants = [], {}  # the runs; each TURTLE variant's label and its overrides
    for rate in args.turtle_lrs:
        given = [f"module.inner_lr={rate}", f"module.optimizer.lr={rate}", "module.rate_width=null"]
        rates = [] if rate is None else given  # as given: not scaled by the spaces' width
        variants["turtle" if rate is None else f"turtle@{rate:g}"] = rates
    for label, members in sets.items():
        methods = [m for m in args.methods if label != "B" or m in ("kmeans", "turtle")]
        for seed in args.seeds:
            for method, extra in [
                (v, r) for m in methods for v, r in (variants.items() if m == "turtle" else [(m, [])])
            ]:
                if method == "kmeans":
                    continue
                objective = method.partition("@")[0]
                run_dir = out / "runs" / f"{label}_{method}_s{seed}"
                overrides = [
                    "model=pretrained",
                    *space_overrides(members),
                    f"objective={objective}",
                    f"seed={seed}",
                    *extra,
                ]
                if objective == "turtle":
                    overrides.append(f"trainer.max_epochs={args.turtle_epochs}")
                seconds = run_vtcc_train(f"{label} {method}", [*overrides, f"paths.log_dir={out}"], run_dir)
                metrics = json.loads((run_dir / "final_metrics.json").read_text())
                rows.append({"spaces": label, "method": method, "seed": seed, "seconds": seconds, **metrics})
                print(json.dumps(rows[-1]), flush=True)
            if "kmeans" in args.methods:
                dims = [dims_of(c) for c in members]
                cache = newest_cache(out, sum(dims))  # this set's: written by its last run
                rows.append(
                    {"spaces": label, "method": "kmeans", "seed": seed, **kmeans_on_cache(cache, dims, seed)}
                )
                print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{'spaces':6s} {'method':12s} {'ACC per seed':24s} {'mean ACC':>8s} {'NMI':>6s} {'ARI':>6s} {'s/run':>6s} {'gen.':>6s}"
    )
    for label in sets:
        for method in [v for m in METHODS for v in (variants if m == "turtle" else [m])]:
            mine = [r for r in rows if r["spaces"] == label and r["method"] == method]
            if not mine:
                continue
            mean = {k: float(np.mean([r[k] for r in mine])) for k in ("acc", "nmi", "ari", "seconds")}
            gen = (
                np.mean([r["generalization"] for r in mine]) if "generalization" in mine[0] else float("nan")
            )
            per_seed = " ".join(f"{r['acc']:.3f}" for r in mine)
            print(
                f"{label:6s} {method:12s} {per_seed:24s} {mean['acc']:8.3f} {mean['nmi']:6.3f} "
                f"{mean['ari']:6.3f} {mean['seconds']:6.1f} {gen:6.3f}"
            )
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    if not args.k_bias:
        return
    k_search_bias(
        out,
        dims_of(checkpoints[0]),
        int(len(np.unique(newest_cache(out, dims_of(checkpoints[0]))["labels"]))),
    )


def k_search_bias(out: Path, width: int, true_k: int) -> None:
    """The K each num_clusters=auto criterion picks from k-means partitions of space A's cached
    features (K from 2 to 30), TURTLE's generalisation score among them."""
    from vtcc.k_selection import CRITERIA, choose, score_candidates

    features = newest_cache(out, width)["eval"].float().numpy()
    start = time.perf_counter()
    rows = score_candidates(features, list(range(2, 31)), criterion="generalization")
    picks = ", ".join(f"{name} {choose(rows, name)}" for name in CRITERIA)
    print(
        f"\nK chosen on space A's features (true K {true_k}, candidates 2-30, {time.perf_counter() - start:.0f} s): {picks}"
    )
    print("generalization by K: " + " ".join(f"{r['k']}:{r['generalization']:.3f}" for r in rows))


def dims_of(checkpoint: Path) -> int:
    """The width of a vtcc run's backbone features (its model.embed_dim)."""
    from vtcc.utils.checkpoint import CONFIG_KEY, load_checkpoint

    return int(load_checkpoint(checkpoint)[CONFIG_KEY]["model"]["embed_dim"])


if __name__ == "__main__":
    main()
