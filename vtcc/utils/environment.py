"""What a run ran on: package versions, devices, commit and command line, recorded with every run.

A README figure someone cannot reproduce usually differs in one of these. ``vtcc-eval`` and
``vtcc-predict`` compare the recorded environment with their own and warn about what differs.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from vtcc.io.reader import read_bytes
from vtcc.io.writer import Writer

log = logging.getLogger("vtcc")

ENVIRONMENT_FILE = "environment.yaml"
ENVIRONMENT_KEY = "vtcc_environment"
PACKAGES = (
    "vtcc",
    "torch",
    "torchvision",
    "lightning",
    "timm",
    "kornia",
    "hydra-core",
    "omegaconf",
    "numpy",
    "scipy",
    "scikit-learn",
)
# Differences that can change a model's outputs or its scores (not, say, Hydra's version).
RESULT_AFFECTING = ("vtcc", "torch", "torchvision", "timm", "kornia", "numpy", "scikit-learn", "device")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(folder: Path | None = None) -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes), or None outside a git checkout."""
    folder = folder or Path(__file__).resolve().parents[2]
    if not (folder / ".git").exists():  # an installed wheel: no commit of ours to report
        return None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def device_description() -> str:
    """``cuda: <n> x <name>`` or ``cpu: <n> threads``: the kind of device decides kernels and precision."""
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"cuda: {count} x {torch.cuda.get_device_name(0)}"
    return f"cpu: {torch.get_num_threads()} threads"


def package_versions() -> dict[str, str | None]:
    return {name: _version(name) for name in PACKAGES}


def collect_environment(argv: list[str] | None = None) -> dict[str, Any]:
    cuda = torch.version.cuda
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "command": " ".join([Path(argv_[0]).name, *argv_[1:]]) if (argv_ := argv or sys.argv) else "",
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "torch_cuda_build": cuda,
        "cudnn": cudnn,
        "device": device_description(),
        "slurm_job_id": slurm_job_id(),  # a requeued job knows its own run folder by it
    }


def slurm_job_id() -> str | None:
    """The SLURM job this process runs in (the same when the scheduler requeues it), or None."""
    return os.environ.get("SLURM_JOB_ID") or None


def recorded_environment(folder: Path) -> dict[str, Any]:
    """The environment a run recorded in ``folder`` (``{}`` without a readable record)."""
    import yaml

    try:  # a regular file of at most 1 MiB (never a FIFO that would hang the read)
        recorded = yaml.safe_load(read_bytes(folder / ENVIRONMENT_FILE, 2**20))
    except (OSError, ValueError, yaml.YAMLError, RecursionError):  # UnreadableFile is a ValueError
        return {}
    return recorded if isinstance(recorded, dict) else {}


def write_environment(folder: Path, environment: dict[str, Any], writer: Writer | None = None) -> Path:
    import yaml

    path = folder / ENVIRONMENT_FILE
    return (writer or Writer(folder)).write_text(path, yaml.safe_dump(environment, sort_keys=False))


def environment_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``name recorded -> current`` for each difference that can change results."""
    differences = []
    for name in RESULT_AFFECTING:
        if name == "device":
            # the kind of device (cuda vs cpu), not its thread count
            old, new = (str(d).split(":")[0] if d else d for d in (recorded["device"], current["device"]))
        else:
            old = (recorded.get("packages") or {}).get(name)
            new = (current.get("packages") or {}).get(name)
        if old is not None and old != new:
            differences.append(f"{name} {old} -> {new}")
    return differences


def warn_if_environment_changed(recorded: dict[str, Any] | None, source: str) -> list[str]:
    """One warning line when this environment differs from the one ``source`` was trained in."""
    if not recorded:
        return []
    current = {"packages": package_versions(), "device": device_description()}  # no git calls here
    differences = environment_differences(recorded, current)
    if differences:
        log.warning(
            "%s was trained in another environment (%s): results may differ from the run's own",
            source,
            "; ".join(differences),
        )
    return differences
