"""Reading images for training: data=shards (streamed, and in global order) against
data=folder_streaming, on the same written images.

Usage: .venv/bin/python scripts/benchmark_shards.py [--images 20000] [--side 32] [--shard-size 1000]
           [--workers 0 2] [--batch 256] [--root <scratch folder>]
Writes ``--images`` PNGs of ``--side`` px in 10 class folders (random textures; compressed size
about that of natural images of that side), converts them with ``vtcc-shards``, then times one
training epoch of each reader: decoding to the stored squares and stacking batches, no model (what
the loader costs a run). Prints the conversion time, the shards' size on disk and images/s.
Each reader is the data of a run (`data=folder_streaming` / `data=shards`), resolved as vtcc-train
resolves it (vtcc.config.resolve).
Tiny (a test): --images 20 --side 8 --shard-size 10 --workers 0 --batch 4
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vtcc.api.compose import compose_config
from vtcc.build import prepare_run
from vtcc.config.validate import validate_config
from vtcc.data.shard_writer import write_shards


def write_images(folder: Path, count: int, side: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    for index in range(count):
        label = index % 10
        pixels = np.roll(base, shift=(index * 7) % side, axis=0)
        pixels = (pixels // 2 + rng.integers(0, 128, (side, side, 3), dtype=np.uint8) // 2).astype(np.uint8)
        pixels[..., 0] = (label * 25 + pixels[..., 0] // 4).astype(np.uint8)
        path = folder / f"class_{label}" / f"{index:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)


def reader(overrides: list[str]):
    """The image datamodule of ``vtcc-train <overrides>``, resolved and set up for training."""
    cfg = compose_config("train", overrides)
    validate_config(cfg)
    return prepare_run(cfg, overrides).source


def epoch_rate(datamodule, batch: int) -> tuple[float, int]:
    """Images/s of one pass over the training loader, and the images it served."""
    loader = datamodule.train_dataloader()
    start, served = time.perf_counter(), 0
    for images, _, _ in loader:
        served += len(images)
    return served / (time.perf_counter() - start), served


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--root", type=Path, default=None)
    arguments = parser.parse_args()

    root = arguments.root or Path(tempfile.mkdtemp(prefix="vtcc-shards-bench-"))
    folder, shards = root / "images", root / "shards"
    start = time.perf_counter()
    write_images(folder, arguments.images, arguments.side)
    print(f"wrote {arguments.images} PNGs of {arguments.side} px in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    write_shards(folder, shards, arguments.shard_size)
    on_disk = sum(p.stat().st_size for p in shards.glob("*.tar")) / 2**20
    print(
        f"vtcc-shards: {time.perf_counter() - start:.1f} s, {on_disk:.1f} MiB in {len(list(shards.glob('*.tar')))} shards"
    )
    common = [
        f"data.image_size={arguments.side}",
        "data.in_chans=3",
        "data.mean=[0.5,0.5,0.5]",
        "data.std=[0.5,0.5,0.5]",
        f"data.batch_size={arguments.batch}",
        f"paths.output_dir={root / 'run'}",
    ]
    print("| reader | workers | images/s | images an epoch |")
    print("| --- | --- | --- | --- |")
    for workers in arguments.workers:
        readers = {
            "folder_streaming": ["data=folder_streaming", f"data.root={folder}"],
            "shards, order=stream": ["data=shards", f"data.root={shards}"],
            "shards, order=global": ["data=shards", f"data.root={shards}", "data.order=global"],
        }
        for name, data in readers.items():
            datamodule = reader([*data, *common, f"data.num_workers={workers}"])
            rate, served = epoch_rate(datamodule, arguments.batch)
            print(f"| {name} | {workers} | {rate:,.0f} | {served:,} |")
    if arguments.root is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
