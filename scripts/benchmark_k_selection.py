"""num_clusters=auto on data with a known K: chosen K, ACC / NMI / ARI at it, and the cost.

Usage: .venv/bin/python scripts/benchmark_k_selection.py [--epochs 60] [--out k_bench] [--cases ...]
Cases: digits (10 classes, built in); digits5_folder (digits 0-4 as PNG class folders);
digits5_flat (the same images in one flat folder: no labels at all); digits_fixed (make train's
fixed K = 10, for the cost ratio). For every auto case it also prints the K that each criterion
of k_selection.csv would have chosen, so the default criterion is chosen by measurement.
Labels never choose anything here: they only score the result.
Tiny (a test): --cases digits5_flat --epochs 1 --override <a tiny model>
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from sklearn.datasets import load_digits
from train_runs import run_vtcc_train  # scripts/ is on the path when a script runs

from vtcc.k_selection import CRITERIA, choose

GRAY_DIGITS = ["data.in_chans=1", "data.image_size=16", "data.mean=[0.3]", "data.std=[0.4]", "augment=small"]


def write_digit_folders(out: Path, classes: range) -> tuple[Path, Path]:
    digits = load_digits()
    labelled, flat = out / "digits5", out / "digits5_flat"
    for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        if label not in classes:
            continue
        picture = Image.fromarray((image * 16).clip(0, 255).astype(np.uint8))
        (labelled / str(label)).mkdir(parents=True, exist_ok=True)
        flat.mkdir(parents=True, exist_ok=True)
        picture.save(labelled / str(label) / f"{index:04d}.png")
        picture.save(flat / f"{index:04d}.png")
    return labelled, flat


def run(name: str, overrides: list[str], out: Path) -> dict:
    run_dir = out / "runs" / name  # not beside the image folders it reads
    seconds = run_vtcc_train(name, overrides, run_dir)
    row = {"case": name, "seconds": seconds, **json.loads((run_dir / "final_metrics.json").read_text())}
    row["chosen_k"] = yaml.safe_load((run_dir / "config.yaml").read_text())["num_clusters"]
    table = run_dir / "k_selection.csv"
    if table.is_file():
        rows = [{k: float(v) for k, v in r.items() if k != "chosen"} for r in csv.DictReader(open(table))]
        # the criteria the run computed (the table leaves out those it did not)
        row["by_criterion"] = {c: choose(rows, c) for c in CRITERIA if c in rows[0]}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("k_bench"))
    parser.add_argument(
        "--cases", nargs="+", default=["digits", "digits5_folder", "digits5_flat", "digits_fixed"]
    )
    parser.add_argument("--override", nargs="*", default=[], help="extra overrides for every case")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    labelled, flat = write_digit_folders(args.out.resolve(), range(5))
    epochs = [f"trainer.max_epochs={args.epochs}", *args.override]
    cases = {
        "digits": (10, ["num_clusters=auto", *epochs]),
        "digits5_folder": (
            5,
            ["data=folder", f"data.root={labelled}", *GRAY_DIGITS, "num_clusters=auto", *epochs],
        ),
        "digits5_flat": (5, ["data=folder", f"data.root={flat}", *GRAY_DIGITS, "num_clusters=auto", *epochs]),
        "digits_fixed": (10, [*epochs]),
    }
    rows = []
    for name in args.cases:
        true_k, overrides = cases[name]
        row = run(name, overrides, args.out.resolve())
        row["true_k"] = true_k
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"\n{'case':16s} {'true K':>6s} {'chosen K':>8s} {'ACC':>6s} {'NMI':>6s} {'ARI':>6s} {'time':>7s}  K by criterion"
    )
    for r in rows:
        metrics = [f"{r[m]:6.3f}" if m in r else f"{'-':>6s}" for m in ("acc", "nmi", "ari")]
        by = "  ".join(f"{c}={k}" for c, k in r.get("by_criterion", {}).items())
        print(
            f"{r['case']:16s} {r['true_k']:6d} {r['chosen_k']:8d} {' '.join(metrics)} {r['seconds']:6.0f}s  {by}"
        )


if __name__ == "__main__":
    main()
