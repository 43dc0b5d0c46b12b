"""HOST:PORT, parsed in one place: IPv4 addresses, host names and bracketed IPv6 (`[::1]:6379`).

Config addresses, the listen address, Redis clients, tcp probes and the commands a verdict suggests
all read their host and port here, so `[::1]:6379` means the same thing to each of them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}  # a URL's port when it names none

# Letters, digits, `-`, `_` (container and compose names) and dots; IPv4 addresses match too.
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


class HostPortError(ValueError):
    """Not a HOST:PORT. The message says what is wrong without repeating the text (it may hold a
    secret); callers add which value it was, redacted."""


@dataclass(frozen=True)
class HostPort:
    host: str  # without brackets; "" only where an empty host was allowed (all interfaces)
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"


def parse_host_port(
    text: str, *, default_port: int | None = None, empty_host: bool = False, port_zero: bool = False
) -> HostPort:
    """`host:port`, `1.2.3.4:port` or `[v6]:port`; the port may be left out when `default_port` is
    given. `empty_host` accepts `:port` (a listen address on all interfaces), `port_zero` port 0
    (let the system choose)."""
    if "@" in text:
        raise HostPortError("credentials (user:password@) do not belong in HOST:PORT")
    if "/" in text:
        raise HostPortError("HOST:PORT has no scheme and no path (no /)")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise HostPortError("an IPv6 address opened with [ is not closed with ]")
        host, rest = text[1:close], text[close + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise HostPortError("inside [ ] must be an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise HostPortError("after ] comes :PORT")
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            raise HostPortError("an IPv6 address must be in brackets, like [::1]:PORT")
        host, sep, port_text_or_host = text.partition(":")
        port_text = port_text_or_host if sep else None
        if not host and not empty_host:
            raise HostPortError("the host is missing")
        if host and not _HOST_NAME.fullmatch(host):
            raise HostPortError("the host is not a host name or an IP address")
    return HostPort(host, _port(port_text, default_port, port_zero))


def _port(text: str | None, default: int | None, zero: bool) -> int:
    if text is None:
        if default is None:
            raise HostPortError("the :PORT is missing")
        return default
    if not text.isascii() or not text.isdigit():
        raise HostPortError("the port must be a number")
    port = int(text)
    lowest = 0 if zero else 1
    if not lowest <= port <= 65535:
        raise HostPortError(f"the port must be {lowest}-65535, got {port}")
    return port


def url_host_port(url: str) -> HostPort:
    """Where a probe target connects: an http(s) URL's host and port (80/443 when it names none),
    or a tcp target's bare HOST:PORT."""
    if "://" not in url:
        return parse_host_port(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise HostPortError(f"the URL's host or port is unreadable ({exc})") from None
    if not parts.hostname:
        raise HostPortError("the URL names no host")
    if port is None:
        port = DEFAULT_PORTS.get(parts.scheme.lower())
        if port is None:
            raise HostPortError("the URL names no port and its scheme has none by default")
    return HostPort(parts.hostname, port)
