"""Pretrained-features mode against end-to-end VTCC, side by side on the embedded digits.

Usage: .venv/bin/python scripts/benchmark_pretrained.py --backbone <run>/checkpoints/last.ckpt [--epochs 50]
The backbone is a finished `make train` run's checkpoint (the best pretrained-like backbone that
works offline): its frozen features train fresh heads (contrastive, then SCAN), timed; the
end-to-end run's own metrics are read from its checkpoint's run folder. Then the head-training
epoch time on CIFAR-10-sized cached features (60,000 x 384, synthetic) shows the CPU cost at scale.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from vtcc.data.features import CachedFeatureDataModule
from vtcc.losses import ClusterLoss, InstanceLoss
from vtcc.models import ClusteringNetwork
from vtcc.objectives import ContrastiveClustering
from vtcc.train import train
from vtcc.utils.cli import CONFIG_DIR


def frozen_run(backbone: Path, objective: str, epochs: int, workdir: Path) -> dict:
    overrides = [
        "model=pretrained",
        f"model.checkpoint={backbone.resolve()}",
        f"objective={objective}",
        f"trainer.max_epochs={epochs}",
        f"trainer.check_val_every_n_epoch={epochs}",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={workdir / objective}",
        f"paths.log_dir={workdir}",
        "logger=csv",
    ]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    start = time.perf_counter()
    metrics = train(cfg)
    total = time.perf_counter() - start
    csv = (workdir / objective / "logs" / "metrics.csv").read_text().splitlines()
    header = csv[0].split(",")
    seconds = [
        float(r.split(",")[header.index("train/epoch_seconds")])
        for r in csv[1:]
        if r.split(",")[header.index("train/epoch_seconds")]
    ]
    return {
        "run": f"frozen VTCC backbone + {objective} heads",
        "total_s": total,
        "epoch_s": sum(seconds) / len(seconds),
        **metrics,
    }


def extraction_rate(backbone: Path, workdir: Path) -> float:
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["model=pretrained", f"model.checkpoint={backbone.resolve()}", "paths.output_dir=."],
        )
    from vtcc.build import build_network
    from vtcc.config.resolve import resolve

    source = resolve(cfg, []).source  # the run's data, set up, as vtcc-train resolves it
    network = build_network(cfg)
    features = CachedFeatureDataModule(
        source, network.backbone, key="rate", cache_dir=str(workdir / "rate"), num_views=10
    )
    start = time.perf_counter()
    features.setup("fit")
    return 11 * len(source.arrays) / (time.perf_counter() - start)  # 10 augmented views + 1 evaluation view


def head_epoch_seconds(
    count: int = 60_000, dim: int = 384, clusters: int = 10, batch: int = 256, hidden: int = 512
) -> float:
    """One epoch of the heads on cached features of a CIFAR-10-sized dataset."""

    class Features(torch.nn.Module):
        num_features = dim

    network = ClusteringNetwork(Features(), clusters, hidden_dim=hidden)  # model=pretrained's default width
    module = ContrastiveClustering(network, InstanceLoss(), ClusterLoss(), optimizer=None)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-4)
    views = torch.randn(2, count, dim)
    start = time.perf_counter()
    for first in range(0, count - batch + 1, batch):
        loss = module.losses(views[0, first : first + batch], views[1, first : first + batch])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", type=Path, required=True, help="a finished vtcc run's .ckpt")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    end_to_end = json.loads((args.backbone.parents[1] / "final_metrics.json").read_text())
    rows = [{"run": "end-to-end VTCC (the backbone's own run)", **end_to_end}]
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        rate = extraction_rate(args.backbone, workdir)
        for objective in ("contrastive", "scan"):
            rows.append(frozen_run(args.backbone, objective, args.epochs, workdir))
    cifar_epoch = head_epoch_seconds()
    print(f"feature extraction: {rate:.0f} images/s (views included), CPU threads {torch.get_num_threads()}")
    print(
        f"head training on CIFAR-10-sized cached features (60,000 x 384, batch 256, heads 512 wide): {cifar_epoch:.1f} s/epoch"
    )
    print(f"{'run':44s} {'ACC':>6s} {'NMI':>6s} {'ARI':>6s} {'epoch s':>8s} {'total s':>8s}")
    for r in rows:
        timing = f"{r['epoch_s']:8.2f} {r['total_s']:8.1f}" if "epoch_s" in r else f"{'':8s} {'':8s}"
        print(f"{r['run']:44s} {r['acc']:6.3f} {r['nmi']:6.3f} {r['ari']:6.3f} {timing}")
    if args.json:
        args.json.write_text(
            json.dumps({"extract_img_s": rate, "cifar_head_epoch_s": cifar_epoch, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
