"""Does a config value fit a type annotation, and how is that type said in words.

Config values are plain data (None, bool, int, float, str, lists, mappings), so only the
annotations vtcc's and Lightning's constructors use are understood: ``int``, ``float`` (an int
is a number), ``bool`` (never an int), ``str``, ``None``, ``X | Y``, ``Literal[...]``,
``list`` / ``Sequence`` / ``tuple``, ``dict``, ``Path``; a ``Callable`` or a class is built from a
node with a ``_target_`` (checked on its own). ``Annotated[T, Check(...)]`` adds a range or a
pattern; ``Any``, unresolved forward references and unknown constructs accept anything.
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
        kinds = {PLURAL.get(arg, "values") for arg in args}
        return [f"a list of {len(args)} {kinds.pop() if len(kinds) == 1 else 'values'}"]
    if origin in (*SEQUENCES, tuple) or annotation in SEQUENCES:
        return [f"a list of {PLURAL[args[0]]}" if args and args[0] in PLURAL else "a list"]
    if origin in MAPPINGS or annotation in MAPPINGS:
        return ["a mapping"]
    if isinstance(annotation, type) and issubclass(annotation, PurePath | os.PathLike):
        return ["a path"]
    if origin is collections.abc.Callable or isinstance(annotation, type):
        return ["a config node with a _target_"]
    return ["a value"]


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
