"""The HTTP side: /metrics from the store's cached bytes, health, readiness, reload, log level.

The server knows nothing of collectors; it reads the store and calls back into the daemon for
reload. TLS handshakes happen in the connection's own thread, so a slow or hostile client cannot
stall the accept loop; idle keep-alive connections time out.
"""

from __future__ import annotations

import email.utils
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import __version__
from ..core.store import Store
from ..diagnosis import to_dict
from . import logsetup, statuspage
from .webconfig import BasicAuthenticator, WebConfig

log = logging.getLogger(__name__)

CONNECTION_IDLE_TIMEOUT = 30.0
TLS_HANDSHAKE_TIMEOUT = 10.0


@dataclass
class ServerHooks:
    """What the server may ask of the daemon."""

    reload: Callable[[], tuple[bool, str]]
    # Start a stack capture of a service: (HTTP status, message).
    capture: Callable[[str], tuple[int, str]] = lambda service: (404, "stack captures are not available")
    # The saved captures, newest first, as plain data; and one capture's JSON by name (None: no such).
    captures: Callable[[], list[dict[str, Any]]] = list
    capture_file: Callable[[str], bytes | None] = lambda name: None


class ListenAddressError(ValueError):
    pass


def parse_listen_address(address: str) -> tuple[str, int]:
    """':9877' (all interfaces), '127.0.0.1:9877' or '[::1]:9877' -> (host, port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenAddressError(f"invalid listen address {address!r}: expected HOST:PORT or :PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


def accepts_gzip(accept_encoding: str) -> bool:
    """True when the Accept-Encoding header allows gzip (and does not refuse it with q=0)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
            try:
                return float(quality) > 0
            except ValueError:
                return False
    return False


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        store: Store,
        hooks: ServerHooks,
        telemetry_path: str = "/metrics",
        web_config: WebConfig | None = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.store = store
        self.hooks = hooks
        self.telemetry_path = telemetry_path
        self.web_config = web_config
        self.authenticator: BasicAuthenticator | None = web_config.authenticator() if web_config else None
        self.extra_headers = dict(getattr(web_config, "headers", {}) or {})
        context = web_config.ssl_context() if web_config else None
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.scheme = "https" if context is not None else "http"
        self._thread: threading.Thread | None = None

    def update_web_config(self, web_config: WebConfig | None) -> None:
        """A reloaded web config: users and headers apply to the next request. (TLS certificates
        are re-read by the TLS context itself; TLS on or off needs a restart.)"""
        if web_config is self.web_config:
            return
        self.web_config = web_config
        self.authenticator = web_config.authenticator() if web_config else None
        self.extra_headers = dict(getattr(web_config, "headers", {}) or {})

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start_background(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="http-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # A client that drops the connection or fails the TLS handshake is not our error.
        log.debug("connection error", extra={"client": client_address[0]}, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses its connection
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK holds every
    # response ~40 ms (measured: p50 44 ms, 1.3 ms without).
    disable_nagle_algorithm = True
    timeout = CONNECTION_IDLE_TIMEOUT
    server_version = f"autoglm-exporter/{__version__}"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(TLS_HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if log.isEnabledFor(logging.DEBUG):  # called for every request: format only when shown
            log.debug("http request", extra={"request": format % args})

    # --- routing ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        self._drain_body()
        if not self._authorized():
            self._send(401, b"Unauthorized\n", extra={"WWW-Authenticate": 'Basic realm="autoglm-exporter"'})
            return
        path = self.path.split("?", 1)[0]
        if path == self.server.telemetry_path:
            path = TELEMETRY
        elif path.startswith(CAPTURES_PREFIX) and method == "GET":
            self._capture_file(path.removeprefix(CAPTURES_PREFIX))
            return
        handler = ROUTES.get((method, path))
        if handler is not None:
            handler(self)
        elif any(route_path == path for _, route_path in ROUTES):
            self._send(405, b"Method Not Allowed\n")
        else:
            self._send(404, b"Not Found\n")

    def _authorized(self) -> bool:
        authenticator = self.server.authenticator
        return authenticator is None or authenticator.check(self.headers.get("Authorization"))

    def _drain_body(self) -> None:
        # Read (and ignore) a request body so the keep-alive stream stays in sync.
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and 0 < int(length) <= 65536:
            self._body = self.rfile.read(int(length))
        else:
            self._body = b""
            if length and length != "0":
                self.close_connection = True

    # --- endpoints ----------------------------------------------------------------------------

    def _metrics(self) -> None:
        compressed = accepts_gzip(self.headers.get("Accept-Encoding", ""))
        body, content_type = self.server.store.render(self.headers.get("Accept", ""), compressed)
        extra = {"Content-Encoding": "gzip"} if compressed else {}
        self._send(200, body, content_type=content_type, extra=extra)

    def _ready(self) -> None:
        if self.server.store.ready():
            self._send(200, b"Ready\n")
        else:
            self._send(503, b"Not ready: collectors have not finished their first run\n")

    def _reload(self) -> None:
        ok, message = self.server.hooks.reload()
        self._send(200 if ok else 500, (message + "\n").encode())

    def _log_level(self) -> None:
        if self.command == "GET":
            self._send(200, (logsetup.current_level() + "\n").encode())
            return
        query = parse_qs(urlsplit(self.path).query)
        level = (query.get("level") or [self._body.decode("utf-8", "replace").strip()])[0]
        try:
            logsetup.set_level(level)
        except ValueError as exc:
            self._send(400, (str(exc) + "\n").encode())
            return
        log.warning("log level changed", extra={"level": level})
        self._send(200, (level + "\n").encode())

    def _status_page(self) -> None:
        store = self.server.store
        captures = self.server.hooks.captures()
        page = statuspage.render(
            store.derived(), store.health(), self.server.telemetry_path, captures[0] if captures else None
        )
        self._send(200, page.encode(), content_type="text/html; charset=utf-8")

    def _diagnosis(self) -> None:
        diagnosis = self.server.store.derived()
        if diagnosis is None:
            self._send(503, b'{"error": "no diagnosis yet"}\n', content_type="application/json")
            return
        body = json.dumps(to_dict(diagnosis), indent=2).encode()
        self._send(200, body, content_type="application/json")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        extra: dict[str, str] | None = None,
    ) -> None:
        # One preformatted write per response: BaseHTTPRequestHandler's send_response/send_header
        # path costs more CPU than serving the cached page itself.
        headers = "".join(
            f"{name}: {value}\r\n" for name, value in {**self.server.extra_headers, **(extra or {})}.items()
        )
        head = (
            f"HTTP/1.1 {status} {_reason(status)}\r\nServer: {self.server_version}\r\n"
            f"Date: {_http_date()}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"{headers}\r\n"
        )
        self.wfile.write(head.encode("latin-1") if self.command == "HEAD" else head.encode("latin-1") + body)
        self.log_request(status, len(body))

    def _capture(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        service = (query.get("service") or [""])[0]
        status, message = self.server.hooks.capture(service)
        self._send_json(status, {"message": message, "service": service})

    def _captures(self) -> None:
        self._send_json(200, {"captures": self.server.hooks.captures()})

    def _capture_file(self, name: str) -> None:
        body = self.server.hooks.capture_file(name)
        if body is None:
            self._send(404, b"No such capture\n")
        else:
            self._send(200, body, content_type="application/json")

    def _send_json(self, status: int, document: Any) -> None:
        self._send(status, json.dumps(document, indent=1).encode(), content_type="application/json")

    def _healthy(self) -> None:
        self._send(200, b"Healthy\n")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header, formatted once a second rather than once a request."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


TELEMETRY = "<telemetry path>"  # stands for --web.telemetry-path in ROUTES
CAPTURES_PREFIX = "/api/captures/"
ROUTES: dict[tuple[str, str], Callable[[_Handler], None]] = {
    ("GET", TELEMETRY): _Handler._metrics,
    ("GET", "/-/healthy"): _Handler._healthy,
    ("GET", "/-/ready"): _Handler._ready,
    ("POST", "/-/reload"): _Handler._reload,
    ("PUT", "/-/reload"): _Handler._reload,
    ("GET", "/-/log-level"): _Handler._log_level,
    ("POST", "/-/log-level"): _Handler._log_level,
    ("PUT", "/-/log-level"): _Handler._log_level,
    ("GET", "/"): _Handler._status_page,
    ("GET", "/api/diagnosis"): _Handler._diagnosis,
    ("POST", "/api/capture"): _Handler._capture,
    ("GET", "/api/captures"): _Handler._captures,
}
