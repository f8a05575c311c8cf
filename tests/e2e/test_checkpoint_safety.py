"""A checkpoint is data: its stored config may construct only what vtcc allows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import run_cli
from vtcc.utils.allowlist import disallowed_targets, is_allowed
from vtcc.utils.cli import CONFIG_DIR

CONF = Path(CONFIG_DIR)


@pytest.mark.parametrize(
    "target",
    [
        "shutil.copyfile",  # Hydra's own blocklist lets it through
        "builtins.exec",
        "os.system",
        "vtcc.predict.shutil.copyfile",  # a vtcc module's import is not vtcc's
        "vtcc.predict.sort_into_folders",  # vtcc's own, but not something a run config builds
        "torch.optim.Optimizer.zero_grad",
        "torch.optim.sys",
        "torch.save",
        "kornia.augmentation.torch.save",
        "timm.create_model",  # only through vtcc's model builders
    ],
)
def test_anything_but_the_allowlist_is_refused(target):
    assert not is_allowed(target)


@pytest.mark.parametrize(
    "target",
    ["torch.optim.AdamW", "torch.optim.lr_scheduler.CosineAnnealingLR", "kornia.augmentation.RandomAffine"],
)
def test_optimisers_schedulers_and_augmentations_are_allowed(target):
    assert is_allowed(target)


def test_every_target_in_vtccs_own_configs_is_allowed():
    configs = [yaml.safe_load(path.read_text()) for path in sorted(CONF.rglob("*.yaml"))]
    assert sum("_target_" in str(config) for config in configs) > 20
    for config in configs:
        assert disallowed_targets(config or {}) == []


def crafted_checkpoint(path: Path, victim: Path) -> None:
    config = {
        "data": {"_target_": "shutil.copyfile", "src": str(path), "dst": str(victim)},
        "model": {"_target_": "vtcc.models.vtcc_network", "num_clusters": 2},
        "module": {"_target_": "vtcc.module.ContrastiveClustering"},
    }
    torch.save({"vtcc_config": config, "state_dict": {}}, path)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_crafted_checkpoint_is_refused_before_anything_runs(tmp_path, command):
    crafted = tmp_path / "crafted.ckpt"
    victim = tmp_path / "written_by_the_checkpoint"
    crafted_checkpoint(crafted, victim)
    (tmp_path / "images").mkdir()
    extra = [f"input={tmp_path / 'images'}", f"output={tmp_path / 'out'}"] if command == "predict" else []
    result = run_cli(command, f"ckpt_path={crafted}", *extra, cwd=tmp_path)
    assert result.returncode == 2
    assert "shutil.copyfile" in result.stderr and "data._target_" in result.stderr
    assert "Traceback" not in result.stderr
    assert not victim.exists()
