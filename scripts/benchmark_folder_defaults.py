"""Your own folder with no settings: what vtcc chooses from the images, and what it gives, printed
next to k-means and UMAP + k-means on the raw pixels of the same images (scripts/baselines.py).

Usage: .venv/bin/python scripts/benchmark_folder_defaults.py [--out folder_bench] [--cases ...]
           [--minutes 10] [--seeds 42 1 2] [--baselines] [--extra key=value ...] [--tag name]
Folders (scripts/folders.py; labels only score):
  digits8, digits28, animals28, glyphs28, shapes28   see scripts/folders.py
  digits32     scikit-learn's digits upscaled to 32 px (bilinear)
  colour32     the 32 px digits in colour: each image a random foreground and background colour
Runs (each `vtcc-train data=folder data.root=<folder>` plus):
  <folder>:auto        nothing else: every setting from the data (60 epochs)
  <folder>:budget      nothing else but time_budget_minutes=<minutes> (the issue's "no settings" run)
  <folder>:noflip      the budget run with augment=small (the small recipe's fixed no-flip default)
  <folder>:make_train  make train's settings forced (1 channel, 16 px, digits' mean/std, augment=small)
  <folder>:old         the folder defaults before settings came from the data (3 channels, 32 px,
                       ImageNet mean/std, augment=small, patch 4), with time_budget_minutes=<minutes>
  <folder>:small       augment=small forced (the gray recipe, no colour ops)
  <folder>:cc_mild     augment=cc with crops of 30-100 % and no flips
--extra adds overrides to every run (a lever to measure, e.g. --extra module.num_cluster_heads=5), and
--tag names such runs apart (run folders get a _<tag> suffix).
--seeds runs every case once per seed (run folders get a _s<seed> suffix); --baselines adds
k-means and UMAP + k-means on the raw pixels of every folder, for the same seeds (umap-learn:
pip install -e '.[bench]').
Prints the chosen settings, images/s, ACC / NMI / ARI, the label-free structure score beside the
pixels' (report/quality.json), and the ACC at each evaluation with its time; for a run of several
cluster heads, each head's ACC on the folder and the one its training losses chose (labels score
the heads after the run; they choose nothing).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import yaml
from baselines import run_baselines  # scripts/ is on the path when a script runs
from folders import FOLDERS, write_folder
from PIL import Image
from sklearn.datasets import load_digits
from train_runs import run_vtcc_train

from vtcc.inference import Assigner
from vtcc.metrics import clustering_metrics
from vtcc.utils.checkpoint import load_checkpoint

MAKE_TRAIN = ["data.in_chans=1", "data.image_size=16", "data.mean=[0.3]", "data.std=[0.4]", "augment=small"]
OLD = [
    "data.in_chans=3",
    "data.image_size=32",
    "data.mean=[0.485,0.456,0.406]",
    "data.std=[0.229,0.224,0.225]",
    "augment=small",
    "model.patch_size=4",
]


def write_folders(out: Path, names: set[str]) -> dict[str, Path]:
    """The folders named (scripts/folders.py's, or the digits at 32 px in gray and in colour)."""
    folders = {name: write_folder(name, out) for name in FOLDERS if name in names}
    legacy = {name: out / name for name in ("digits32", "colour32")}
    if not names & set(legacy) or all(f.is_dir() for f in legacy.values()):
        return {**folders, **legacy}
    digits = load_digits()
    rng = np.random.default_rng(0)
    for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        gray = (image * 16).clip(0, 255).astype(np.uint8)
        large = np.asarray(Image.fromarray(gray).resize((32, 32), Image.Resampling.BILINEAR))
        ink, paper = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        alpha = large[..., None] / 255.0
        colour = (alpha * ink + (1 - alpha) * paper).astype(np.uint8)
        for name, pixels in (("digits32", large), ("colour32", colour)):
            target = legacy[name] / str(label)
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(target / f"{index:04d}.png")
    return {**folders, **legacy}


def evaluations(run_dir: Path) -> list[tuple[int, float]]:
    rows = csv.DictReader(open(run_dir / "logs" / "metrics.csv"))
    return [(int(r["epoch"]), float(r["val/acc"])) for r in rows if r.get("val/acc")]


def head_accuracies(run_dir: Path, folder: Path) -> list[float]:
    """ACC of each cluster head of the run's last checkpoint on the folder's images."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    classes = sorted({p.parent.name for p in paths})
    labels = np.array([classes.index(p.parent.name) for p in paths])
    assigner = Assigner(run_dir / "checkpoints" / "last.ckpt", device="cpu")
    accuracies = []
    for head in range(assigner.network.num_cluster_heads):
        assigner.network.best_head.fill_(head)
        clusters = assigner.assign_paths(paths).clusters
        accuracies.append(round(clustering_metrics(labels, clusters)["acc"], 3))
    return accuracies


def run(name: str, folder: Path, extra: list[str], out: Path) -> dict:
    run_dir = out / "runs" / name.replace(":", "_")
    seconds = run_vtcc_train(name, ["data=folder", f"data.root={folder}", *extra, "report=true"], run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "final_metrics.json").read_text())
    quality_file = run_dir / "report" / "quality.json"
    quality = json.loads(quality_file.read_text()) if quality_file.is_file() else {}
    rates = [
        float(r["train/images_per_sec"])
        for r in csv.DictReader(open(run_dir / "logs" / "metrics.csv"))
        if r.get("train/images_per_sec")
    ]
    return {
        "run": name,
        "seconds": round(seconds),
        "in_chans": config["data"]["in_chans"],
        "image_size": config["data"]["image_size"],
        "patch_size": config["model"]["patch_size"],
        "augment": config["augment"]["view_a"]["_target_"].rpartition(".")[2],
        "hflip_p": config["augment"]["view_a"].get("hflip_p"),
        "invert_p": config["augment"]["view_a"].get("invert_p"),
        "epochs": len(rates),  # one throughput row per training epoch
        "images_per_s": round(float(np.median(rates))) if rates else None,
        **{k: round(metrics[k], 3) for k in ("acc", "nmi", "ari")},
        "structure": quality.get("structure"),
        "stability": quality.get("stability"),
        "pixel_stability": quality.get("pixel_stability"),
        "acc_by_epoch": evaluations(run_dir),
        "chosen_head": int(
            load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]["network.best_head"]
        ),
        "head_acc": head_accuracies(run_dir, folder) if config["module"]["num_cluster_heads"] > 1 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("folder_bench"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--baselines", action="store_true")
    parser.add_argument("--extra", nargs="+", default=[], help="overrides added to every vtcc run")
    parser.add_argument("--tag", default="", help="suffix of the run folders of these runs")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["digits28:budget", "animals28:budget", "glyphs28:budget", "shapes28:budget"],
    )
    args = parser.parse_args()
    out = args.out.resolve()
    folders = write_folders(out, {case.split(":")[0] for case in args.cases})
    budget = [f"time_budget_minutes={args.minutes}"]
    extras = {
        "auto": [],
        "budget": budget,
        "noflip": [*budget, "augment=small"],
        "make_train": MAKE_TRAIN,
        "old": [*OLD, *budget],
        "small": ["augment=small"],
        "cc_mild": ["augment=cc", "augment.view_a.crop_scale=[0.3,1.0]", "augment.view_a.hflip_p=0"],
    }
    rows, baseline_rows = [], []
    for seed in args.seeds or [None]:
        for case in args.cases:
            folder, kind = case.split(":")
            name = case if seed is None else f"{case}_s{seed}"
            name = f"{name}_{args.tag}" if args.tag else name
            seeded = [] if seed is None else [f"seed={seed}"]
            row = run(name, folders[folder], [*extras[kind], *args.extra, *seeded], out)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.baselines:
        for folder in dict.fromkeys(case.split(":")[0] for case in args.cases):
            for row in run_baselines(folders[folder], args.seeds or [0]):
                baseline_rows.append(row)
                print(json.dumps(row), flush=True)
    print(
        f"\n{'run':22s} {'chans':>5s} {'px':>4s} {'patch':>5s} {'augment':>16s} {'flip':>4s} {'inv':>4s} {'img/s':>6s} "
        f"{'epochs':>6s} {'time':>6s} {'ACC':>6s} {'NMI':>6s} {'ARI':>6s} {'struct':>6s} {'stab':>6s} {'pixels':>6s}"
    )
    for r in rows:
        print(
            f"{r['run']:22s} {r['in_chans']:5d} {r['image_size']:4d} {r['patch_size']:5d} {r['augment']:>16s} "
            f"{r['hflip_p'] or 0:4.1f} {r['invert_p'] or 0:4.1f} {r['images_per_s'] or 0:6d} {r['epochs'] or 0:6d} {r['seconds']:5d}s "
            f"{r['acc']:6.3f} {r['nmi']:6.3f} {r['ari']:6.3f} {r['structure'] or 0:6.3f} {r['stability'] or 0:6.3f} {r['pixel_stability'] or 0:6.3f}"
        )
    for r in baseline_rows:
        print(
            f"{r['folder'] + ' ' + r['method'] + ' s' + str(r['seed']):22s} {'':>60s} {r['seconds']:5.0f}s "
            f"{r['acc']:6.3f} {r['nmi']:6.3f} {r['ari']:6.3f}"
        )


if __name__ == "__main__":
    main()
