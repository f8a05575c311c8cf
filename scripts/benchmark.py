"""Where training time goes: full Lightning loop vs plain PyTorch loop, augmentation, FLOP utilisation, memory.

Usage: .venv/bin/python scripts/benchmark.py [--configs digits vit_small_32 vit_small_224 | --all]
                                              [--steps 20] [--device cpu|cuda] [--json out.json]
On a CPU the default is the digits configuration at 3 timed steps (`make bench`: about a minute on
2 cores); the ViT-small ones (seconds to minutes a step there) are opt-in: --all, or --configs
vit_small_32 vit_small_224. On a GPU: all, at 20 steps.
Each configuration runs in its own process so its peak memory is its own. Extra Hydra
overrides for every configuration: --override trainer.precision=bf16-mixed module.compile=true
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

CONFIGS = {
    "digits": [],  # the default `make train` setup
    "vit_small_32": ["model=vit_small", "model.patch_size=4", "data.image_size=32", "data.batch_size=128"],
    "vit_small_224": ["model=vit_small", "data.image_size=224", "data.batch_size=32"],
}


def matmul_peak_flops(device: str, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(overrides: list[str], device: str):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from vtcc.config.data_defaults import resolve_data_defaults
    from vtcc.utils.cli import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*overrides, "paths.output_dir=.", f"trainer.accelerator={device.split(':')[0]}"],
        )
    resolve_data_defaults(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = instantiate(cfg.module, network=instantiate(cfg.model))
    return cfg, datamodule, module


def timed_lightning_loop(cfg, datamodule, module, steps: int, warmup: int) -> float:
    """Images/s of trainer.fit (loading + augmentation + step), timed after ``warmup`` steps."""
    import lightning.pytorch as pl

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == warmup:
                sync(str(trainer.strategy.root_device))
                self.start = time.perf_counter()

        def on_train_end(self, trainer, *args):
            sync(str(trainer.strategy.root_device))
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        max_steps=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(module, datamodule=datamodule)
    return steps * datamodule.batch_size / clock.seconds


def plain_step_fn(module, optimizer, views, precision: str, device: str):
    dtype = torch.bfloat16 if precision.startswith("bf16") else None

    def step():
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            loss = module.training_step(views, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def run_one(name: str, steps: int, device: str, extra: list[str]) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    cfg, datamodule, module = build([*CONFIGS[name], *extra], device)
    batch_size = datamodule.batch_size
    images = datamodule.arrays.images[:batch_size].to(device)
    augment = datamodule.train_transform.to(device)
    for _ in range(2):
        views = augment(images)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        augment(images)
    sync(device)
    augment_rate = steps * batch_size / (time.perf_counter() - start)

    module = module.to(device)
    module.log = module.log_dict = lambda *args, **kwargs: None
    optimizer = module.optimizer_factory(params=[p for p in module.parameters() if p.requires_grad])
    step = plain_step_fn(module, optimizer, views, cfg.trainer.precision, device)
    for _ in range(3):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    step_seconds = (time.perf_counter() - start) / steps
    plain_rate = batch_size / step_seconds

    _, datamodule, module = build([*CONFIGS[name], *extra], device)  # fresh state for the full loop
    full_rate = timed_lightning_loop(cfg, datamodule, module, steps, warmup=3)
    dtype = torch.bfloat16 if cfg.trainer.precision.startswith("bf16") else torch.float32
    peak = matmul_peak_flops(device, dtype)
    achieved = counter.get_total_flops() / step_seconds
    if device.startswith("cuda"):
        memory_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        memory_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "config": name,
        "device": device,
        "precision": cfg.trainer.precision,
        "batch": batch_size,
        "image_size": cfg.data.image_size,
        "full_loop_img_s": full_rate,
        "plain_loop_img_s": plain_rate,
        "full_over_plain": full_rate / plain_rate,
        "augment_img_s": augment_rate,
        "augment_over_step": augment_rate / plain_rate,
        "step_tflop": counter.get_total_flops() / 1e12,
        "achieved_tflop_s": achieved / 1e12,
        "matmul_peak_tflop_s": peak / 1e12,
        "utilisation": achieved / peak,
        "peak_memory_mb": memory_mb,
        "peak_memory_mb_per_image": memory_mb / batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS))
    parser.add_argument("--all", action="store_true", help="every configuration, also on a CPU")
    parser.add_argument("--steps", type=int, help="timed steps (default: 20 on a GPU, 3 on a CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--override", nargs="*", default=[])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps is None:
        args.steps = 20 if args.device.startswith("cuda") else 3
    if args.single:
        print(json.dumps(run_one(args.single, args.steps, args.device, args.override)))
        return
    if args.configs is None:
        on_gpu = args.device.startswith("cuda") or args.all
        args.configs = list(CONFIGS) if on_gpu else ["digits"]
    rows = []
    for name in args.configs:
        command = [
            sys.executable,
            __file__,
            "--single",
            name,
            "--steps",
            str(args.steps),
            "--device",
            args.device,
        ]
        result = subprocess.run([*command, "--override", *args.override], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"{name}: failed\n{result.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    header = (
        f"{'config':15s} {'full img/s':>10s} {'plain img/s':>11s} {'full/plain':>10s} {'aug img/s':>10s} "
    )
    header += f"{'aug/step':>8s} {'TFLOP/s':>8s} {'peak':>7s} {'util':>6s} {'MB':>7s} {'MB/img':>7s}"
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.steps} timed steps")
    print(header)
    for r in rows:
        print(
            f"{r['config']:15s} {r['full_loop_img_s']:10.1f} {r['plain_loop_img_s']:11.1f} {r['full_over_plain']:10.2f} "
            f"{r['augment_img_s']:10.1f} {r['augment_over_step']:8.1f} {r['achieved_tflop_s']:8.3f} "
            f"{r['matmul_peak_tflop_s']:7.3f} {r['utilisation']:6.1%} {r['peak_memory_mb']:7.0f} "
            f"{r['peak_memory_mb_per_image']:7.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
