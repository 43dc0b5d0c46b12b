"""Config errors as a user reads them: one line per problem, `path: message`, all of them at once.

Pydantic's errors are turned into our sentences (a missing key "is required", an unknown key
says which key was probably meant), and sorted in the order of the schema (unknown keys first,
then fields as declared, list items by index), so the report reads like the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """The file is unusable; `errors` lists every problem, each prefixed by its path."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"bad config {source}:\n  " + "\n  ".join(errors))


@dataclasses.dataclass(frozen=True)
class Problem:
    loc: Loc
    message: str


_MAPPING_TYPES = {
    "dataclass_type",
    "dataclass_exact_type",
    "model_type",
    "dict_type",
    "model_attributes_type",
}
_LIST_TYPES = {"tuple_type", "list_type", "iterable_type"}
_UNKNOWN_TYPES = {"unexpected_keyword_argument", "extra_forbidden"}
_MISSING_TYPES = {"missing", "missing_argument", "missing_keyword_only_argument"}
_MULTIPLE_TYPES = {"multiple_argument_values", "unexpected_positional_argument"}


def problems_of(error: ValidationError, root: type) -> list[Problem]:
    found = []
    for item in error.errors(include_url=False, include_input=False):
        loc = tuple(part for part in item["loc"] if not _is_wrapper(part))
        kind, message = item["type"], item["msg"]
        if kind in _UNKNOWN_TYPES and loc:
            message = "unknown key" + _hint(str(loc[-1]), _keys_at(root, loc[:-1]))
        elif kind in _MISSING_TYPES:
            message = "is required"
        elif kind in _MAPPING_TYPES:
            message = "must be a mapping"
        elif kind in _LIST_TYPES:
            message = "must be a list"
        elif kind in _MULTIPLE_TYPES:
            message = "cannot be read (give keys by name)"
        else:
            message = message.removeprefix("Value error, ")
            key, sep, rest = message.partition(": ")
            if sep and key in _keys_at(root, loc):  # "KEY: message" from a check of several keys
                loc, message = (*loc, key), rest
        found.append(Problem(loc, message))
    return found


def _is_wrapper(part: Any) -> bool:
    # pydantic adds the names of function validators and union branches to some locations
    return isinstance(part, str) and (part.startswith("function-") or part in ("[key]",))


def render(problems: Iterable[Problem], root: type) -> list[str]:
    ordered = sorted(dict.fromkeys(problems), key=lambda problem: _order(root, problem.loc))
    return [f"{path_text(p.loc)}: {p.message}" if p.loc else p.message for p in ordered]


def path_text(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _hint(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _keys_at(root: type, loc: Loc) -> tuple[str, ...]:
    """The keys the schema allows at `loc` (empty when it is not a mapping of the schema)."""
    kind = _type_at(root, loc)
    if kind is None or not dataclasses.is_dataclass(kind):
        return ()
    return tuple(_key_of(field) for field in dataclasses.fields(kind) if field.init)


def _type_at(root: type, loc: Loc) -> Any:
    kind: Any = root
    for part in loc:
        kind = _unwrap(kind)
        if isinstance(part, int):
            args = typing.get_args(kind)
            kind = args[0] if args else None
        elif dataclasses.is_dataclass(kind):
            fields = {_key_of(field): field for field in dataclasses.fields(kind)}
            kind = typing.get_type_hints(kind).get(fields[part].name) if part in fields else None
        else:
            return None
        if kind is None:
            return None
    return _unwrap(kind)


def _unwrap(kind: Any) -> Any:
    """The class behind Annotated[...] and X | None."""
    while True:
        origin = typing.get_origin(kind)
        if origin is typing.Annotated:
            kind = typing.get_args(kind)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
            kind = args[0] if len(args) == 1 else kind
            if len(args) != 1:
                return kind
        else:
            return kind


def _key_of(field: dataclasses.Field[Any]) -> str:
    """The YAML key of a field: `global_` (a Python keyword otherwise) is `global`."""
    return field.name.rstrip("_")


def _order(root: type, loc: Loc) -> tuple[tuple[int, int], ...]:
    key = []
    for depth, part in enumerate(loc):
        if isinstance(part, int):
            key.append((1, part))
            continue
        allowed = _keys_at(root, loc[:depth])
        key.append((1, allowed.index(part)) if part in allowed else (0, 0))  # unknown keys first
    return tuple(key)
