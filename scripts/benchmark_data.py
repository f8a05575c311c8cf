"""Input-pipeline throughput: folder decoding and batched augmentation, in images/s.

Usage: .venv/bin/python scripts/benchmark_data.py [--images 1000] [--device cpu|cuda] [--json out.json]
           [--batch 128] [--sizes 32 224]
Writes a temporary folder of JPEGs (256 x 256, like typical photos scaled down), decodes it
with vtcc's folder loader, then times each augmentation preset (augment=small, cc, vtcc as a run
on that folder resolves them: vtcc.config.resolve) on uint8 batches.
Tiny (a test): --images 10 --batch 4 --sizes 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vtcc.api.compose import compose_config
from vtcc.build import prepare_run
from vtcc.config.validate import validate_config
from vtcc.data import TwinViewAugmentation, load_image_folder

PRESETS = ("small", "cc", "vtcc")


def write_jpegs(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(base).resize((256, 256), Image.Resampling.BILINEAR).save(
            folder / f"{i}.jpg", quality=90
        )


def preset(folder: Path, size: int, batch: int, name: str, output_dir: Path) -> TwinViewAugmentation:
    """``augment=<name>`` as a run on ``folder`` at ``size`` px trains with it (ImageNet's
    statistics, as photos get)."""
    overrides = [
        "data=folder",
        f"data.root={folder}",
        f"data.image_size={size}",
        f"data.batch_size={batch}",
        "data.mean=[0.485,0.456,0.406]",
        "data.std=[0.229,0.224,0.225]",
        f"augment={name}",
        f"paths.output_dir={output_dir}",
    ]
    cfg = compose_config("train", overrides)
    validate_config(cfg)
    return prepare_run(cfg, overrides).source.train_transform


def time_augmentation(augment: TwinViewAugmentation, batch: torch.Tensor, repeats: int) -> float:
    augment(batch)  # warm-up
    if batch.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        augment(batch)
    if batch.is_cuda:
        torch.cuda.synchronize()
    return repeats * len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        write_jpegs(folder, args.images)
        for size in args.sizes:
            start = time.perf_counter()
            arrays = load_image_folder(folder, image_size=size)
            rows.append(
                {
                    "stage": "decode folder (JPEG 256 px)",
                    "size": size,
                    "images_per_s": len(arrays) / (time.perf_counter() - start),
                }
            )
        for size in args.sizes:
            batch = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8, device=args.device)
            for name in PRESETS:
                augment = preset(folder, size, args.batch, name, Path(scratch) / "run")
                repeats = 10 if size <= 32 else 2
                rate = time_augmentation(augment.to(args.device), batch, repeats)
                rows.append({"stage": f"augment={name} (two views)", "size": size, "images_per_s": rate})
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}")
    print(f"{'stage':32s} {'px':>4s} {'images/s':>10s}")
    for row in rows:
        print(f"{row['stage']:32s} {row['size']:4d} {row['images_per_s']:10.0f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
