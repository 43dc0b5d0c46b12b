"""Which Host headers the server answers: the guard against DNS rebinding.

A web page on evil.example can point evil.example at 127.0.0.1 after it loaded; the browser then
sends the page's requests to the exporter as same-origin requests, with `Host: evil.example`.
Rebinding always needs a name of the attacker's, so a request naming one of ours passes: an IP
address, localhost (and *.localhost), the machine's host name, the listen address's name and the
names of `--web.allowed-hosts`.

Without that flag the guard covers state-changing requests (POST/PUT: reload, capture, log
level), and only while no basic auth is configured (a rebound page has no password): Prometheus
keeps scraping /metrics by whatever name its service discovery gives. With the flag, every
request, /metrics included, must name an allowed host; `*` switches the guard off.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from ..base.hostport import HostPortError, parse_host_port

_NAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*"
)
_ALL_INTERFACES = ("0.0.0.0", "::", "")


class AllowedHostsError(ValueError):
    pass


class HostPolicy:
    def __init__(self, listen_host: str = "", allowed_hosts: str = "") -> None:
        names = {"localhost", socket.gethostname().lower()}
        if listen_host not in _ALL_INTERFACES:
            names.add(listen_host.lower())
        given = [item.strip().lower().rstrip(".") for item in allowed_hosts.split(",") if item.strip()]
        self.any_host = "*" in given
        self.explicit = bool(given) and not self.any_host
        for name in given:
            if name != "*" and not _NAME.fullmatch(name):
                raise AllowedHostsError(f"--web.allowed-hosts: {name!r} is not a host name")
        self.names = frozenset(names | set(given) - {"*"})

    def guards(self, method: str, auth_configured: bool) -> bool:
        """Whether a request of `method` must name an allowed host."""
        if self.any_host:
            return False
        if self.explicit:
            return True
        return method != "GET" and not auth_configured

    def allows(self, host_header: str | None) -> bool:
        """True when the Host header names us: an IP address, a loopback name, an allowed name.
        No Host at all (HTTP/1.0) is no browser's request, so it passes."""
        if host_header is None:
            return True
        try:
            host = parse_host_port(host_header.strip(), default_port=80).host.lower().rstrip(".")
        except HostPortError:
            return False
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            pass
        return host in self.names or host.endswith(".localhost")
