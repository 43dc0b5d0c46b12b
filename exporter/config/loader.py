"""Reading a config file: bytes -> bounded YAML -> schema -> cross-section checks -> Config.

Every failure, whatever its cause (unreadable file, empty file, not UTF-8, over a limit, bad
YAML, bad values, dangling references, a directory where a file belongs), is a ConfigError
listing every problem with its path, so `check-config`, start-up and reload all exit or answer
the same way, and what `check-config` accepts the daemon runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from . import filesystem, references, yamlfile
from .collectors import DECLARED
from .errors import ConfigError, Problem, problems_of, render
from .model import Config


@functools.cache
def _adapter(collectors: int) -> TypeAdapter[Config]:
    """The validator of Config with this many collectors declared (model.declare adds some)."""
    return TypeAdapter(Config)


def default_config() -> Config:
    return Config()


def load_config(path: str | None) -> Config:
    """Read and validate a config file; None means the built-in defaults."""
    if path is None:
        return default_config()
    try:
        with open(path, "rb") as handle:
            data = handle.read(yamlfile.MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, [f"cannot read file: {exc.strerror or exc}"]) from None
    try:
        text = yamlfile.decode(data)
    except yamlfile.YamlLimitError as exc:
        raise ConfigError(path, [str(exc)]) from None
    return parse_config(text, path, empty_ok=False)


# A file that says nothing is more likely a mistake (a truncated deploy, a wrong mount) than a
# wish for the defaults, which run without --config.file or with `{}`.
EMPTY_FILE = (
    "the file holds no settings (it is empty or only comments); write {} to run the built-in defaults"
)


def parse_config(text: str, source: str = "<string>", empty_ok: bool = True) -> Config:
    try:
        raw = yamlfile.load(text)
    except yamlfile.YamlLimitError as exc:
        raise ConfigError(source, [str(exc)]) from None
    if raw is None and not empty_ok:
        raise ConfigError(source, [EMPTY_FILE])
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, ["top level must be a mapping"])
    if not all(isinstance(key, str) for key in raw):
        raise ConfigError(source, ["top-level keys must be strings"])
    problems: list[Problem] = []
    config = None
    try:
        config = _adapter(len(DECLARED)).validate_python(raw)
    except ValidationError as exc:
        problems += problems_of(exc, Config)
    except RecursionError:  # the YAML limits keep this away; never a traceback anyway
        problems.append(Problem((), "nested too deeply"))
    problems += references.check(raw)
    problems += filesystem.check(raw)
    if problems or config is None:
        raise ConfigError(source, render(problems, Config))
    config = _fit_defaults(config, raw)
    object.__setattr__(config, "source", source)  # frozen: set once, before anyone sees it
    return config


def _fit_defaults(config: Config, raw: dict[str, Any]) -> Config:
    """Defaults that name services, Redis instances or engines the file does not have forget them
    (the default probes point at the default services; with other services they point at nothing)."""
    services = {service.name for service in config.services}
    others = {redis.name for redis in config.redis} | {engine.name for engine in config.engines}

    def fit(items: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            item if item.service in services else dataclasses.replace(item, service=None) for item in items
        )

    changes: dict[str, Any] = {}
    for section in ("targets", "engines", "logs"):
        if section not in raw:
            changes[section] = fit(getattr(config, section))
    if "services" not in raw:
        changes["services"] = tuple(
            dataclasses.replace(s, depends_on=tuple(n for n in s.depends_on if n in services | others))
            for s in config.services
        )
    return dataclasses.replace(config, **changes) if changes else config


def json_schema() -> str:
    """The config file's JSON Schema (for editors: completion and checking as you type)."""
    schema = _adapter(len(DECLARED)).json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "autoglm-exporter configuration"
    return json.dumps(schema, indent=2, sort_keys=True)
