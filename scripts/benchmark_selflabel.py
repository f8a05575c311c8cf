"""Past the anchors on digits: self-labelling after end-to-end runs, and SCAN, SCAN + self-labelling
and TEMI on the frozen features of a trained vtcc backbone, against the contrastive heads.

Usage: .venv/bin/python scripts/benchmark_selflabel.py [--out selflabel_bench] [--selflabel-epochs 50]
       [--seeds 42 1 2] [--e2e-epochs 30 100] [--frozen-epochs 50] [--frozen cc scan scan+sl temi]
       [--extra key=value ...] [--tiny]
Runs (each a `vtcc-train`; labels only score, they choose nothing):
  e2e_30 / e2e_100        make train's job (VTCC on digits) for 30 / 100 epochs (seed 42; --e2e-epochs)
  e2e_30+sl / e2e_100+sl  objective=selflabel init_from=<its last.ckpt>
  frozen_cc               the last e2e backbone frozen (model=pretrained model.checkpoint=<ckpt>), contrastive heads
  frozen_scan             the same features, objective=scan (10 heads)
  frozen_scan+sl          objective=selflabel init_from=<frozen_scan's last.ckpt> (on the evaluation features)
  frozen_temi             objective=temi with 10 heads
--frozen picks the frozen runs (scan+sl runs scan first); --extra adds overrides to every run.
--tiny: a smoke run of every kind of run in seconds (its figures mean nothing): one 1-epoch e2e
backbone of a tiny model, self-labelling for 1 epoch at a confidence threshold of 0.1, frozen_temi.
Every run after the two backbones runs once per --seeds value (a run folder per seed; a
self-labelling run starts from the checkpoint of the same seed). Prints each run's ACC / NMI / ARI,
wall time and training time (the sum of the epochs' measured seconds: the heads' training for the
frozen runs), then the mean over seeds of each.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from train_runs import run_vtcc_train  # scripts/ is on the path when a script runs

METRICS = ("acc", "nmi", "ari")
FROZEN = ("cc", "scan", "scan+sl", "temi")
TINY_MODEL = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "data.image_size=8"]


def training_seconds(run_dir: Path) -> float:
    rows = csv.DictReader(open(run_dir / "logs" / "metrics.csv"))
    return sum(float(r["train/epoch_seconds"]) for r in rows if r.get("train/epoch_seconds"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("selflabel_bench"))
    parser.add_argument("--selflabel-epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--e2e-epochs", type=int, nargs="+", default=[30, 100])
    parser.add_argument("--frozen-epochs", type=int, default=50)
    parser.add_argument("--frozen", nargs="*", choices=FROZEN, default=list(FROZEN))
    parser.add_argument("--extra", nargs="+", default=[], help="overrides added to every run")
    parser.add_argument("--tiny", action="store_true", help="every kind of run, in seconds (a test)")
    args = parser.parse_args()
    e2e_model, threshold = [], []
    if args.tiny:
        args.e2e_epochs, args.selflabel_epochs, args.frozen_epochs, args.frozen = [1], 1, 1, ["temi"]
        e2e_model, threshold = TINY_MODEL, ["module.selflabel_loss.threshold=0.1"]
    out = args.out.resolve()
    ckpt: dict[str, Path] = {}
    rows: list[dict] = []

    def run(name: str, overrides: list[str], seed: int = 42) -> None:
        folder = f"{name}_s{seed}".replace("+", "_")
        run_dir = out / folder
        seconds = run_vtcc_train(folder, [*overrides, *args.extra, f"seed={seed}"], run_dir)
        metrics = json.loads((run_dir / "final_metrics.json").read_text())
        ckpt[f"{name}_s{seed}"] = run_dir / "checkpoints" / "last.ckpt"
        row = {
            "run": name,
            "seed": seed,
            "seconds": round(seconds),
            "training_s": round(training_seconds(run_dir), 1),
            **{k: round(metrics[k], 4) for k in METRICS},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    selflabel = ["objective=selflabel", f"trainer.max_epochs={args.selflabel_epochs}", *threshold]
    for epochs in args.e2e_epochs:
        run(f"e2e_{epochs}", [f"trainer.max_epochs={epochs}", *e2e_model])
        for seed in args.seeds:
            run(f"e2e_{epochs}+sl", [*selflabel, f"init_from={ckpt[f'e2e_{epochs}_s42']}"], seed)
    frozen = [
        "model=pretrained",
        f"model.checkpoint={ckpt[f'e2e_{args.e2e_epochs[-1]}_s42']}",
        "model.mode=frozen",
        f"trainer.max_epochs={args.frozen_epochs}",
        f"features.cache_dir={out / 'cache'}",
    ]
    for seed in args.seeds:
        if "cc" in args.frozen:
            run("frozen_cc", frozen, seed)
        if "scan" in args.frozen or "scan+sl" in args.frozen:
            run("frozen_scan", [*frozen, "objective=scan", "module.num_cluster_heads=10"], seed)
        if "scan+sl" in args.frozen:
            run(
                "frozen_scan+sl",
                [
                    *selflabel,
                    f"init_from={ckpt[f'frozen_scan_s{seed}']}",
                    f"features.cache_dir={out / 'cache'}",
                ],
                seed,
            )
        if "temi" in args.frozen:
            run("frozen_temi", [*frozen, "objective=temi", "module.num_cluster_heads=10"], seed)
    print(f"\n{'run':16s} {'seed':>4s} {'ACC':>6s} {'NMI':>6s} {'ARI':>6s} {'train s':>8s} {'wall s':>7s}")
    for r in rows:
        print(
            f"{r['run']:16s} {r['seed']:4d} {r['acc']:6.3f} {r['nmi']:6.3f} {r['ari']:6.3f} "
            f"{r['training_s']:8.1f} {r['seconds']:7d}"
        )
    print(f"\nmean over seeds\n{'run':16s} {'runs':>4s} {'ACC':>6s} {'NMI':>6s} {'ARI':>6s} {'train s':>8s}")
    for name in dict.fromkeys(r["run"] for r in rows):
        group = [r for r in rows if r["run"] == name]
        means = {k: statistics.mean(r[k] for r in group) for k in (*METRICS, "training_s")}
        print(
            f"{name:16s} {len(group):4d} {means['acc']:6.3f} {means['nmi']:6.3f} {means['ari']:6.3f} "
            f"{means['training_s']:8.1f}"
        )


if __name__ == "__main__":
    main()
