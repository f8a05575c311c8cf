"""One `vtcc-train` run of a benchmark script: its own run folder, timed, stopping the script on failure.
A helper of the benchmark scripts (no command of its own)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def run_vtcc_train(name: str, overrides: list[str], run_dir: Path) -> float:
    """Seconds the run took, from process start to exit (imports, data, training, evaluation, and
    the report when ``report=true`` is among the overrides; without it none is written)."""
    report = [] if any(o.startswith("report=") for o in overrides) else ["report=false"]
    command = [  # vtcc-train, from the interpreter that runs the script
        sys.executable,
        "-m",
        "vtcc.train",
        *overrides,
        *report,
        f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"{name}: failed\n{result.stderr[-3000:]}", file=sys.stderr)
        raise SystemExit(1)
    return time.perf_counter() - start
