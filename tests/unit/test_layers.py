"""vtcc's modules import only downward, through the layers of docs/architecture.md: core <-
components <- objectives <- config and checkpoint I/O <- assembly (vtcc/build.py) <- apps. The
contracts are pyproject.toml's ``[tool.importlinter]`` (``make lint`` runs ``lint-imports``); here:
every module has its layer, the contracts hold and catch an upward import, no import cycle, no
import of vtcc inside a function. And resolving builds nothing: a frozen spec from the composed
config and the data's facts, a new spec for the K search's choice."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from tests.conftest import compose_train
from vtcc.config.resolve import resolve
from vtcc.config.spec import DataFacts, RunSpec

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "vtcc"
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)

# Imports of vtcc inside a function, each with its reason; nothing else may import late.
LATE_IMPORTS = {
    # `import vtcc` stays light (no torch, no Lightning): vtcc.Clusterer is imported on first use
    ("vtcc/__init__.py", "vtcc.api"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in SOURCES}


def vtcc_imports(path: Path) -> list[tuple[str, bool]]:
    """Every vtcc module ``path`` imports, and whether the import sits inside a function."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [f"{child.module}.{alias.name}" for alias in child.names] + [child.module]
            for name in names:
                if name == "vtcc" or name.startswith("vtcc."):
                    while name not in MODULES:  # `from vtcc.x import name`: the module vtcc.x
                        name = name.rpartition(".")[0]
                    found.append((name, inside))
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found


def test_no_module_imports_vtcc_inside_a_function():
    late = {
        (str(path.relative_to(ROOT)), name)
        for path in SOURCES
        for name, inside in vtcc_imports(path)
        if inside and name != "vtcc"
    }
    assert late - LATE_IMPORTS == set(), (
        "import at the top of the module (its layer allows it, or move the code)"
    )
    assert LATE_IMPORTS <= late, "an allowed late import is gone: drop it from LATE_IMPORTS"


def import_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the import graph ``edges``, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def walk(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for imported in sorted(edges.get(module, ())):
            if state.get(imported) == 1:
                return [*path[path.index(imported) :], imported]
            if imported not in state and (cycle := walk(imported)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := walk(module)):
            return cycle
    return None


def test_no_import_cycle_among_vtcc_modules():
    """Every import counts, at the top of a module or not (the package vtcc itself aside: it
    only re-exports)."""
    edges = {
        name: {imported for imported, _ in vtcc_imports(path) if imported not in ("vtcc", name)}
        for name, path in MODULES.items()
    }
    assert import_cycle(edges) is None
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # it finds one


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_every_module_has_its_layer():
    """A new module is placed in the layers contract (docs/architecture.md says where)."""
    layers = contracts()[0]
    assert layers["type"] == "layers" and layers["containers"] == ["vtcc"]
    placed = {
        f"vtcc.{tail.strip()}" for layer in layers["layers"] for tail in layer.replace("|", ":").split(":")
    }
    unplaced = [
        name
        for name in MODULES
        if name not in ("vtcc", "vtcc.config", "vtcc.utils")  # packages whose modules are placed
        and not any(name == layer or name.startswith(f"{layer}.") for layer in placed)
    ]
    assert unplaced == []


@pytest.fixture
def npz(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    images = (rng.integers(0, 60, (40, 8, 8)) + 150 * labels[:, None, None]).astype(np.uint8)
    np.savez(tmp_path / "images.npz", x=images, y=labels)
    return tmp_path / "images.npz"


def test_resolve_builds_nothing_and_returns_a_frozen_spec_from_the_data_facts(tmp_path, npz):
    """The data's facts come from whoever asks (here made up: 5 classes, 30 images held at 12 px);
    the composed config is left as it was, the data node handed over is read-only."""
    cfg = compose_train(
        tmp_path / "run", ["data=npz", f"data.root={npz}", "data.batch_size=8"], resolve=False
    )
    composed = OmegaConf.to_yaml(cfg)
    asked = []

    def gather(data):
        asked.append(data)
        with pytest.raises(ReadonlyConfigError):
            data.batch_size = 4
        return DataFacts(length=30, train_length=30, num_classes=5, labeled=True, stored_size=12, in_chans=1)

    spec = resolve(cfg, [], gather)
    assert len(asked) == 1 and asked[0].root == str(npz)
    assert isinstance(spec, RunSpec) and OmegaConf.to_yaml(cfg) == composed
    assert spec.num_clusters == 5 and spec.config.num_clusters == 5  # K from the facts, not the file's 2
    assert spec.config.preprocessing == {"stored_size": 12, "in_chans": 1}
    with pytest.raises(ReadonlyConfigError):
        spec.config.num_clusters = 3
    with pytest.raises(AttributeError):
        spec.budget = 1.0  # type: ignore[misc]
    assert spec.container()["num_clusters"] == 5 and not spec.refines

    chosen = spec.with_k(3)
    assert chosen is not spec and chosen.num_clusters == 3 and chosen.refines
    assert chosen.config.k_search.chosen == 3 and chosen.config.k_search.refine_epochs == spec.refine_epochs
    assert OmegaConf.is_readonly(chosen.config)
    assert spec.num_clusters == 5 and spec.config.k_search.get("chosen") is None  # the first spec as it was


def test_more_clusters_than_the_facts_count_is_one_line(tmp_path, npz):
    from vtcc.errors import ConfigError

    cfg = compose_train(tmp_path / "run", ["data=npz", f"data.root={npz}", "num_clusters=40"], resolve=False)
    facts = DataFacts(length=30, train_length=30, num_classes=2, labeled=True, stored_size=8, in_chans=1)
    with pytest.raises(ConfigError, match="num_clusters=40 is more than the 30 images"):
        resolve(cfg, [], lambda data: facts)
