"""One `vtcc-train` run of a benchmark script: its own run folder, timed, stopping the script on failure.
A helper of the benchmark scripts (no command of its own).

The run goes through the library as ``vtcc-train`` does (the same composition of ``conf/train.yaml``
with the overrides, then :func:`vtcc.train.train_run`: one resolve, one assembly), in the script's
own interpreter: torch and Lightning are imported once per script, not once per run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from vtcc.api.compose import compose_config
from vtcc.errors import user_error
from vtcc.train import train_run
from vtcc.utils.cli import one_line


def run_vtcc_train(name: str, overrides: list[str], run_dir: Path) -> float:
    """Seconds the run took (data, training, evaluation, and the report when ``report=true`` is
    among the overrides; without it none is written), the imports excepted."""
    report = [] if any(o.startswith("report=") for o in overrides) else ["report=false"]
    items = [*overrides, *report, f"paths.output_dir={run_dir}", "trainer.enable_progress_bar=false"]
    start = time.perf_counter()
    try:
        train_run(compose_config("train", items), items)
    except Exception as error:
        cause = user_error(error)
        if cause is None:  # not a mistake of the settings: the traceback, and the script fails
            raise
        print(f"{name}: failed: {one_line(cause)}", file=sys.stderr)
        raise SystemExit(1) from None
    return time.perf_counter() - start
