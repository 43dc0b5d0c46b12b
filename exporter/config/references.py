"""Checks across sections: unique names, and every name a section refers to exists.

They read the raw YAML tree (defensively: any part may be malformed), so they are reported
together with the value errors of the same file, not only once the values are right.
"""

from __future__ import annotations

from typing import Any

from .errors import Problem
from .model import DEFAULT_ENGINES, DEFAULT_REDIS, DEFAULT_SERVICES
from .types import shown_value

NAMED_LISTS = ("services", "targets", "redis", "engines", "logs")


def check(raw: dict[str, Any]) -> list[Problem]:
    problems = []
    for section in NAMED_LISTS:
        problems += _unique_names(_items(raw, section), (section,))
    for index, log in enumerate(_items(raw, "logs")):
        problems += _unique_names(_items(log, "patterns"), ("logs", index, "patterns"))
    services = _names(raw, "services", DEFAULT_SERVICES)
    for section in ("targets", "engines", "logs"):
        for index, item in enumerate(_items(raw, section)):
            service = item.get("service")
            if isinstance(service, str) and service not in services:
                problems.append(
                    Problem(
                        (section, index, "service"), f"no service named {shown_value(service)} in services"
                    )
                )
    dependencies = services | _names(raw, "redis", DEFAULT_REDIS) | _names(raw, "engines", DEFAULT_ENGINES)
    for index, item in enumerate(_items(raw, "services")):
        depends_on = item.get("depends_on")
        for name in depends_on if isinstance(depends_on, list) else []:
            where = ("services", index, "depends_on")
            if name == item.get("name"):
                problems.append(Problem(where, "a service cannot depend on itself"))
            elif isinstance(name, str) and name not in dependencies:
                problems.append(Problem(where, f"no redis, engine or service named {shown_value(name)}"))
    return problems


def _items(raw: Any, key: str) -> list[dict[str, Any]]:
    """The mappings of a list section; other shapes are reported by the schema."""
    items = raw.get(key) if isinstance(raw, dict) else None
    return [item if isinstance(item, dict) else {} for item in items] if isinstance(items, list) else []


def _names(raw: dict[str, Any], section: str, defaults: tuple[Any, ...]) -> set[str]:
    if section not in raw:
        return {item.name for item in defaults}
    return {item["name"] for item in _items(raw, section) if isinstance(item.get("name"), str)}


def _unique_names(items: list[dict[str, Any]], where: tuple[str | int, ...]) -> list[Problem]:
    seen: set[str] = set()
    problems = []
    for index, item in enumerate(items):
        name = item.get("name")
        if not isinstance(name, str):
            continue
        if name in seen:
            problems.append(Problem((*where, index, "name"), f"duplicate name {shown_value(name)}"))
        seen.add(name)
    return problems
