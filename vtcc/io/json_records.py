"""Typed records from JSON: plain values checked against a small declared schema.

:func:`read_json_record` parses a JSON file into plain typed values checked against a schema of
:class:`Int`, :class:`Float`, :class:`Bool`, :class:`Str`, :class:`List`, :class:`Record` and
:class:`Maybe`; a string anywhere in the file that holds ``${`` is refused (nothing read from a
data file is ever resolved as an interpolation), and so is a wrong type or a value out of range,
in one line naming the file and the field (:class:`~vtcc.io.reader.UnreadableFile`).

Core layer: the standard library and :mod:`vtcc.io.reader` only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vtcc.io.reader import UnreadableFile, one_line, read_bytes, reader

INTERPOLATION = "${"
JSON_LIMIT = 64 * 2**20  # bytes: an index or metadata file larger than this is not one vtcc wrote


class Invalid(Exception):
    """A value that does not fit its field (raised inside the schema, reported with the file)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}"
    )


class Field:
    expected = "a value"

    def check(self, value: Any, field: str) -> Any:
        raise NotImplementedError

    def wrong(self, value: Any, field: str) -> Invalid:
        return Invalid(field, f"must be {self.expected}, not {_type_name(value)}")


class Int(Field):
    def __init__(self, low: int | None = 0, high: int | None = 2**53) -> None:
        self.low, self.high = low, high
        self.expected = f"an integer in [{low}, {high}]"

    def check(self, value: Any, field: str) -> int:
        if type(value) is not int:
            raise self.wrong(value, field)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise Invalid(field, f"must be an integer in [{self.low}, {self.high}], not {value}")
        return value


class Float(Field):
    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        self.low, self.high = low, high
        self.expected = f"a finite number in [{low}, {high}]"

    def check(self, value: Any, field: str) -> float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise self.wrong(value, field)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise Invalid(field, f"must be {self.expected}, not {value}")
        return float(value)


class Bool(Field):
    expected = "true or false"

    def check(self, value: Any, field: str) -> bool:
        if type(value) is not bool:
            raise self.wrong(value, field)
        return value


class Str(Field):
    def __init__(self, max_length: int = 4096, choices: tuple[str, ...] | None = None) -> None:
        self.max_length, self.choices = max_length, choices
        self.expected = (
            f"one of {', '.join(choices)}" if choices else f"a string of at most {max_length} characters"
        )

    def check(self, value: Any, field: str) -> str:
        if type(value) is not str or len(value) > self.max_length or "\x00" in value:
            raise self.wrong(value, field)
        if self.choices is not None and value not in self.choices:
            raise Invalid(field, f"must be {self.expected}")
        return value


class List(Field):
    """A list of ``item``; ``lengths``: the only lengths allowed (else ``min_length`` to ``max_length``)."""

    def __init__(
        self,
        item: Field,
        min_length: int = 0,
        max_length: int = 2**32,
        lengths: tuple[int, ...] | None = None,
    ) -> None:
        self.item, self.min_length, self.max_length, self.lengths = item, min_length, max_length, lengths
        self.expected = (
            f"a list of {' or '.join(map(str, lengths))} items"
            if lengths
            else f"a list of {min_length} to {max_length} items"
        )

    def check(self, value: Any, field: str) -> list[Any]:
        if type(value) is not list:
            raise self.wrong(value, field)
        count = len(value)
        if (self.lengths and count not in self.lengths) or not self.min_length <= count <= self.max_length:
            raise Invalid(field, f"must be {self.expected}, not {count}")
        return [self.item.check(item, f"{field}[{index}]") for index, item in enumerate(value)]


class Maybe(Field):
    """``field`` or null (a missing key reads as null)."""

    def __init__(self, field: Field) -> None:
        self.field = field
        self.expected = f"{field.expected} or null"

    def check(self, value: Any, field: str) -> Any:
        return None if value is None else self.field.check(value, field)


class Record(Field):
    """An object with the declared fields (each required unless :class:`Maybe`); keys it does not
    declare are dropped (never passed on), after the whole file was checked for ``${``."""

    expected = "an object"

    def __init__(self, **fields: Field) -> None:
        self.fields = fields

    def check(self, value: Any, field: str = "") -> dict[str, Any]:
        if type(value) is not dict:
            raise self.wrong(value, field or "the file")
        checked = {}
        for name, kind in self.fields.items():
            where = f"{field}.{name}" if field else name
            if name not in value and not isinstance(kind, Maybe):
                raise Invalid(where, "is missing")
            checked[name] = kind.check(value.get(name), where)
        return checked


def find_interpolation(value: Any, field: str = "") -> str | None:
    """The first field (key path) of plain data whose key or string value holds ``${``."""
    stack = [(value, field)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if INTERPOLATION in node:
                return where or "the top level"
        elif isinstance(node, dict):
            for key, child in node.items():
                name = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and INTERPOLATION in key:
                    return name
                stack.append((child, name))
        elif isinstance(node, list | tuple):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(node))
    return None


def refuse_interpolation(value: Any, where: Any, field: str = "") -> None:
    """One line when any string of ``value`` (plain data read from ``where``) holds ``${``."""
    found = find_interpolation(value, field)
    if found is not None:
        raise UnreadableFile(
            where,
            "holds an interpolation ('${'), which vtcc never reads from a data file",
            "this file was not written by vtcc as it is; do not use it",
            field=found,
        )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes | str, where: Any, fix: str = "") -> Any:
    """``data`` (JSON) as plain values (dicts, lists, strings, numbers, booleans, null), refused
    in one line naming ``where`` when malformed or when any string holds ``${``."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        value = json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = type(error).__name__ if isinstance(error, RecursionError) else str(error)
        raise UnreadableFile(where, f"is not readable JSON ({one_line(reason, 120)})", fix) from None
    refuse_interpolation(value, where)
    return value


def check_record(value: Any, schema: Field, where: Any, fix: str = "") -> Any:
    """Plain ``value`` read from ``where`` as the typed values ``schema`` declares (one line
    naming the file and the field otherwise)."""
    try:
        return schema.check(value, "")
    except Invalid as error:
        raise UnreadableFile(where, error.problem, fix, field=error.field) from None


def parse_json_record(data: bytes | str, schema: Field, where: Any, fix: str = "") -> Any:
    """``data`` (JSON) as the plain typed values ``schema`` declares; one line naming ``where``
    and the field otherwise."""
    return check_record(parse_json(data, where, fix), schema, where, fix)


def read_json(
    path: str | Path, fix: str = "", *, limit: int = JSON_LIMIT, inside: str | Path | None = None
) -> Any:
    """The JSON file at ``path`` as plain values, ``${`` refused (see :func:`parse_json`)."""
    return parse_json(read_bytes(path, limit, inside=inside), path, fix)


@reader("json")
def read_json_record(
    path: str | Path,
    schema: Field,
    fix: str = "",
    *,
    limit: int = JSON_LIMIT,
    inside: str | Path | None = None,
) -> Any:
    """The JSON file at ``path`` as the plain typed values ``schema`` declares (see the module
    docstring); a string holding ``${``, a wrong type or a value out of range is refused in one
    line naming the file and the field, ending with ``fix``."""
    return check_record(read_json(path, fix, limit=limit, inside=inside), schema, path, fix)
