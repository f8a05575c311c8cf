"""The package as a user installs it: build the wheel, install it into a fresh virtual environment
(torch from the same pins), then run vtcc-train, vtcc-eval and vtcc-predict from an empty folder.

Usage: .venv/bin/python scripts/check_wheel.py [--python python3] [--constraints constraints.txt]
(`make wheel-check`; CI runs it after the tests). Exits non-zero at the first step that fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]


def step(title: str, command: list[str], cwd: Path) -> str:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        print(
            f"FAILED {title} ({seconds:.0f} s): {' '.join(command)}\n{result.stdout[-2000:]}{result.stderr[-4000:]}"
        )
        raise SystemExit(1)
    print(f"ok     {title} ({seconds:.0f} s)")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="python3", help="the interpreter the fresh venv is made from")
    parser.add_argument("--constraints", type=Path, default=ROOT / "constraints.txt")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vtcc-wheel-"))
    try:
        dist = work / "dist"
        step(
            "build the wheel",
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(ROOT)],
            work,
        )
        wheel = next(dist.glob("vtcc-*.whl"))
        configs = [n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("vtcc/conf/")]
        if not any(n.endswith("conf/train.yaml") for n in configs):
            print(f"FAILED the wheel {wheel.name} has no vtcc/conf/train.yaml")
            raise SystemExit(1)
        print(f"ok     the wheel carries {len(configs)} config files")
        venv = work / "venv"
        step("make a fresh venv", [args.python, "-m", "venv", str(venv)], work)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        step("install the torch pins", [*pip, *TORCH_PINS], work)
        step(
            "install the wheel", [*pip, "-c", str(args.constraints.resolve()), str(wheel), *TORCH_PINS], work
        )

        user = work / "user"  # an empty folder, outside the checkout
        user.mkdir()
        binary = venv / "bin"
        help_text = step("vtcc-train --help", [str(binary / "vtcc-train"), "--help"], user)
        for option in ("digits", "folder", "vit_small", "pretrained", "scan", "ddp", "wandb"):
            if option not in help_text:
                print(f"FAILED vtcc-train --help does not list {option!r}")
                raise SystemExit(1)
        step("vtcc-train, 1 epoch", [str(binary / "vtcc-train"), "trainer.max_epochs=1"], user)
        runs = sorted((user / "outputs" / "train").glob("*/checkpoints/last.ckpt"))
        if len(runs) != 1 or not (runs[0].parents[1] / "environment.yaml").is_file():
            print(
                f"FAILED expected one run with last.ckpt and environment.yaml under {user / 'outputs/train'}"
            )
            raise SystemExit(1)
        page = runs[0].parents[1] / "report" / "report.html"
        if not page.is_file() or 'id="explorer-data"' not in page.read_text():  # explorer.js ships
            print(f"FAILED the run's report with its explorer: {page}")
            raise SystemExit(1)
        checkpoint = runs[0]
        step("vtcc-eval", [str(binary / "vtcc-eval"), f"ckpt_path={checkpoint}"], user)
        images = user / "images"
        write_pngs = (
            "import sys, numpy as np; from PIL import Image; from sklearn.datasets import load_digits; "
            "x = load_digits().images[:6]; "
            "[Image.fromarray((v * 16).clip(0, 255).astype(np.uint8)).save(f'{sys.argv[1]}/{i}.png') "
            "for i, v in enumerate(x)]"
        )
        images.mkdir()
        step("write 6 PNG digits", [str(binary / "python"), "-c", write_pngs, str(images)], user)
        step(
            "vtcc-predict",
            [
                str(binary / "vtcc-predict"),
                f"ckpt_path={checkpoint}",
                f"input={images}",
                "output=predictions",
            ],
            user,
        )
        table = user / "predictions" / "clusters.csv"
        rows = table.read_text().splitlines() if table.is_file() else []
        if len(rows) != 1 + 6:
            print(f"FAILED vtcc-predict should write a header and 6 rows to {table}, not {len(rows)} lines")
            raise SystemExit(1)
        metrics = json.loads((checkpoint.parents[1] / "final_metrics.json").read_text())
        print(
            f"ok     installed wheel trains, evaluates and predicts from {user.name}/ (1-epoch acc {metrics['acc']:.3f})"
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
