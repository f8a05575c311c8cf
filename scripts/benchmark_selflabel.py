"""Past the anchors on digits: self-labelling after end-to-end runs, and SCAN, SCAN + self-labelling
and TEMI on the frozen features of a trained vtcc backbone, against the contrastive heads.

Usage: .venv/bin/python scripts/benchmark_selflabel.py [--out selflabel_bench] [--selflabel-epochs 50]
Runs (each a `vtcc-train`; labels only score, they choose nothing):
  e2e_30 / e2e_100        make train's job (VTCC on digits) for 30 / 100 epochs
  e2e_30+sl / e2e_100+sl  objective=selflabel init_from=<its last.ckpt>
  frozen_cc               the e2e_100 backbone frozen (model=pretrained model.checkpoint=<ckpt>), contrastive heads
  frozen_scan             the same features, objective=scan (10 heads)
  frozen_scan+sl          objective=selflabel init_from=<frozen_scan's last.ckpt> (cached weak / strong views)
  frozen_temi             objective=temi with 10 heads
Prints ACC / NMI / ARI, the wall time of each run and its training time (the sum of the epochs'
measured seconds: the heads' training for the frozen runs).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from train_runs import run_vtcc_train  # scripts/ is on the path when a script runs

FROZEN_EPOCHS = 50


def training_seconds(run_dir: Path) -> float:
    rows = csv.DictReader(open(run_dir / "logs" / "metrics.csv"))
    return sum(float(r["train/epoch_seconds"]) for r in rows if r.get("train/epoch_seconds"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("selflabel_bench"))
    parser.add_argument("--selflabel-epochs", type=int, default=50)
    args = parser.parse_args()
    out = args.out.resolve()
    ckpt = {}
    rows = []

    def run(name: str, overrides: list[str]) -> None:
        run_dir = out / name.replace("+", "_")
        seconds = run_vtcc_train(name, overrides, run_dir)
        metrics = json.loads((run_dir / "final_metrics.json").read_text())
        ckpt[name] = run_dir / "checkpoints" / "last.ckpt"
        row = {
            "run": name,
            "seconds": round(seconds),
            "training_s": round(training_seconds(run_dir), 1),
            **{k: round(metrics[k], 3) for k in ("acc", "nmi", "ari")},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    selflabel = ["objective=selflabel", f"trainer.max_epochs={args.selflabel_epochs}"]
    for epochs in (30, 100):
        run(f"e2e_{epochs}", [f"trainer.max_epochs={epochs}"])
        run(f"e2e_{epochs}+sl", [*selflabel, f"init_from={ckpt[f'e2e_{epochs}']}"])
    frozen = [
        "model=pretrained",
        f"model.checkpoint={ckpt['e2e_100']}",
        "model.mode=frozen",
        f"trainer.max_epochs={FROZEN_EPOCHS}",
        f"features.cache_dir={out / 'cache'}",
    ]
    run("frozen_cc", frozen)
    run("frozen_scan", [*frozen, "objective=scan", "module.num_heads=10"])
    run(
        "frozen_scan+sl",
        [*selflabel, f"init_from={ckpt['frozen_scan']}", f"features.cache_dir={out / 'cache'}"],
    )
    run("frozen_temi", [*frozen, "objective=temi", "module.num_heads=10"])
    print(f"\n{'run':16s} {'ACC':>6s} {'NMI':>6s} {'ARI':>6s} {'train s':>8s} {'wall s':>7s}")
    for r in rows:
        print(
            f"{r['run']:16s} {r['acc']:6.3f} {r['nmi']:6.3f} {r['ari']:6.3f} {r['training_s']:8.1f} {r['seconds']:7d}"
        )


if __name__ == "__main__":
    main()
