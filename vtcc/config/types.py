"""Does a config value fit a type annotation, and how is that type said in words.

Config values are plain data (None, bool, int, float, str, lists, mappings), so only the
annotations vtcc's and Lightning's constructors use are understood: ``int``, ``float`` (an int
is a number), ``bool`` (never an int), ``str``, ``None``, ``X | Y``, ``Literal[...]``,
``list`` / ``Sequence`` / ``tuple``, ``dict``, ``Path``; a ``Callable`` or a class is built from a
node with a ``_target_`` (checked on its own). ``Annotated[T, Check(...)]`` adds a range or a
pattern; ``Any``, unresolved forward references and unknown constructs accept anything.
:func:`with_range` puts a range on each number a type admits (the rules by parameter name of
:data:`vtcc.config.schema.RANGES`), and :func:`unranged_numbers` finds the numbers left without one.
"""

from __future__ import annotations

import collections.abc
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union, get_args, get_origin


@dataclass(frozen=True)
class Check:
    """A condition beyond the type: ``Annotated[float, Check(lambda v: v > 0, "> 0")]``; ``name``
    says the whole type in words instead (``"a device such as cpu"``)."""

    test: Callable[[Any], bool]
    words: str = ""
    name: str = ""


def at_least(low: float) -> Check:
    return Check(lambda v: v >= low, f">= {low}")


def above(low: float) -> Check:
    return Check(lambda v: v > low, f"> {low}")


def within(low: float, high: float, open_low: bool = False, open_high: bool = False) -> Check:
    """``low <= v <= high``; ``open_low`` / ``open_high`` leave out that end: ``in (0, 1]``."""

    def test(v: Any) -> bool:
        return (low < v if open_low else low <= v) and (v < high if open_high else v <= high)

    return Check(test, f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}")


def with_range(annotation: Any, check: Check) -> Any:
    """``annotation`` with ``check`` on each of its numbers: ``int | None`` -> ``Annotated[int,
    check] | None``, ``Sequence[float]`` -> ``Sequence[Annotated[float, check]]``; ``Any`` accepts any
    value but a number outside the range. Numbers that already carry a :class:`Check`, and
    ``Literal`` choices, are left as they are."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation in (int, float):
        return Annotated[annotation, check]
    if annotation is Any:
        return Annotated[Any, Check(lambda v: not _is_number(v) or check.test(v), check.words)]
    if origin is Annotated or origin is Literal or not args:
        return annotation
    ranged = tuple(arg if arg is Ellipsis else with_range(arg, check) for arg in args)
    if origin in (Union, types.UnionType):
        return Union[ranged]  # noqa: UP007 - annotations of any kind
    if origin is tuple or origin in SEQUENCES:
        return origin[ranged]
    if origin in MAPPINGS:
        return origin[args[0], ranged[1]]
    return annotation


def unranged_numbers(annotation: Any) -> list[Any]:
    """The numeric types (``int``, ``float``, or ``Any``) in ``annotation`` that no :class:`Check`
    bounds: ``[]`` when every number a config can give it has a declared range."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation in (int, float) or annotation is Any:
        return [annotation]
    if origin is Annotated and any(isinstance(m, Check) for m in annotation.__metadata__):
        return []
    if origin is Literal:
        return []
    return [found for arg in args if arg is not Ellipsis for found in unranged_numbers(arg)]


class _Skip:
    """A value that is not checked here: a reference to another key (checked there) or ``???``."""

    def __repr__(self) -> str:
        return "<not checked>"


SKIP = _Skip()

SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection)
MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_node(value: Any) -> bool:
    """A config node that Hydra builds an object from."""
    return isinstance(value, dict) and "_target_" in value


def matches(value: Any, annotation: Any) -> bool:
    """Whether a plain config ``value`` may be given for a parameter annotated ``annotation``."""
    if value is SKIP or annotation is Any or isinstance(annotation, str | typing.ForwardRef | typing.TypeVar):
        return True
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return matches(value, args[0]) and all(
            m.test(value) for m in annotation.__metadata__ if isinstance(m, Check)
        )
    if origin in (Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is Literal:  # True is not 1, 1 is not 1.0: the type must be the literal's own
        return any(value == arg and type(value) is type(arg) for arg in args)
    if annotation is None or annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return _is_number(value)
    if annotation is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(item, args[0]) for item in value)
        return not args or (len(value) == len(args) and all(map(matches, value, args)))
    if origin in SEQUENCES or annotation in SEQUENCES:
        return isinstance(value, list) and all(matches(item, args[0]) for item in value if args)
    if origin in MAPPINGS or annotation in MAPPINGS:
        return isinstance(value, dict) and all(matches(item, args[1]) for item in value.values() if args)
    if origin is collections.abc.Callable or annotation is collections.abc.Callable:
        return is_node(value)
    if isinstance(annotation, type):
        if issubclass(annotation, PurePath | os.PathLike):
            return isinstance(value, str)
        return is_node(value) or isinstance(value, annotation)
    return True  # a construct no config value is checked against


def _words(annotation: Any) -> list[str]:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        checks = [m for m in annotation.__metadata__ if isinstance(m, Check)]
        if any(m.name for m in checks):
            return [" ".join(m.name for m in checks if m.name)]
        words = " ".join(m.words for m in checks)
        return [f"{word} {words}".strip() for word in _words(args[0])]
    if origin in (Union, types.UnionType):
        words = list(dict.fromkeys(word for arg in args for word in _words(arg)))
        if "a path" in words and "a string" in words:  # str | Path: a path
            words.remove("a string")
        return sorted(words, key=lambda word: word == "null")  # null last
    if origin is Literal:
        return [cli(arg) for arg in args]
    if annotation is None or annotation is type(None):
        return ["null"]
    if annotation is bool:
        return ["true", "false"]
    simple = {int: "an integer", float: "a number", str: "a string"}
    if annotation in simple:
        return [simple[annotation]]
    if origin is tuple and args and args[-1] is not Ellipsis:
        kinds = {_plural(arg) or "values" for arg in args}
        return [f"a list of {len(args)} {kinds.pop() if len(kinds) == 1 else 'values'}"]
    if origin in (*SEQUENCES, tuple) or annotation in SEQUENCES:
        return [f"a list of {_plural(args[0])}" if args and _plural(args[0]) else "a list"]
    if origin in MAPPINGS or annotation in MAPPINGS:
        return ["a mapping"]
    if isinstance(annotation, type) and issubclass(annotation, PurePath | os.PathLike):
        return ["a path"]
    if origin is collections.abc.Callable or isinstance(annotation, type):
        return ["a config node with a _target_"]
    return ["a value"]


def _plural(annotation: Any) -> str | None:
    """``float`` -> ``numbers``; ``Annotated[float, Check(..., "> 0")]`` -> ``numbers > 0``."""
    if get_origin(annotation) is Annotated:
        checks = [m for m in annotation.__metadata__ if isinstance(m, Check)]
        base = PLURAL.get(get_args(annotation)[0])
        if base is None or any(m.name for m in checks):
            return None
        return " ".join([base, *(m.words for m in checks if m.words)])
    return PLURAL.get(annotation)


def describe(annotation: Any) -> str:
    """``int | Literal["auto"] | None`` -> ``"an integer, auto or null"``."""
    words = _words(annotation)
    if only_choices(annotation) and len(words) > 1:
        return "one of " + ", ".join(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def only_choices(annotation: Any) -> bool:
    """The annotation is a set of words (``Literal``, maybe ``| None``): a wrong word is unknown."""
    args = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return all(get_origin(a) is Literal or a is type(None) for a in args)


def cli(value: Any) -> str:
    """How a value is written on the command line: true, null, 0.5, [0.1,2.0], word."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(cli(item) for item in value) + "]"
    return str(value)


def _is_device(value: str) -> bool:
    import torch

    if value == "auto":
        return True
    try:
        torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


# a device setting (features.device, ...): in the core layer, so the components' signatures can say it
DEVICE = Annotated[str, Check(_is_device, name="auto or a torch device such as cpu, cuda, cuda:1 or mps")]
