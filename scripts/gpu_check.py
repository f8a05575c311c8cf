"""The one-command GPU check (`make gpu-check`): everything that needs a CUDA device, measured in one run.

On a bare GPU machine that has PyTorch (and, as the lent machines do, Lightning, timm, scipy and
scikit-learn) the missing packages travel as wheels (`make gpu-wheels` fills `.whl/` here):
  python3 scripts/gpu_check.py --wheels .whl --out gpu_check
installs them into a temporary folder, runs the `gpu`-marked tests, then the benchmarks:
ViT-small with the conv stem at 224 px, batch 128 and 256, fp32 / bf16-mixed / bf16-mixed + compile
(images/s, peak memory, utilisation of the measured bf16 matmul peak, full Lightning loop against
a plain PyTorch loop, augmentation against the step), feature extraction of ViT-S/16 and ViT-B/16,
and the time of a CIFAR-sized epoch extrapolated from the step. It writes `summary.json` and
`summary.md` under --out. Every step that fails (the wheels, the tests, a benchmark row, an
extraction) is named in the summary and on stderr, and the check exits 1.
Without CUDA it runs the measurements as a smoke check on the CPU (CI: `--steps 1`): the training
benchmark on the digits configuration in fp32, the extraction of ViT-S/16 on two images (not GPU
figures; the summary says so); the GPU tests are not run (`make test` skips them there).
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
# (configuration of scripts/benchmark.py, batch, precision) of each training benchmark row
GPU_TRAINING = [("vit_small_224", batch, precision) for batch in (128, 256) for precision in PRECISIONS]
CPU_TRAINING = [("digits", 64, "fp32")]  # without CUDA: the same path, seconds on a CPU
GPU_EXTRACTION = {"vit_small_patch16_224": 256, "vit_base_patch16_224": 256}  # model: batch
CPU_EXTRACTION = {"vit_small_patch16_224": 2}
CIFAR_IMAGES = 60_000


def install_wheels(wheels: Path, target: Path) -> dict[str, str]:
    """The carried wheels into ``target``, put first on the path of this and every child process."""
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if found:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        command += ["--upgrade", "--target", str(target), *map(str, found)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"pip install of {len(found)} wheels: exit {result.returncode}: {last_line(result.stderr)}"
            )
    paths = [str(target)] if found else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(ROOT), os.environ.get("PYTHONPATH", "")])}
    sys.path[:0] = [*paths, str(ROOT)]
    return env


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def environment() -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if info["cuda"]:
        info.update(device=torch.cuda.get_device_name(0), cuda_version=torch.version.cuda)
    return info


def gpu_tests(env: dict[str, str], timeout: int) -> dict:
    """``pytest -m gpu``: the device augmentation, CUDA RNG and bf16 + compile tests. ``error``:
    why the step failed (a failing test, none collected, a timeout)."""
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {
            "exit_code": None,
            "summary": f"timed out after {timeout} s",
            "error": f"timed out after {timeout} s",
        }
    tail = last_line(result.stdout)
    outcome = {"exit_code": result.returncode, "summary": tail, "output_tail": result.stdout[-3000:]}
    if result.returncode == 5:  # pytest: no tests collected
        outcome["error"] = "no gpu-marked tests were collected"
    elif result.returncode != 0:
        outcome["error"] = f"pytest exit {result.returncode}: {tail or last_line(result.stderr)}"
    return outcome


def training_benchmark(
    env: dict[str, str],
    config: str,
    batch: int,
    precision: str,
    steps: int,
    timeout: int,
    device: str = "cuda",
) -> dict:
    """scripts/benchmark.py on ``config`` in its own process; its JSON row, or ``error``."""
    row = {"config": config, "batch": batch, "precision": precision}
    with tempfile.TemporaryDirectory(prefix="vtcc_bench_") as folder:
        out = Path(folder) / "row.json"
        overrides = [f"data.batch_size={batch}", *PRECISIONS[precision]]
        command = [sys.executable, str(ROOT / "scripts/benchmark.py"), "--configs", config]
        command += ["--device", device, "--steps", str(steps), "--json", str(out), "--override", *overrides]
        try:
            result = subprocess.run(
                command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return {**row, "error": f"timed out after {timeout} s"}
        rows = json.loads(out.read_text()) if out.is_file() else []
    if result.returncode != 0 or len(rows) != 1:
        failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
        reason = (
            failed[-1] if failed else last_line(result.stderr) or f"benchmark.py exit {result.returncode}"
        )
        return {**row, "error": reason[:1500], "output_tail": result.stderr[-1500:]}
    measured = rows[0]
    epoch = CIFAR_IMAGES / measured["full_loop_img_s"] if measured.get("full_loop_img_s") else None
    return {**measured, **row, "cifar_epoch_seconds": epoch}  # the row names the precision as asked


def feature_extraction(name: str, batch: int = 256, steps: int = 10, device: str = "cuda") -> dict:
    """Frozen-backbone extraction (random weights) at 224 px in bf16: images/s."""
    import timm
    import torch

    model = timm.create_model(name, pretrained=False, num_classes=0).to(device).eval()
    images = torch.randn(batch, 3, 224, 224, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        for _ in range(min(3, steps)):
            model(images)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            model(images)
        sync()
    return {"model": name, "batch": batch, "images_per_s": batch * steps / (time.perf_counter() - start)}


def failures(summary: dict) -> list[str]:
    """Each step that failed, as one line naming it."""
    found = [f"wheels: {summary['wheels']['error']}"] if summary.get("wheels", {}).get("error") else []
    tests = summary.get("tests") or {}
    if tests.get("error"):
        found.append(f"gpu tests: {tests['error']}")
    for row in summary["training"]:
        if "error" in row:
            found.append(f"training {row['config']} batch {row['batch']} {row['precision']}: {row['error']}")
    for row in summary["extraction"]:
        if "error" in row:
            found.append(f"feature extraction {row['model']}: {row['error']}")
    return found


def markdown(summary: dict) -> str:
    env = summary["environment"]
    lines = [f"# vtcc GPU check\n\npython {env['python']}, torch {env['torch']}, CUDA: {env['cuda']}"]
    if env["cuda"]:
        lines.append(f"device: {env.get('device')}\n")
    else:
        lines.append(
            "\nNo CUDA device: the GPU tests were not run, and the measurements ran as a CPU smoke "
            "check (digits in fp32; extraction of two images). These are not GPU figures.\n"
        )
    if summary.get("tests"):
        lines.append(f"gpu tests: {summary['tests']['summary']}\n")
    if summary["training"]:
        lines.append("images/s count source images (two views each); MFU is against the matmul peak")
        lines.append("measured in the same run and dtype.\n")
        lines.append(
            "| config | batch | precision | full loop img/s | plain loop img/s | MFU | peak memory | CIFAR epoch s |"
        )
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in summary["training"]:
        if "error" in row:
            lines.append(f"| {row['config']} | {row['batch']} | {row['precision']} | failed | | | | |")
            continue
        lines.append(
            f"| {row['config']} | {row['batch']} | {row['precision']} | {row['full_loop_img_s']:.0f} | "
            f"{row['plain_loop_img_s']:.0f} | {row['utilisation']:.1%} | "
            f"{row['peak_memory_mb']:.0f} MB | {row['cifar_epoch_seconds']:.1f} |"
        )
    for row in summary["extraction"]:
        rate = f"{row['images_per_s']:.1f} images/s" if "images_per_s" in row else "failed"
        lines.append(f"\nfeature extraction {row['model']}: {rate}")
    failed = failures(summary)
    if failed:
        lines.append("\n## Failed\n")
        lines += [f"- {line}" for line in failed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "gpu_check")))
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each training benchmark row")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"wheels": {}, "environment": None, "tests": None, "training": [], "extraction": []}
    try:
        env = install_wheels(args.wheels, Path(tempfile.mkdtemp(prefix="vtcc_gpu_site_")))
    except RuntimeError as error:
        summary["wheels"]["error"] = str(error)[:1500]
        env = None
    summary["environment"] = environment()
    if env is not None:
        cuda = summary["environment"]["cuda"]
        device = "cuda" if cuda else "cpu"
        if cuda:
            summary["tests"] = gpu_tests(env, timeout=240)
        for config, batch, precision in GPU_TRAINING if cuda else CPU_TRAINING:
            summary["training"].append(
                training_benchmark(env, config, batch, precision, args.steps, timeout=120, device=device)
            )
        for name, batch in (GPU_EXTRACTION if cuda else CPU_EXTRACTION).items():
            try:
                row = feature_extraction(name, batch, steps=10 if cuda else 1, device=device)
            except Exception as error:  # a measurement that fails is reported, the others still run
                row = {"model": name, "error": repr(error)[:500]}
            summary["extraction"].append(row)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (args.out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    failed = failures(summary)
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
