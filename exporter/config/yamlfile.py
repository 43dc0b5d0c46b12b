"""Reading a config file into plain data, with limits checked before any value is built.

A config file is hostile input too: a 10 MB file, a 20,000-deep nesting, a YAML alias bomb or a
duplicated key must give a clear error, not a crash, a hang or gigabytes of memory. So:
- the file is at most MAX_BYTES and must be UTF-8;
- nesting deeper than MAX_DEPTH is refused while the document is composed (before Python's
  recursion limit is anywhere near);
- aliases are bounded (MAX_ALIASES), and so is the data they expand to (MAX_NODES values in all,
  counted while the document is composed: each node's expanded size is known once it is built, so
  an alias adds its anchor's size, and a bomb is refused at the alias that crosses the limit,
  never expanded);
- a key given twice in one mapping is an error (PyYAML silently keeps the last one).
Every error names the line (and the column) where it was found.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import CollectionNode, MappingNode, Node

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_NODES = 100_000


class YamlLimitError(ValueError):
    """The document is over a limit or not well-formed; the message says where."""


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._values = 0  # values of the document so far, with what aliases expand to
        self._sizes: dict[int, int] = {}  # id(node) -> the values it holds, itself included

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlLimitError(f"{_where(event)}more than {MAX_ALIASES} aliases")
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:  # its anchor is still being built: the alias is inside what it names
                raise YamlLimitError(
                    f"{_where(event)}an alias inside the node it names (a recursive structure)"
                )
            self._count(size, event, "an alias here expands the document to")
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlLimitError(f"{_where(event)}nested deeper than {MAX_DEPTH} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        children: list[int] = [self._sizes[id(child)] for child in _children(node)]
        self._sizes[id(node)] = 1 + sum(children)
        self._count(1, event, "the document holds")
        return node

    def _count(self, values: int, event: Any, what: str) -> None:
        self._values += values
        if self._values > MAX_NODES:
            raise YamlLimitError(f"{_where(event)}{what} more than {MAX_NODES} values")

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key (a list as a key): PyYAML reports it below
                continue
            if duplicate:
                raise ConstructorError(
                    None, None, f"duplicate key {str(key)[:40]!r} in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _children(node: Node | None) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, CollectionNode) else []


def _where(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""


def decode(data: bytes) -> str:
    """The file's text; YamlLimitError when it is too large or not UTF-8."""
    if len(data) > MAX_BYTES:
        raise YamlLimitError(f"{_line_of(data, MAX_BYTES)}the file is longer than {MAX_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlLimitError(
            f"{_line_of(data, exc.start)}not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None


def _line_of(data: bytes, offset: int) -> str:
    """`line L, column C: ` of a byte offset (the column counts bytes: the text is not decoded)."""
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}: "


def load(text: str) -> Any:
    """The document as plain data (dicts, lists, scalars). YamlLimitError for every problem."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_BYTES:
        raise YamlLimitError(f"{_line_of(data, MAX_BYTES)}the document is longer than {MAX_BYTES} bytes")
    loader = None
    try:
        loader = _BoundedLoader(text)  # the reader already refuses some characters here
        document = loader.get_single_data()
    except YamlLimitError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlLimitError(f"{where}invalid YAML: {problem}") from None
    except RecursionError:  # a safety net: the depth limit above should always come first
        raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, OverflowError, TypeError) as exc:  # a scalar PyYAML cannot build (a huge int)
        raise YamlLimitError(f"a value cannot be read: {str(exc)[:120]}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return document
