"""The lists the suite's matrices run over, read from vtcc's config groups (vtcc/conf) in one
place: a new option file joins every matrix of its group. Each matrix test parametrizes over
these; what it does with a combination (the settings that make it small) stays in its own file:
model x objective in unit/test_configs.py (built, one loss) and integration/test_architecture.py
(resolved on written data, built, one step); the experiments in unit/test_configs.py,
unit/test_config_types.py, integration/test_presets_build.py, integration/test_stored_config.py
and integration/test_data_configs.py."""

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
