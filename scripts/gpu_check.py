"""The one-command GPU check (`make gpu-check`): everything that needs a CUDA device, measured in one run.

On a bare GPU machine that has PyTorch (and, as the lent machines do, Lightning, timm, scipy and
scikit-learn) the missing packages travel as wheels (`make gpu-wheels` fills `.whl/` here):
  python3 scripts/gpu_check.py --wheels .whl --out gpu_check
installs them into a temporary folder, runs the `gpu`-marked tests, then the benchmarks:
ViT-small with the conv stem at 224 px, batch 128 and 256, fp32 / bf16-mixed / bf16-mixed + compile
(images/s, peak memory, utilisation of the measured bf16 matmul peak, full Lightning loop against
a plain PyTorch loop, augmentation against the step), feature extraction of ViT-S/16 and ViT-B/16,
and the time of a CIFAR-sized epoch extrapolated from the step. It writes `summary.json` and
`summary.md` under --out. Without CUDA it says so in the summary, skips the GPU parts and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = {
    "fp32": ["trainer.precision=32-true"],
    "bf16": ["trainer.precision=bf16-mixed"],
    "bf16+compile": ["trainer.precision=bf16-mixed", "module.compile=true"],
}
CIFAR_IMAGES = 60_000


def install_wheels(wheels: Path, target: Path) -> dict[str, str]:
    """The carried wheels into ``target``, put first on the path of this and every child process."""
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if found:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        subprocess.run([*command, "--upgrade", "--target", str(target), *map(str, found)], check=True)
    paths = [str(target)] if found else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(ROOT), os.environ.get("PYTHONPATH", "")])}
    sys.path[:0] = [*paths, str(ROOT)]
    return env


def environment() -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if info["cuda"]:
        info.update(device=torch.cuda.get_device_name(0), cuda_version=torch.version.cuda)
    return info


def gpu_tests(env: dict[str, str], timeout: int) -> dict:
    """``pytest -m gpu``: the device augmentation, CUDA RNG and bf16 + compile tests."""
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    tail = result.stdout.strip().splitlines()[-1:] or [""]
    return {"exit_code": result.returncode, "summary": tail[0], "output_tail": result.stdout[-3000:]}


def training_benchmark(env: dict[str, str], batch: int, precision: str, steps: int, timeout: int) -> dict:
    """scripts/benchmark.py on ViT-small at 224 px in its own process; its JSON row."""
    out = Path(tempfile.gettempdir()) / f"vtcc_bench_{batch}_{precision.replace('+', '_')}.json"
    overrides = [f"data.batch_size={batch}", *PRECISIONS[precision]]
    command = [sys.executable, str(ROOT / "scripts/benchmark.py"), "--configs", "vit_small_224"]
    command += ["--device", "cuda", "--steps", str(steps), "--json", str(out), "--override", *overrides]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0 or not out.is_file():
        return {"batch": batch, "precision": precision, "error": result.stderr[-1500:]}
    row = json.loads(out.read_text())[0]
    epoch = CIFAR_IMAGES / row["full_loop_img_s"] if row.get("full_loop_img_s") else None
    return {"batch": batch, "precision": precision, **row, "cifar_epoch_seconds": epoch}


def feature_extraction(name: str, batch: int = 256, steps: int = 10) -> dict:
    """Frozen-backbone extraction (random weights) at 224 px in bf16: images/s."""
    import timm
    import torch

    model = timm.create_model(name, pretrained=False, num_classes=0).cuda().eval()
    images = torch.randn(batch, 3, 224, 224, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            model(images)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            model(images)
        torch.cuda.synchronize()
    return {"model": name, "images_per_s": batch * steps / (time.perf_counter() - start)}


def markdown(summary: dict) -> str:
    env = summary["environment"]
    lines = [f"# vtcc GPU check\n\npython {env['python']}, torch {env['torch']}, CUDA: {env['cuda']}"]
    if not env["cuda"]:
        return lines[0] + "\n\nNo CUDA device: the GPU tests and benchmarks were skipped.\n"
    lines.append(f"device: {env.get('device')}\n\ngpu tests: {summary['tests']['summary']}\n")
    lines.append("ViT-small with the conv stem at 224 px; images/s count source images (two views each);")
    lines.append("MFU is against the matmul peak measured in the same run and dtype.\n")
    lines.append(
        "| batch | precision | full loop img/s | plain loop img/s | MFU | peak memory | CIFAR epoch s |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for row in summary["training"]:
        if "error" in row:
            lines.append(f"| {row['batch']} | {row['precision']} | failed | | | | |")
            continue
        lines.append(
            f"| {row['batch']} | {row['precision']} | {row['full_loop_img_s']:.0f} | "
            f"{row['plain_loop_img_s']:.0f} | {row['utilisation']:.1%} | "
            f"{row['peak_memory_mb']:.0f} MB | {row['cifar_epoch_seconds']:.1f} |"
        )
    for row in summary["extraction"]:
        lines.append(
            f"\nfeature extraction {row['model']}: {row.get('images_per_s', row.get('error'))} images/s"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "gpu_check")))
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = install_wheels(args.wheels, Path(tempfile.mkdtemp(prefix="vtcc_gpu_site_")))
    summary: dict = {"environment": environment(), "tests": None, "training": [], "extraction": []}
    if summary["environment"]["cuda"]:
        summary["tests"] = gpu_tests(env, timeout=240)
        for batch in (128, 256):
            for precision in PRECISIONS:
                summary["training"].append(training_benchmark(env, batch, precision, args.steps, timeout=120))
        for name in ("vit_small_patch16_224", "vit_base_patch16_224"):
            try:
                summary["extraction"].append(feature_extraction(name))
            except Exception as error:  # a measurement that fails is reported, the others still run
                summary["extraction"].append({"model": name, "error": repr(error)[:500]})
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (args.out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
