"""Pretrained-features mode against end-to-end VTCC, side by side on the embedded digits.

Usage: .venv/bin/python scripts/benchmark_pretrained.py --backbone <run>/checkpoints/last.ckpt [--epochs 50]
           [--cifar-images 60000] [--extra key=value ...] [--json out.json]
The backbone is a finished `make train` run's checkpoint (the best pretrained-like backbone that
works offline): its frozen features train fresh heads (contrastive, then SCAN), timed; the
end-to-end run's own metrics are read from its checkpoint's run folder. Then the head-training
epoch time on CIFAR-10-sized cached features (60,000 x 384, synthetic) shows the CPU cost at scale.
Every run is assembled as `vtcc-train` assembles it (vtcc.api.compose.compose_config, then
vtcc.config.resolve and vtcc.build; the frozen runs train through vtcc.train.train_run).
--extra adds overrides to the two frozen runs. Tiny (a test): --epochs 1 --cifar-images 512 --extra report=false
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from vtcc.api.compose import compose_config
from vtcc.build import Prepared, build_data, build_module, build_network, prepare_run
from vtcc.config.validate import validate_config
from vtcc.train import train_run


def assemble(overrides: list[str]) -> tuple[DictConfig, Prepared]:
    """``vtcc-train <overrides>``'s config, checked and resolved as vtcc-train resolves it."""
    cfg = compose_config("train", overrides)
    validate_config(cfg)
    prepared = prepare_run(cfg, overrides)
    return prepared.cfg, prepared


def frozen_run(backbone: Path, objective: str, epochs: int, workdir: Path, extra: list[str]) -> dict:
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
        *extra,
    ]
    start = time.perf_counter()
    metrics = train_run(compose_config("train", overrides), overrides).metrics
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


def extraction_rate(backbone: Path, workdir: Path, views: int = 10) -> float:
    """Images/s of the frozen backbone's feature extraction as a run builds its data: ``views``
    augmented views and the evaluation view of every image."""
    cfg, resolved = assemble(
        [
            "model=pretrained",
            f"model.checkpoint={backbone.resolve()}",
            f"features.num_views={views}",
            f"features.cache_dir={workdir / 'rate'}",
            f"paths.output_dir={workdir / 'rate_run'}",
        ]
    )
    network = build_network(cfg)
    start = time.perf_counter()
    build_data(cfg, network, resolved.source)  # extracts and caches the features
    return (views + 1) * len(resolved.source) / (time.perf_counter() - start)


def head_epoch_seconds(workdir: Path, count: int = 60_000, batch: int = 256) -> float:
    """One epoch of the heads model=pretrained trains on a frozen ViT-S/16's cached features (384
    wide; heads model=pretrained's default 512 wide), on synthetic features of a CIFAR-10-sized
    dataset. The backbone is built with random weights (only its width matters)."""
    cfg, _ = assemble(
        [
            "model=pretrained",
            "model.name=vit_small_patch16_224",
            "model.pretrained=false",
            f"data.batch_size={batch}",
            f"paths.output_dir={workdir / 'heads_run'}",
        ]
    )
    module = build_module(cfg, build_network(cfg))
    network = module.network
    network.read_cached_features()  # as a frozen run's heads read cached features
    optimizer = module.optimizer_factory(params=[p for p in module.parameters() if p.requires_grad])
    views = torch.randn(2, count, network.backbone.num_features)
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
    parser.add_argument(
        "--cifar-images", type=int, default=60_000, help="images of the synthetic heads epoch"
    )
    parser.add_argument("--extra", nargs="+", default=[], help="overrides added to the frozen runs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    end_to_end = json.loads((args.backbone.parents[1] / "final_metrics.json").read_text())
    rows = [{"run": "end-to-end VTCC (the backbone's own run)", **end_to_end}]
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        rate = extraction_rate(args.backbone, workdir)
        for objective in ("contrastive", "scan"):
            rows.append(frozen_run(args.backbone, objective, args.epochs, workdir, args.extra))
        cifar_epoch = head_epoch_seconds(workdir, args.cifar_images)
    print(f"feature extraction: {rate:.0f} images/s (views included), CPU threads {torch.get_num_threads()}")
    print(
        f"head training on CIFAR-10-sized cached features ({args.cifar_images:,} x 384, batch 256, heads 512 wide): "
        f"{cifar_epoch:.1f} s/epoch"
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
