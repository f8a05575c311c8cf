"""Where training time goes: full Lightning loop vs plain PyTorch loop, augmentation, FLOP utilisation, memory.

Usage: .venv/bin/python scripts/benchmark.py [--configs digits vit_small_32 vit_small_224 | --all]
                                              [--steps 20] [--device cpu|cuda] [--json out.json]
On a CPU the default is the digits configuration at 3 timed steps (`make bench`: about a minute on
2 cores); the ViT-small ones (seconds to minutes a step there) are opt-in: --all, or --configs
vit_small_32 vit_small_224. On a GPU: all, at 20 steps.
Each configuration is assembled as `vtcc-train` assembles its run (composed, resolved, built by
vtcc.build); several run a process each so each one's peak memory is its own. Extra Hydra
overrides for every configuration: --override trainer.precision=bf16-mixed module.compile=true
A configuration that fails is named with its error, and the benchmark exits 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from vtcc.api.compose import compose_config
from vtcc.build import Run, build_run, build_trainer, prepare_run
from vtcc.config.validate import validate_config
from vtcc.data.batch import TrainingPair

CONFIGS = {
    "digits": [],  # the default `make train` setup
    "vit_small_32": ["model=vit_small", "model.patch_size=4", "data.image_size=32", "data.batch_size=128"],
    "vit_small_224": ["model=vit_small", "data.image_size=224", "data.batch_size=32"],
}


def matmul_peak_flops(device: str, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """FLOP/s of square matmuls, repeated for at least ``seconds`` after one untimed: 2,048-wide on a
    CPU (a fraction of a second each there), 8,192-wide on a GPU, where a 2,048 matmul takes
    microseconds and reaches a fraction of the device's peak (a low peak would overstate MFU)."""
    size, chunk = (8192, 10) if device.startswith("cuda") else (2048, 1)  # matmuls between syncs
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    sync(device)
    repeats, start = 0, time.perf_counter()
    while True:
        for _ in range(chunk):
            a @ b
        repeats += chunk
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * size**3 * repeats / elapsed


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(overrides: list[str], device: str, output_dir: str) -> tuple[DictConfig, Run]:
    """The run ``vtcc-train <overrides>`` would train, assembled as it does: composed, checked,
    resolved (every ``auto``), then built (network, objective, data)."""
    cfg = compose_config(
        "train",
        [
            *overrides,
            f"paths.output_dir={output_dir}",
            f"trainer.accelerator={device.split(':')[0]}",
            "callbacks=none",  # the timed loop writes no checkpoints
        ],
    )
    validate_config(cfg)
    prepared = prepare_run(cfg, overrides)
    return prepared.cfg, build_run(prepared.cfg, prepared.source)


def timed_lightning_loop(cfg: DictConfig, run: Run, steps: int, warmup: int) -> float:
    """Images/s of trainer.fit (loading + augmentation + step), timed after ``warmup`` steps."""

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == warmup:
                sync(str(trainer.strategy.root_device))
                self.start = time.perf_counter()

        def on_train_end(self, trainer, *args):
            sync(str(trainer.strategy.root_device))
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    trainer = build_trainer(
        cfg,
        [clock],
        [],
        devices=1,
        max_steps=warmup + steps,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(run.module, datamodule=run.datamodule)
    return steps * run.datamodule.batch_size / clock.seconds


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
    with tempfile.TemporaryDirectory(prefix="vtcc-bench-") as output_dir:
        return measure(name, steps, device, [*CONFIGS[name], *extra], output_dir)


def measure(name: str, steps: int, device: str, overrides: list[str], output_dir: str) -> dict:
    cfg, run = build(overrides, device, output_dir)
    datamodule, module = run.datamodule, run.module
    batch_size = datamodule.batch_size
    images = datamodule.model_channels(datamodule.arrays.images[:batch_size].to(device))
    augment = datamodule.train_transform.to(device)
    for _ in range(2):
        views = TrainingPair(*augment(images))  # what the datamodule hands a training step
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

    _, run = build(overrides, device, output_dir)  # fresh state for the full loop
    full_rate = timed_lightning_loop(cfg, run, steps, warmup=3)
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


def run_configs(names: list[str], steps: int, device: str, extra: list[str]) -> tuple[list[dict], dict]:
    """Each configuration's row, and the error of each one that failed. One configuration runs in
    this process; several run a process each, so each one's peak memory is its own."""
    rows, failures = [], {}
    for name in names:
        if len(names) == 1:
            try:
                rows.append(run_one(name, steps, device, extra))
            except Exception as error:  # reported below, and the benchmark exits 1
                traceback.print_exc()
                failures[name] = f"{type(error).__name__}: {error}".strip().splitlines()[0]
            continue
        command = [sys.executable, __file__, "--single", name, "--steps", str(steps), "--device", device]
        result = subprocess.run([*command, "--override", *extra], capture_output=True, text=True)
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines:
            print(f"{name}: failed (exit {result.returncode})\n{result.stderr[-3000:]}", file=sys.stderr)
            errors = [line for line in result.stderr.strip().splitlines() if line.strip()]
            failures[name] = errors[-1] if errors else f"exit {result.returncode}, no output"
            continue
        rows.append(json.loads(lines[-1]))
    return rows, failures


def main() -> int:
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
        return 0
    if args.configs is None:
        on_gpu = args.device.startswith("cuda") or args.all
        args.configs = list(CONFIGS) if on_gpu else ["digits"]
    rows, failures = run_configs(args.configs, args.steps, args.device, args.override)
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
    for name, error in failures.items():
        overrides = " ".join([*CONFIGS[name], *args.override]) or "none"
        print(f"FAILED {name} (overrides: {overrides}): {error}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
