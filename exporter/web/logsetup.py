"""Structured logs in the Prometheus style (logfmt or JSON) with a level that can change at run time.

Every text a line carries (the message, each field, a traceback) goes through the redactor, so
nothing logged carries a secret, whoever wrote the log call.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from ..logs.redact import redact

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
FORMATS = ("logfmt", "json")

# Attributes every LogRecord has; anything else came in through `extra=` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

ROOT_LOGGER = "autoglm_exporter"


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower().replace("warning", "warn"),
        "caller": f"{record.module}:{record.lineno}",
        "msg": redact(record.getMessage()),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD:
            # A field never replaces one of the line's own (extra={"level": ...} is not the severity).
            fields[f"field_{key}" if key in fields else key] = _shown(value)
    if record.exc_info:
        fields["err"] = redact(logging.Formatter().formatException(record.exc_info))
    return fields


def _shown(value: object) -> object:
    """Numbers and booleans as they are (JSON keeps their type), anything else as redacted text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\t'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


def configure(level: str, fmt: str) -> None:
    """Send our logs to stderr in the chosen format; called once at start."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libraries: warnings and up
    set_level(level)


def set_level(level: str) -> None:
    """Change our own log level while running (raises ValueError for an unknown level)."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}, expected one of {', '.join(LEVELS)}")
    logging.getLogger(ROOT_LOGGER).setLevel(LEVELS[level])


def current_level() -> str:
    value = logging.getLogger(ROOT_LOGGER).getEffectiveLevel()
    return next((name for name, number in LEVELS.items() if number == value), "info")
