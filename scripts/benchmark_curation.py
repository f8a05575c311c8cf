"""What a person's curation buys on digits: an over-clustered run, the curation applied to it without
training (vtcc-predict curation=), and the run fine-tuned with it (vtcc-train init_from= curation=).

Usage: .venv/bin/python scripts/benchmark_curation.py [--out curation_bench] [--clusters 20]
       [--minutes 2] [--fine-minutes 1] [--moves 0.01] [--images N] [--tiny]
Steps (each a vtcc command, run through the library as the command runs it):
  1. the built-in digits (1,797 8x8 images) written as a class folder, digits/<label>/<index>.png:
     moves name images by path, and data=digits has no paths (data=folder resolves the same 16 px,
     gray, small-recipe settings from the images)
  2. over   vtcc-train data=folder data.root=digits num_clusters=20 time_budget_minutes=2
  3. the simulated person, from vtcc-predict's clusters.csv of the over run on the folder: each
     cluster merged into the class most of its images have (the labels stand for the person
     looking at the galleries), named after it; then, of the images in the least certain order
     (the run's probability of its cluster), the first 1 % of the images whose merged cluster is
     not their class's moved to their class's cluster (a new cluster for a class that has none)
  4. curated  vtcc-predict ckpt_path=<over> input=digits curation=curation.json (no training)
  5. fine     vtcc-train init_from=<over>/checkpoints/last.ckpt curation=curation.json
              time_budget_minutes=1
ACC / NMI of each on the evaluation split (every image: data.eval_split is all), all three from
vtcc-predict's clusters.csv of the folder (the runs' final_metrics.json give the same figures).
--tiny: a smoke run in seconds (its figures mean nothing): 300 images, a tiny model, 1 epoch each.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from train_runs import run_vtcc_train  # scripts/ is on the path when a script runs

from vtcc.api.compose import compose_config
from vtcc.data import load_digits
from vtcc.metrics import clustering_metrics
from vtcc.predict import predict

TINY_MODEL = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "data.image_size=8"]


def write_digits(root: Path, count: int | None) -> Path:
    """The built-in digits as ``root/<label>/<index>.png`` (the first ``count``; None: all)."""
    arrays = load_digits()
    for index in range(len(arrays.labels) if count is None else count):
        folder = root / str(int(arrays.labels[index]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arrays.images[index, 0].numpy()).save(folder / f"{index:04d}.png")
    return root


def predicted(out: Path, name: str, ckpt: Path, images: Path, *extra: str) -> list[dict[str, str]]:
    """``vtcc-predict ckpt_path=<ckpt> input=<images> output=<out>/<name>``: the rows of clusters.csv."""
    items = [f"ckpt_path={ckpt}", f"input={images}", f"output={out / name}", "overwrite=true", *extra]
    predict(compose_config("predict", [*items, f"paths.output_dir={out / 'predict_logs'}"]))
    with open(out / name / "clusters.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def label_of(path: str) -> int:
    return int(Path(path).parent.name)


def simulated_curation(rows: list[dict[str, str]], num_clusters: int, share: float) -> dict:
    """The person's curation.json of a run's clusters.csv (see the module docstring)."""
    labels = np.array([label_of(r["path"]) for r in rows])
    clusters = np.array([int(r["cluster"]) for r in rows])
    groups: dict[int, list[int]] = {}
    for k in np.unique(clusters).tolist():
        groups.setdefault(int(np.bincount(labels[clusters == k]).argmax()), []).append(k)
    home = {label: min(group) for label, group in groups.items()}
    for label in sorted(set(labels.tolist()) - set(home)):  # a class no cluster holds: a new one
        home[label] = num_clusters + label
    final = {k: min(group) for group in groups.values() for k in group}
    order = np.argsort([float(r["confidence"]) for r in rows], kind="stable")
    wrong = [int(i) for i in order if final[int(clusters[i])] != home[int(labels[i])]]
    moves = [
        {"path": rows[i]["path"], "cluster": home[int(labels[i])]} for i in wrong[: round(share * len(rows))]
    ]
    made = set(final.values()) | {move["cluster"] for move in moves}  # a new cluster only if moved into
    return {
        "format": "vtcc-curation",
        "version": 1,
        "num_clusters": num_clusters,
        "names": [{"cluster": k, "name": f"digit {label}"} for label, k in sorted(home.items()) if k in made],
        "merges": [group for group in groups.values() if len(group) > 1],
        "moves": moves,
    }


def scores(rows: list[dict[str, str]]) -> dict[str, float]:
    labels = [label_of(r["path"]) for r in rows]
    metrics = clustering_metrics(np.array(labels), np.array([int(r["cluster"]) for r in rows]))
    return {"acc": metrics["acc"], "nmi": metrics["nmi"], "clusters": len({r["cluster"] for r in rows})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("curation_bench"))
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=2.0, help="the over-clustered run's budget")
    parser.add_argument("--fine-minutes", type=float, default=1.0, help="the fine-tune's budget")
    parser.add_argument("--moves", type=float, default=0.01, help="the share of the images moved")
    parser.add_argument("--images", type=int, default=None, help="the first N digits (default: all)")
    parser.add_argument("--tiny", action="store_true", help="a smoke run in seconds (a test)")
    args = parser.parse_args()
    out = args.out.resolve()
    budget, fine_budget = (
        [f"time_budget_minutes={args.minutes}"],
        [f"time_budget_minutes={args.fine_minutes}"],
    )
    model: list[str] = []
    if args.tiny:
        args.images = args.images or 300
        budget = fine_budget = ["trainer.max_epochs=1", "data.batch_size=64"]
        model = TINY_MODEL
    images = write_digits(out / "digits", args.images)
    data = ["data=folder", f"data.root={images}"]
    over, fine = out / "over", out / "fine"
    seconds = {
        "over": run_vtcc_train("over", [*data, f"num_clusters={args.clusters}", *budget, *model], over)
    }
    over_ckpt = over / "checkpoints" / "last.ckpt"
    rows = {"over": predicted(out, "predict_over", over_ckpt, images)}
    curation = simulated_curation(rows["over"], args.clusters, args.moves)
    (out / "curation.json").write_text(json.dumps(curation, indent=1))
    print(f"curation: {len(curation['merges'])} merges, {len(curation['moves'])} moves", flush=True)
    rows["curated"] = predicted(
        out, "predict_curated", over_ckpt, images, f"curation={out / 'curation.json'}"
    )
    overrides = [f"init_from={over_ckpt}", f"curation={out / 'curation.json'}", *fine_budget]
    seconds["fine"] = run_vtcc_train("fine", overrides, fine)
    rows["fine"] = predicted(out, "predict_fine", fine / "checkpoints" / "last.ckpt", images)
    table = {name: scores(found) for name, found in rows.items()}
    for name in ("over", "fine"):
        final = json.loads((out / name / "final_metrics.json").read_text())
        table[name]["final_metrics_acc"] = final["acc"]
    (out / "results.json").write_text(json.dumps({"table": table, "seconds": seconds}, indent=1))
    print("\n| run | clusters | ACC | NMI |\n| --- | --- | --- | --- |")
    for name, row in table.items():
        print(f"| {name} | {row['clusters']} | {row['acc']:.3f} | {row['nmi']:.3f} |")


if __name__ == "__main__":
    main()
