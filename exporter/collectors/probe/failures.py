"""Why a probe failed, as a bounded reason: what the socket or the HTTP library said, classified."""

from __future__ import annotations

import errno
import socket
import ssl

import httpx

from ..errors import ReasonedFailure

REASONS = (
    "dns",
    "connect_refused",
    "connect_timeout",
    "unreachable",
    "tls",
    "read_timeout",
    "reset",
    "http_status",
    "bad_body",
    "config",
)


class ProbeFailure(ReasonedFailure):
    """A probe failed for `reason` (one of REASONS)."""


def classify_http_error(exc: httpx.HTTPError) -> tuple[str, str]:
    """Map an httpx failure to a bounded reason by what the socket underneath said."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect_timeout", "connect timed out"
    if isinstance(exc, httpx.TimeoutException):
        return "read_timeout", "connected, but no answer in time"
    if isinstance(exc, httpx.DecodingError):
        return "bad_body", "answer could not be decoded"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "reset", f"connection closed mid-answer: {exc}"
    cause = _root_cause(exc)
    if isinstance(cause, ssl.SSLError):
        return "tls", f"TLS handshake failed: {cause.reason or cause}"
    if isinstance(cause, OSError):
        return classify_os_error(cause)
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if "Connection refused" in text:
            return "connect_refused", "connection refused: nothing listens on the port"
        if "certificate" in text.lower() or "ssl" in text.lower():
            return "tls", f"TLS handshake failed: {text}"
        return "unreachable", text or "connect failed"
    return "reset", str(exc) or type(exc).__name__


def classify_os_error(exc: OSError) -> tuple[str, str]:
    if isinstance(exc, socket.gaierror):
        return "dns", f"cannot resolve: {exc.strerror}"
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "connect_refused", "connection refused: nothing listens on the port"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset", "connection reset by peer"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable", f"no route: {exc.strerror}"
    if exc.errno == errno.ETIMEDOUT:
        return "connect_timeout", "connect timed out"
    return "unreachable", exc.strerror or str(exc)


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return seen
