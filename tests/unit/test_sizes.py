"""Sizes a reader can hold in mind: no module under vtcc/ longer than :data:`MODULE_LINES` lines,
no function or method longer than :data:`FUNCTION_LINES` (from its ``def`` line to its last line,
docstring included). A module that grows past it is split by what it holds; a function, into the
steps it takes. Each test lists every offender, longest first."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "vtcc"
SOURCES = sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)
MODULE_LINES = 400
FUNCTION_LINES = 60


def module_lines() -> dict[str, int]:
    """Each module's length in lines, by its path below the repository."""
    return {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines()) for path in SOURCES}


def function_lines() -> dict[str, int]:
    """Each function's and method's length in lines, as ``path:line name``."""
    found = {}
    for path in SOURCES:
        relative = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found[f"{relative}:{node.lineno} {node.name}"] = node.end_lineno - node.lineno + 1
    return found


def offenders(sizes: dict[str, int], limit: int) -> list[str]:
    over = sorted(((lines, name) for name, lines in sizes.items() if lines > limit), reverse=True)
    return [f"{name} ({lines} lines)" for lines, name in over]


def test_no_module_is_longer_than_400_lines():
    found = offenders(module_lines(), MODULE_LINES)
    assert not found, f"modules over {MODULE_LINES} lines (split them by what they hold):\n" + "\n".join(
        found
    )


def test_no_function_is_longer_than_60_lines():
    found = offenders(function_lines(), FUNCTION_LINES)
    assert not found, f"functions over {FUNCTION_LINES} lines (split them into their steps):\n" + "\n".join(
        found
    )


def test_the_counts_are_what_they_say():
    """A function's count runs from its ``def`` line to its last, decorators aside."""
    tree = ast.parse("@decorator\ndef f():\n    '''doc'''\n\n    return 1\n")
    (function,) = tree.body
    assert function.end_lineno - function.lineno + 1 == 4
    assert offenders({"a": 61, "b": 60, "c": 80}, 60) == ["c (80 lines)", "a (61 lines)"]
