"""Reading typed values out of a raw YAML tree while collecting every error with its path."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]*$")


class Checker:
    """Collects errors while reading typed values out of the raw YAML tree."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, "must be a mapping")
            return {}
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.fail(f"{path}.{key}" if path else str(key), f"unknown key{hint}")
        return value

    def duration(self, raw: dict[str, Any], key: str, path: str, default: float) -> float:
        if key not in raw:
            return default
        value = raw[key]
        where = f"{path}.{key}" if path else key
        seconds: float | None = None
        if isinstance(value, bool):
            seconds = None
        elif isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if seconds is None:
            self.fail(where, f"must be a duration like 10s, 500ms or 1m, got {value!r}")
            return default
        if seconds <= 0:
            self.fail(where, "must be > 0")
            return default
        return seconds

    def boolean(self, raw: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", f"must be true or false, got {value!r}")
            return default
        return value

    def string(self, raw: dict[str, Any], key: str, path: str, default: str | None = None) -> str | None:
        value = raw.get(key, default)
        if value is not None and (not isinstance(value, str) or not value):
            self.fail(f"{path}.{key}", "must be a non-empty string")
            return default
        return value

    def port(self, raw: dict[str, Any], key: str, path: str) -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            self.fail(f"{path}.{key}", f"must be a TCP port 1-65535, got {value!r}")
            return None
        return value

    def regex(self, raw: dict[str, Any], key: str, path: str) -> str | None:
        pattern = self.string(raw, key, path)
        if pattern is None:
            return None
        try:
            re.compile(pattern)
        except re.error as exc:
            self.fail(f"{path}.{key}", f"invalid regular expression: {exc}")
            return None
        return pattern

    def integer(self, raw: dict[str, Any], key: str, path: str, default: int, minimum: int = 0) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(f"{path}.{key}", f"must be a whole number >= {minimum}, got {value!r}")
            return default
        return value

    def choice(self, raw: dict[str, Any], key: str, path: str, default: str, choices: tuple[str, ...]) -> str:
        value = raw.get(key, default)
        if value not in choices:
            self.fail(f"{path}.{key}", f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return str(value)

    def url(self, raw: dict[str, Any], key: str, path: str, default: str | None = None) -> str | None:
        value = self.string(raw, key, path, default)
        if value is None:
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            self.fail(f"{path}.{key}", f"must be an http:// or https:// URL, got {value!r}")
            return default
        return value

    def address(self, raw: dict[str, Any], key: str, path: str, default: str | None = None) -> str | None:
        """HOST:PORT (an IPv6 host in brackets)."""
        value = self.string(raw, key, path, default)
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
            self.fail(f"{path}.{key}", f"must be HOST:PORT, got {value!r}")
            return default
        return value

    def string_map(self, raw: dict[str, Any], key: str, path: str) -> dict[str, str]:
        value = raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.fail(f"{path}.{key}", "must be a mapping of strings to strings")
            return {}
        return dict(value)

    def named_list(self, raw: Any, path: str) -> Iterator[tuple[str, dict[str, Any], str]]:
        """(path, item, name) for each mapping in a list whose items carry a unique, label-safe `name`.

        An item with a bad or missing name is still returned (with name "") so the rest of it is
        checked too; callers build objects only for items with a name.
        """
        if raw is None:
            return
        if not isinstance(raw, list):
            self.fail(path, "must be a list")
            return
        seen: set[str] = set()
        for index, item in enumerate(raw):
            where = f"{path}[{index}]"
            if not isinstance(item, dict):
                self.fail(where, "must be a mapping")
                continue
            name = item.get("name")
            if name is None:
                self.fail(f"{where}.name", "is required")
                name = ""
            elif not isinstance(name, str) or not NAME.match(name):
                self.fail(
                    f"{where}.name", "must start with a letter or _ and hold only letters, digits, _ . -"
                )
                name = ""
            elif name in seen:
                self.fail(f"{where}.name", f"duplicate name {name!r}")
                name = ""
            else:
                seen.add(name)
            yield where, item, name
