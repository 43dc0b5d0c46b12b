"""Reading a config file into plain data, with limits checked before any value is built.

A config file is hostile input too: a 10 MB file, a 20,000-deep nesting, a YAML alias bomb or a
duplicated key must give a clear error, not a crash, a hang or gigabytes of memory. So:
- the file is at most MAX_BYTES and must be UTF-8;
- nesting deeper than MAX_DEPTH is refused while the document is composed (before Python's
  recursion limit is anywhere near);
- aliases are bounded (MAX_ALIASES), and so is the data they expand to (MAX_NODES values in all,
  counted while walking the finished tree with a budget, so a bomb is refused after MAX_NODES
  steps, never expanded);
- a key given twice in one mapping is an error (PyYAML silently keeps the last one).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

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

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlLimitError(f"{_where(self.peek_event())}more than {MAX_ALIASES} aliases")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlLimitError(f"{_where(self.peek_event())}nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

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


def _where(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""


def decode(data: bytes) -> str:
    """The file's text; YamlLimitError when it is too large or not UTF-8."""
    if len(data) > MAX_BYTES:
        raise YamlLimitError(f"the file is {len(data)} bytes; at most {MAX_BYTES} are read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlLimitError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}") from None


def load(text: str) -> Any:
    """The document as plain data (dicts, lists, scalars). YamlLimitError for every problem."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlLimitError(f"the document is longer than {MAX_BYTES} bytes")
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
    _count_nodes(document)
    return document


def _count_nodes(document: Any) -> None:
    """Walk the tree with a budget: aliases share objects, so the walk sees what they expand to."""
    budget = MAX_NODES
    stack = [document]
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            raise YamlLimitError(f"the document expands to more than {MAX_NODES} values (aliases?)")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
