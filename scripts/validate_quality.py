"""How well the label-free ``structure`` score ranks runs by their ACC (labels only score).

Reads every run folder given (or found below a folder): its ``final_metrics.json`` (or an eval's
``metrics.json``) and ``report/quality.json``; prints each run's ACC, NMI, structure and the
pixels' structure, then Spearman's rank correlation of structure with ACC over all runs and
within each folder of images (the data each run names in its ``config.yaml``).

Usage: .venv/bin/python scripts/validate_quality.py <runs folder or run> [...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from scipy.stats import spearmanr


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
        "run": run.name,
        "data": Path(str(root)).name if root else "?",
        "acc": scores["acc"],
        "nmi": scores["nmi"],
        "structure": q["structure"],
        "stability": q.get("stability"),
        "pixel_stability": q.get("pixel_stability"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args()
    runs = []
    for path in args.paths:
        candidates = (
            [path]
            if (path / "report").is_dir()
            else sorted(p for p in path.rglob("*") if (p / "report").is_dir())
        )
        runs += [row for row in map(read_run, candidates) if row]
    for row in runs:
        print(json.dumps(row))
    groups = [("all runs", runs)] + [
        (data, [r for r in runs if r["data"] == data]) for data in sorted({r["data"] for r in runs})
    ]
    for name, rows in groups:
        if len(rows) < 3:
            continue
        acc = [r["acc"] for r in rows]
        for score in ("structure", "stability"):
            values = [r[score] for r in rows]
            if None not in values:
                rho = spearmanr(values, acc).statistic
                print(f"{name} ({len(rows)} runs): Spearman({score}, ACC) = {rho:.3f}")


if __name__ == "__main__":
    main()
