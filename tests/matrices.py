"""The lists the suite's matrices run over, read from vtcc's config groups (vtcc/conf) in one
place: a new option file joins every matrix of its group. Each matrix lives in one file, which
also holds what it does with a combination (the settings that make it small): model x objective
in integration/test_architecture.py (resolved on written data, built, one step; where vtcc refuses
the run, one line, and the parts built with one loss), the experiments in
integration/test_presets_build.py (the papers' values composed; resolved on written data with
their settings kept, stored as a checkpoint keeps them, built, one step). Every option of every
group also passes the type check (unit/test_config_types.py) and the stored-config check
(integration/test_stored_config.py)."""

from __future__ import annotations

from pathlib import Path

from vtcc.utils.cli import CONFIG_DIR


def options(group: str) -> list[str]:
    """The options of a config group: its yaml files' names, sorted."""
    return sorted(path.stem for path in Path(CONFIG_DIR, group).glob("*.yaml"))


MODELS = options("model")
OBJECTIVES = options("objective")
EXPERIMENTS = options("experiment")
EXPERIMENT_BASES = [name for name in EXPERIMENTS if name.endswith("_base")]  # a method's settings, no data
PAPER_EXPERIMENTS = [name for name in EXPERIMENTS if not name.endswith("_base")]  # a method on a dataset
