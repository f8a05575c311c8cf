"""vtcc's imports as a fresh interpreter sees them, each check in a subprocess: the import-linter
contracts of pyproject.toml's ``[tool.importlinter]`` hold over vtcc and catch an upward import
(``make lint`` runs ``lint-imports``; tests/unit/test_layers.py places every module in its layer),
and the registry's first lookup alone registers every kind vtcc's sources register."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_layers import PACKAGE, ROOT, contracts
from vtcc.utils.cli import CONFIG_DIR

INSTALLED = Path(CONFIG_DIR).parent  # the vtcc package this interpreter imports


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` over the package ``vtcc`` in ``folder`` with its pyproject.toml."""
    command = "import sys; from importlinter.cli import lint_imports_command as lint; sys.exit(lint())"
    return subprocess.run(
        [sys.executable, "-c", command, "--no-cache", "--no-logo"],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},  # one line a contract
        timeout=120,
    )


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(contracts())} kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("errors.py", "from vtcc.build import build_object", "layers: apps > assembly"),  # core -> assembly
        ("models/heads.py", "from vtcc.data.batch import TrainingPair", "components: data"),  # models -> data
        ("losses/nt_xent.py", "from omegaconf import OmegaConf", "never the config system"),
    ],
)
def test_an_import_against_the_layers_breaks_a_contract(tmp_path, module, line, broken):
    """The contracts are not vacuous: one upward import (in a copy of the package) breaks them."""
    shutil.copytree(PACKAGE, tmp_path / "vtcc", ignore=shutil.ignore_patterns("__pycache__", "*.js", "conf"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "vtcc" / module).open("a") as handle:
        handle.write(f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    name = next(contract["name"] for contract in contracts() if broken in contract["name"])
    assert f"{name} BROKEN" in result.stdout.splitlines()


def test_every_module_that_registers_is_imported_before_the_first_lookup():
    """In a fresh interpreter, the first lookup alone registers every kind that vtcc's sources
    register: a module left out of registry.BUILTIN_MODULES (and imported by none of them) fails."""
    registering = sorted(
        ".".join(path.relative_to(INSTALLED.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in INSTALLED.rglob("*.py")
        if re.search(r"^@register\(", path.read_text(), re.MULTILINE) and path.name != "registry.py"
    )
    code = (
        "import json, sys; from vtcc import registry; registry.entries(); "
        f"print(json.dumps([m for m in {registering!r} if m not in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(registering) > 15 and json.loads(result.stdout.strip().splitlines()[-1]) == []
