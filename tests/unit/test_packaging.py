"""The package a user installs: configs inside it, --help that lists every choice, the environment
each run records, and optional loggers that say which extra to install. (The wheel itself is built
and installed into a fresh venv by scripts/check_wheel.py, a CI step.)"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

import vtcc
from vtcc.utils.app_help import describe, groups_of
from vtcc.utils.cli import CONFIG_DIR
from vtcc.utils.environment import (
    collect_environment,
    environment_differences,
    warn_if_environment_changed,
)


def test_configs_ship_inside_the_package():
    """A wheel carries vtcc/ only: the configs must be under it, and be what the package data names."""
    assert Path(CONFIG_DIR) == Path(vtcc.__file__).parent / "conf"
    files = [p for p in Path(CONFIG_DIR).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert files and all(p.suffix == ".yaml" for p in files)  # what package-data conf/**/*.yaml ships
    pyproject = (Path(vtcc.__file__).parents[1] / "pyproject.toml").read_text()
    assert 'vtcc = ["conf/**/*.yaml", "*.js"]' in pyproject
    data = [
        p for p in Path(vtcc.__file__).parent.glob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert data and all(p.suffix == ".js" for p in data)  # the report's explorer script ships with it


@pytest.mark.parametrize("app", ["train", "eval", "predict"])
def test_help_lists_every_option_of_every_group_with_its_line(app):
    """``vtcc-<app> --help`` prints hydra.help.template: it must hold every option and its description."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(app, return_hydra_config=True)
    template = cfg.hydra.help.template
    assert template.startswith(f"vtcc-{app}: ")
    groups = groups_of(Path(CONFIG_DIR), app)
    for group in groups:
        assert f"\n{group}:\n" in template
        for path in Path(CONFIG_DIR, group).glob("*.yaml"):
            description = describe(path)
            assert description, f"{path.relative_to(CONFIG_DIR)} has no header comment"
            assert re.search(rf"\n  \[?{path.stem}\]?\s+{re.escape(description)}\n", template), path.stem
    if app == "train":
        assert {"data", "augment", "model", "objective", "strategy", "experiment", "logger"} <= set(groups)
        assert re.search(r"\n  \[digits\]\s", template) and re.search(r"\n  \[auto\]\s", template)


def test_describe_takes_the_first_sentence_of_the_header(tmp_path):
    config = tmp_path / "x.yaml"
    header = "# @package _global_\n# VTCC (Ling et al. 2022) on X: an EXTRAPOLATION.\n# More.\n"
    config.write_text(header + "key: 1\n")
    assert describe(config) == "VTCC (Ling et al. 2022) on X: an EXTRAPOLATION"


def test_the_environment_names_versions_devices_and_the_command():
    environment = collect_environment(["/somewhere/bin/vtcc-train", "seed=3"])
    assert environment["command"] == "vtcc-train seed=3"
    assert environment["packages"]["torch"] == torch.__version__.split("+")[0]
    assert environment["packages"]["vtcc"] == vtcc.__version__
    assert set(environment["packages"]) >= {"torchvision", "lightning", "timm", "kornia", "hydra-core"}
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert environment["device"].startswith(expected)
    assert yaml.safe_load(yaml.safe_dump(environment)) == environment  # a readable, plain file


def test_only_result_changing_differences_are_reported():
    recorded = collect_environment([])
    current = {**recorded, "packages": dict(recorded["packages"])}
    assert environment_differences(recorded, current) == []
    current["packages"]["hydra-core"] = "9.9"  # composes configs: cannot change a result
    current["device"] = "cpu: 64 threads" if recorded["device"].startswith("cpu") else recorded["device"]
    assert environment_differences(recorded, current) == []
    current["packages"]["torch"] = "0.1.0"
    current["device"] = "cuda: 1 x H100" if recorded["device"].startswith("cpu") else "cpu: 2 threads"
    assert environment_differences(recorded, current) == [
        f"torch {recorded['packages']['torch']} -> 0.1.0",
        f"device {recorded['device'].split(':')[0]} -> {current['device'].split(':')[0]}",
    ]


def test_a_checkpoint_from_another_environment_gets_one_warning(caplog):
    recorded = collect_environment([])
    recorded["packages"] = {**recorded["packages"], "timm": "0.0.1"}
    with caplog.at_level(logging.WARNING, logger="vtcc"):
        assert warn_if_environment_changed(recorded, "run/last.ckpt") == [
            f"timm 0.0.1 -> {collect_environment([])['packages']['timm']}"
        ]
        assert warn_if_environment_changed(collect_environment([]), "run/last.ckpt") == []
    assert len(caplog.records) == 1 and "run/last.ckpt was trained in another environment" in caplog.text


@pytest.mark.parametrize("logger", ["wandb", "mlflow"])
def test_a_logger_without_its_extra_is_one_line_before_any_work(train_in_process, tmp_path, logger):
    from importlib.util import find_spec

    if find_spec(logger) is not None:
        pytest.skip(f"{logger} is installed here")
    code, stderr = train_in_process(f"logger={logger}")
    assert code == 2
    assert f"logger '{logger}' needs a package that is not installed: pip install 'vtcc[{logger}]'" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "run").exists()


def test_a_users_own_config_folder_joins_vtccs_groups(tmp_path):
    """The README's 'Your own configs' example: a data preset and an experiment from the user's folder."""
    (tmp_path / "data").mkdir()
    (tmp_path / "experiment").mkdir()
    (tmp_path / "data" / "leaves.yaml").write_text(
        "defaults:\n  - folder\nroot: /data/leaves\nnum_classes: 12\n"
    )
    (tmp_path / "experiment" / "leaves_long.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /data: leaves\n  - override /augment: cc\n"
        "trainer: {max_epochs: 300}\n"
    )
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra.searchpath=[file://{tmp_path}]", "experiment=leaves_long"])
    assert cfg.data.root == "/data/leaves" and cfg.data.num_classes == 12
    assert cfg.data._target_ == "vtcc.data.InMemoryDataModule"  # from vtcc's folder preset
    assert cfg.trainer.max_epochs == 300 and cfg.augment.view_a._target_ == "vtcc.data.rgb_view"


def test_the_torch_floor_is_above_the_releases_whose_weights_only_loader_could_run_code():
    """CVE-2025-32434: torch.load(weights_only=True) could be bypassed up to 2.5.1; vtcc relies on it."""
    import tomllib

    project = tomllib.loads((Path(vtcc.__file__).parents[1] / "pyproject.toml").read_text())["project"]
    floors = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"(torch|torchvision)>=([\d.]+)", requirement)
        if match:
            floors[match[1]] = tuple(int(part) for part in match[2].split("."))
    assert floors["torch"] >= (2, 6) and floors["torchvision"] >= (0, 21)
