"""The configuration file: strict YAML, validated once, every error reported with its path.

With no file at all the defaults watch the seed's setup: the Open-AutoGLM API on port 8080 and
the vLLM engine on port 8000 on this machine. Unknown keys are errors (a typo must not silently
turn a check off), and all problems are collected so a user fixes the file in one pass.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

DEFAULT_INTERVAL = 10.0
DEFAULT_TIMEOUT = 8.0
DEFAULT_JITTER = 1.0

KNOWN_COLLECTORS = ("process", "system")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]*$")


class ConfigError(Exception):
    """The file is unusable; `errors` lists every problem, each prefixed by its path."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"bad config {source}:\n  " + "\n  ".join(errors))


@dataclass(frozen=True)
class CollectorConfig:
    enabled: bool = True
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class ProcessMatch:
    """How to find a service's processes; a process matching ANY given rule belongs to it."""

    cmdline: str | None = None  # a regular expression searched in the NUL-joined command line
    exe: str | None = None  # the exact path of the executable
    pidfile: str | None = None
    port: int | None = None  # the TCP port it listens on


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    match: ProcessMatch
    include_children: bool = False
    port: int | None = None  # the port it is expected to listen on


@dataclass(frozen=True)
class Config:
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    jitter: float = DEFAULT_JITTER
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    collectors: dict[str, CollectorConfig] = field(default_factory=dict)
    services: tuple[ServiceConfig, ...] = ()
    source: str = "<defaults>"

    def collector(self, name: str) -> CollectorConfig:
        return self.collectors.get(name) or CollectorConfig(interval=self.interval, timeout=self.timeout)


DEFAULT_SERVICES = (
    ServiceConfig("open-autoglm", ProcessMatch(cmdline=r"(?i)open[-_]?autoglm", port=8080), port=8080),
    ServiceConfig("vllm", ProcessMatch(cmdline=r"vllm\.entrypoints|(^|/)vllm serve", port=8000), port=8000),
)


def default_config() -> Config:
    return _build({}, "<defaults>")


def load_config(path: str | None) -> Config:
    """Read and validate a config file; None means the built-in defaults."""
    if path is None:
        return default_config()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(path, [f"cannot read file: {exc.strerror}"]) from None
    return parse_config(text, path)


def parse_config(text: str, source: str = "<string>") -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}invalid YAML: {problem}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, ["top level must be a mapping"])
    return _build(raw, source)


class _Checker:
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


def _build(raw: dict[str, Any], source: str) -> Config:
    check = _Checker()
    top = check.mapping(raw, "", ("global", "paths", "collectors", "services"))

    glob = check.mapping(top.get("global"), "global", ("interval", "timeout", "jitter"))
    interval = check.duration(glob, "interval", "global", DEFAULT_INTERVAL)
    timeout = check.duration(glob, "timeout", "global", DEFAULT_TIMEOUT)
    jitter = DEFAULT_JITTER
    if "jitter" in glob:
        jitter = 0.0 if glob["jitter"] in (0, "0", "0s") else check.duration(glob, "jitter", "global", jitter)

    paths = check.mapping(top.get("paths"), "paths", ("proc", "sys"))
    proc_root = check.string(paths, "proc", "paths", "/proc") or "/proc"
    sys_root = check.string(paths, "sys", "paths", "/sys") or "/sys"

    collectors = _collectors(check, top.get("collectors"), interval, timeout)
    services = _services(check, top["services"]) if "services" in top else DEFAULT_SERVICES

    if check.errors:
        raise ConfigError(source, check.errors)
    return Config(interval, timeout, jitter, proc_root, sys_root, collectors, services, source)


def _collectors(check: _Checker, raw: Any, interval: float, timeout: float) -> dict[str, CollectorConfig]:
    section = check.mapping(raw, "collectors", KNOWN_COLLECTORS)
    result = {}
    for name in KNOWN_COLLECTORS:
        path = f"collectors.{name}"
        entry = check.mapping(section.get(name), path, ("enabled", "interval", "timeout"))
        result[name] = CollectorConfig(
            enabled=check.boolean(entry, "enabled", path, True),
            interval=check.duration(entry, "interval", path, interval),
            timeout=check.duration(entry, "timeout", path, timeout),
        )
    return result


def _services(check: _Checker, raw: Any) -> tuple[ServiceConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        check.fail("services", "must be a list")
        return ()
    services = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        path = f"services[{index}]"
        entry = check.mapping(item, path, ("name", "match", "include_children", "port"))
        if not isinstance(item, dict):
            continue
        name = _service_name(check, entry, path, seen)
        match = _process_match(check, entry.get("match"), f"{path}.match")
        children = check.boolean(entry, "include_children", path, False)
        port = check.port(entry, "port", path)
        if name and match:
            services.append(ServiceConfig(name, match, children, port if port is not None else match.port))
    return tuple(services)


def _service_name(check: _Checker, entry: dict[str, Any], path: str, seen: set[str]) -> str | None:
    name = check.string(entry, "name", path)
    if name is None:
        if "name" not in entry:
            check.fail(f"{path}.name", "is required")
        return None
    if not _NAME.match(name):
        check.fail(f"{path}.name", "must start with a letter or _ and hold only letters, digits, _ . -")
        return None
    if name in seen:
        check.fail(f"{path}.name", f"duplicate service name {name!r}")
        return None
    seen.add(name)
    return name


def _process_match(check: _Checker, raw: Any, path: str) -> ProcessMatch | None:
    rules: tuple[str, ...] = ("cmdline", "exe", "pidfile", "port")
    entry = check.mapping(raw, path, rules)
    before = len(check.errors)
    readers: dict[str, Callable[[dict[str, Any], str, str], Any]] = {
        "cmdline": check.regex,
        "exe": check.string,
        "pidfile": check.string,
        "port": check.port,
    }
    values = {rule: readers[rule](entry, rule, path) for rule in rules}
    if not any(value is not None for value in values.values()):
        if len(check.errors) == before:
            check.fail(path, "needs at least one of cmdline, exe, pidfile, port")
        return None
    return ProcessMatch(**values)
