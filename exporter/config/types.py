"""The kinds of value a config key can hold, each with its parsing, its limits and its error message.

Every limit is one the daemon can run with: a duration is finite, positive and small enough for
the timers it feeds, so what `check-config` accepts the daemon runs. Error messages show at most
a short, redacted excerpt of a bad value (a URL's credentials become ***), never a whole value.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from ..base.hostport import HostPortError, parse_host_port
from ..logs.redact import redact

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]*$")
MAX_NAME = 128  # names become label values and file-name parts
MAX_SHOWN = 40  # characters of a bad value an error message may show


def shown_value(value: Any) -> str:
    """A bad value as an error message may show it: short, redacted, never a whole document."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        text = redact(value[: MAX_SHOWN * 4])  # redact before cutting: a cut must not reveal half a secret
        return repr(text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "...")
    if isinstance(value, bool | None | float) or (isinstance(value, int) and abs(value) < 10**15):
        return repr(value)
    if isinstance(value, int):
        return "a number too large"
    return f"a {type(value).__name__}"


def _fail(kind: str, message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError(kind, message, context)


def parse_duration(value: Any) -> float | None:
    """Seconds from 10s, 500ms, 1m, 1h or a number; None when it is not a duration at all."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an integer too large for a float
            return math.inf
    if isinstance(value, str) and (match := _DURATION.match(value.strip())):
        return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    return None


class Check:
    """A kind of value: `Annotated[float, Duration(maximum=60)]`. `check` parses and validates a
    raw YAML value (raising PydanticCustomError with the message a user reads), `schema` is its
    JSON Schema for editors."""

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return self.schema()


class Duration(Check):
    """Seconds from 10s, 500ms, 1m, 1h or a number: > minimum (or 0 with allow_zero), finite, and
    at most `maximum` (the timers it feeds accept it)."""

    def __init__(self, maximum: float, minimum: float = 0.0, allow_zero: bool = False) -> None:
        self.maximum, self.minimum, self.allow_zero = maximum, minimum, allow_zero

    def check(self, value: Any) -> float:
        seconds = parse_duration(value)
        if seconds is None:
            raise _fail(
                "duration", "must be a duration like 10s, 500ms or 1m, got {value}", value=shown_value(value)
            )
        if not math.isfinite(seconds):
            raise _fail("duration_range", "must be a finite duration")
        if seconds == 0 and self.allow_zero:
            return 0.0
        if seconds <= self.minimum:
            low = _seconds_text(self.minimum) if self.minimum else "0"
            raise _fail("duration_range", "must be > {minimum}", minimum=low)
        if seconds > self.maximum:
            raise _fail("duration_range", "must be at most {maximum}", maximum=_seconds_text(self.maximum))
        return seconds

    def schema(self) -> dict[str, Any]:
        number: dict[str, Any] = {"type": "number", "maximum": self.maximum}
        number["minimum" if self.allow_zero else "exclusiveMinimum"] = self.minimum
        return {
            "anyOf": [number, {"type": "string", "pattern": _DURATION.pattern}],
            "description": "a duration: 500ms, 10s, 1m, 1h or seconds; at most "
            + _seconds_text(self.maximum),
        }


def _seconds_text(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class WholeNumber(Check):
    def __init__(self, minimum: int = 0, maximum: int = 2**31 - 1) -> None:
        self.minimum, self.maximum = minimum, maximum

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not self.minimum <= value <= self.maximum:
            raise _fail(
                "whole_number",
                "must be a whole number from {minimum} to {maximum}, got {value}",
                minimum=self.minimum,
                maximum=self.maximum,
                value=shown_value(value),
            )
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


class Choice(Check):
    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def check(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise _fail(
                "choice",
                "must be one of {choices}, got {value}",
                choices=", ".join(self.choices),
                value=shown_value(value),
            )
        return value

    def schema(self) -> dict[str, Any]:
        return {"enum": list(self.choices)}


class Simple(Check):
    """A check from a function and a fixed schema."""

    def __init__(self, function: Any, schema: dict[str, Any]) -> None:
        self.function, self._schema = function, schema

    def check(self, value: Any) -> Any:
        return self.function(value)

    def schema(self) -> dict[str, Any]:
        return self._schema


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail("boolean", "must be true or false, got {value}", value=shown_value(value))
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail("text", "must be a non-empty string")
    if "\0" in value:
        raise _fail("text", "must not contain a NUL character")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise _fail("name", "must start with a letter or _ and hold only letters, digits, _ . -")
    if len(value) > MAX_NAME:
        raise _fail("name", "must be at most {maximum} characters long", maximum=MAX_NAME)
    return value


def _regex(value: Any) -> str:
    pattern = _text(value)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise _fail("regex", "invalid regular expression: {error}", error=str(exc)) from None
    return pattern


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _fail("port", "must be a TCP port 1-65535, got {value}", value=shown_value(value))
    return value


def check_url(value: Any, credentials: str = "") -> str:
    """An http(s) URL without credentials; `credentials` says where this section takes them."""
    text = _text(value)
    # An `@` before the query is taken for credentials wherever a parser puts it: a `/` or `#` in
    # a password ends the userinfo early, leaving the secret in the "host", path or fragment
    # (a path that needs an `@` writes %40). Checked first: no other message may show the value.
    if "@" in text.partition("?")[0]:
        raise _credentials_refused(credentials)
    parsed = urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise _fail("url", "must be an http:// or https:// URL, got {value}", value=shown_value(text))
    try:
        parsed.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise _fail("url", "has a bad port: {value}", value=shown_value(text)) from None
    return text


def check_address(value: Any, credentials: str = "") -> str:
    """HOST:PORT; credentials (`user:pass@host:port`, `redis://:pass@host:port`) are refused first,
    before any message could show them."""
    text = _text(value)
    if "@" in text:
        raise _credentials_refused(credentials)
    try:
        parse_host_port(text)
    except HostPortError:
        raise _fail("address", "must be HOST:PORT, got {value}", value=shown_value(text)) from None
    return text


def _credentials_refused(where: str) -> PydanticCustomError:
    # The value is never shown: all of it may be the secret.
    message = "must not hold credentials (user:password@ is refused, never shown)"
    return _fail("credentials", f"{message}; {where}" if where else message)


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _fail("string_map", "must be a mapping of strings to strings")
    return dict(value)


def _texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) and item for item in value):
        raise _fail("texts", "must be a list of non-empty strings")
    return tuple(value)


Boolean = Annotated[bool, Simple(_boolean, {"type": "boolean"})]
Text = Annotated[str, Simple(_text, {"type": "string", "minLength": 1})]
Name = Annotated[str, Simple(_name, {"type": "string", "pattern": NAME.pattern, "maxLength": MAX_NAME})]
Regex = Annotated[str, Simple(_regex, {"type": "string", "format": "regex"})]
Port = Annotated[int, Simple(_port, {"type": "integer", "minimum": 1, "maximum": 65535})]
StringMap = Annotated[
    dict[str, str], Simple(_string_map, {"type": "object", "additionalProperties": {"type": "string"}})
]
Texts = Annotated[
    tuple[str, ...], Simple(_texts, {"type": "array", "items": {"type": "string", "minLength": 1}})
]
