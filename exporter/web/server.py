"""The HTTP side: /metrics from the store's cached bytes, health, readiness, reload, log level.

The server knows nothing of collectors; it reads the store and calls back into the daemon for
reload. TLS handshakes happen in the connection's own thread, so a slow or hostile client cannot
stall the accept loop; idle keep-alive connections time out.

Hostile clients: a listen backlog that holds a burst of 200 scrapers; at most --web.max-requests
requests in flight (503 beyond); a request whose length is in any doubt (Content-Length beside
Transfer-Encoding, two lengths, a malformed header) is refused and its connection closed, so no
smuggled second request is ever answered; a state-changing request sent by a web page of another
origin is refused (403), so a page the operator visits cannot reload or capture; so is one that
names a host not ours (hosts.py: DNS rebinding). Connections are capped and each has deadlines
(connections.py).
"""

from __future__ import annotations

import contextlib
import email.message
import email.utils
import io
import json
import logging
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlsplit

from .. import __version__
from ..base.health import CollectorHealth
from ..base.hostport import DEFAULT_PORTS, HostPortError, parse_host_port, url_host_port
from ..diagnosis import to_dict
from ..logs.redact import redact, redact_data
from . import connections, logsetup, requesthead, statuspage
from .connections import DEFAULT_MAX_CONNECTIONS, ConnectionGuard
from .hosts import HostPolicy
from .webconfig import WebConfig

log = logging.getLogger(__name__)

# Seconds a connection may wait for its next request: longer than Prometheus's usual 1 min scrape
# interval, so its keep-alive connection carries every scrape (a new connection waits behind
# whatever floods the accept queue). Each idle connection holds a thread: --web.max-connections.
CONNECTION_IDLE_TIMEOUT = 90.0
# Seconds from a request's first byte to the end of its body: a slowloris sending a byte at a time
# is cut here, whatever the per-read timeout.
REQUEST_READ_TIMEOUT = 10.0
TLS_HANDSHAKE_TIMEOUT = 10.0
# node_exporter's --web.max-requests is 40; ours serves cached bytes and must admit 200 scrapers.
DEFAULT_MAX_REQUESTS = 256
MIN_LISTEN_BACKLOG = 1024
MAX_BODY_BYTES = 65536  # the bodies we accept are a log level or nothing
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
_THROTTLED = {"Retry-After": "1", "Connection": "close"}


class StoreReader(Protocol):
    """What the server reads of the store (core/store.py) it is given; it never writes to it."""

    def render(self, accept: str = "", compressed: bool = False) -> tuple[bytes, str]: ...
    def ready(self) -> bool: ...
    def derived(self) -> Any: ...  # the diagnosis, None before the first derivation
    def health(self) -> Mapping[str, CollectorHealth]: ...


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
    try:
        parsed = parse_host_port(address, empty_host=True, port_zero=True)
    except HostPortError as exc:
        expected = "expected HOST:PORT or :PORT"
        raise ListenAddressError(f"invalid listen address {address!r}: {expected} ({exc})") from None
    return parsed.host or "0.0.0.0", parsed.port


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


def listen_backlog() -> int:
    """How many connections may wait to be accepted: at least 1024, the system's limit if larger.

    The standard library's 5 dropped connections under 200 concurrent scrapers (the kernel caps
    the number at net.core.somaxconn anyway)."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return max(MIN_LISTEN_BACKLOG, int(f.read().strip()))
    except (OSError, ValueError):
        return MIN_LISTEN_BACKLOG


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        store: StoreReader,
        hooks: ServerHooks,
        telemetry_path: str = "/metrics",
        web_config: WebConfig | None = None,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = CONNECTION_IDLE_TIMEOUT,
        request_timeout: float = REQUEST_READ_TIMEOUT,
        allowed_hosts: str | None = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.request_queue_size = listen_backlog()
        if web_config is not None:
            web_config.tls_context()  # load the certificate now: a bad one is a start-up error
        super().__init__(address, _Handler)
        self.store = store
        self.hooks = hooks
        self.telemetry_path = telemetry_path
        self.web_config = web_config
        # Requests in flight beyond the limit are answered 503 at once (0: no limit).
        # A count under a lock: nothing ever waits for a place, and a semaphore's condition
        # variable cost a scrape more than its page.
        self._max_requests = max_requests
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        # Connections held at once (a thread each); more are refused by the accept loop.
        self.connections = ConnectionGuard(max_connections)
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.hosts = HostPolicy(address[0], allowed_hosts or "")  # raises AllowedHostsError
        self._thread: threading.Thread | None = None

    def use_web_config(self, web_config: WebConfig | None) -> None:
        """Serve new connections and requests with another web config (from build_web_config).

        One reference swap: requests in flight finish with the config they started with."""
        self.web_config = web_config

    @property
    def scheme(self) -> str:
        return "https" if self.web_config is not None and self.web_config.tls is not None else "http"

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def admit(self) -> bool:
        """Take a place for one request in flight; False when all are taken."""
        with self._in_flight_lock:
            if 0 < self._max_requests <= self._in_flight:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        with self._in_flight_lock:
            self._in_flight -= 1

    def process_request(self, request: Any, client_address: Any) -> None:
        # In the accept loop: a connection over the cap, or from a client that failed to log in too
        # often lately, is refused here, before it has a thread.
        client = str(client_address[0])
        authenticator = self.web_config.authenticator() if self.web_config is not None else None
        if authenticator is not None and authenticator.throttled(client):
            connections.refuse(request, connections.TOO_MANY_FAILED_LOGINS, plain_http=self.scheme == "http")
            return
        if not self.connections.admit(client):
            connections.refuse(request, connections.TOO_MANY_CONNECTIONS, plain_http=self.scheme == "http")
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (none left): its place is free again
            self.connections.leave(client)
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.leave(str(client_address[0]))

    def start_background(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="http-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.connections.stop()

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # A client that drops the connection or fails the TLS handshake is not our error; anything
        # else is a bug of ours, and says so.
        if isinstance(sys.exc_info()[1], OSError):  # ssl.SSLError and timeouts included
            log.debug("connection error", extra={"client": client_address[0]}, exc_info=True)
        else:
            log.error("request failed", extra={"client": client_address[0]}, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses its connection
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK holds every
    # response ~40 ms (measured: p50 44 ms, 1.3 ms without).
    disable_nagle_algorithm = True
    timeout = CONNECTION_IDLE_TIMEOUT  # each read's; the server's idle_timeout replaces it in setup()
    server_version = f"autoglm-exporter/{__version__}"
    raw_requestline: bytes  # set by BaseHTTPRequestHandler.handle_one_request

    def setup(self) -> None:
        self._web_config = self.server.web_config  # renewed for each request in _dispatch
        context = self._web_config.tls_context() if self._web_config is not None else None
        if context is not None:
            # The context of this moment: a rotated certificate serves the next connection.
            self.request.settimeout(TLS_HANDSHAKE_TIMEOUT)
            self.request = context.wrap_socket(self.request, server_side=True, do_handshake_on_connect=False)
            try:
                self.request.do_handshake()  # the timeout bounds the whole handshake, not each read
            except BaseException:
                _close(self.request)
                raise
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)

    def handle_one_request(self) -> None:
        guard = self.server.connections
        # Waiting for the next request: at most the idle timeout, however the client dribbles.
        guard.watch(self.connection, self.server.idle_timeout)
        try:
            arrived = cast(io.BufferedReader, self.rfile).peek(1)  # b"": closed, or shut at the deadline
        except OSError:  # the read timed out, or the client reset
            arrived = b""
        finally:
            guard.unwatch(self.connection)
        if not arrived:
            self.close_connection = True
            return
        # Its first byte came: the head and the body (read in _dispatch) within the request timeout.
        guard.watch(self.connection, self.server.request_timeout)
        try:
            super().handle_one_request()
        finally:
            guard.unwatch(self.connection)

    def parse_request(self) -> bool:
        # The plain heads scrapers send skip the email parser (requesthead.py): it cost more than
        # the rest of a scrape. Any other head is the standard library's to read or refuse.
        head = requesthead.read(self.raw_requestline, cast(io.BufferedReader, self.rfile))
        if head is None:
            return super().parse_request()
        self.command, self.path, self.request_version = head.command, head.path, head.version
        self.requestline, self.headers = head.requestline, head.headers
        self.close_connection = not head.keep_alive
        return True

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if isinstance(self.request, ssl.SSLSocket):
                _close(self.request)  # wrapping took the socket the server would have closed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # For what the standard library refuses before our code runs (a bad request line, a header
        # too long, an unknown method): our plain-text answer, with a status line even to what looks
        # like HTTP/0.9, and the connection closed.
        self.close_connection = True
        text = redact(message or _reason(code))[:200]
        self._send(code, f"{text}\n".encode("utf-8", "replace"), extra={"Connection": "close"})

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
        self._web_config = self.server.web_config  # one config for the whole request
        refusal = _framing_problem(self.headers)
        if refusal is not None:
            # Where this request ends is in doubt, so nothing after it on this connection is read.
            self.close_connection = True
            self._send(refusal[0], refusal[1], extra={"Connection": "close"})
            return
        self._read_body()
        self.server.connections.unwatch(self.connection)  # read whole: the answer is ours to send
        if not self.server.admit():
            self._send(503, b"Too many requests in flight, try again\n", extra={"Retry-After": "1"})
            return
        try:
            self._answer(method)
        except Exception:  # a bug of ours: say so to the client and in the log, keep serving
            log.error("request failed", extra={"path": self.path}, exc_info=True)
            self.close_connection = True
            self._send(500, b"Internal Server Error\n", extra={"Connection": "close"})
        finally:
            self.server.release()

    def _answer(self, method: str) -> None:
        if not self._host_allowed(method):  # a DNS-rebinding page names a host of its own
            self._send(403, b"Host not allowed (see --web.allowed-hosts)\n")
            return
        if method != "GET" and self._cross_origin():
            self._send(403, b"Cross-origin request refused\n")
            return
        verdict = self._authentication()
        if verdict == "throttled":  # refused unchecked: this client failed too often lately
            self.close_connection = True
            self._send(429, b"Too many failed logins, try again later\n", extra=_THROTTLED)
            return
        if verdict != "granted":
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

    def _authentication(self) -> str:
        """ "granted" (or no users configured), "denied" or "throttled"."""
        authenticator = self._web_config.authenticator() if self._web_config is not None else None
        if authenticator is None:
            return "granted"
        return authenticator.verdict(self.headers.get("Authorization"), client=str(self.client_address[0]))

    def _host_allowed(self, method: str) -> bool:
        auth_configured = self._web_config is not None and self._web_config.authenticator() is not None
        hosts = self.server.hosts
        return not hosts.guards(method, auth_configured) or hosts.allows(self.headers.get("Host"))

    def _cross_origin(self) -> bool:
        """True when a web page of another origin sent this request (the browser says so in Origin,
        or in Sec-Fetch-Site when it leaves Origin out)."""
        if self.headers.get("Sec-Fetch-Site", "").strip().lower() == "cross-site":
            return True
        origin = self.headers.get("Origin")
        if origin is None:
            return False  # not sent by a browser on behalf of another site: curl, Prometheus, scripts
        theirs, host = _origin(origin), self.headers.get("Host")
        return theirs is None or host is None or theirs != _origin(f"{self.server.scheme}://{host.strip()}")

    def _read_body(self) -> None:
        # Read the whole body (its length was checked) so the keep-alive stream stays in sync.
        length = int(self.headers.get("Content-Length", "0").strip())
        self._body = self.rfile.read(length) if length else b""

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
        self._send(200 if ok else 500, (redact(message) + "\n").encode())

    def _log_level(self) -> None:
        if self.command == "GET":
            self._send(200, (logsetup.current_level() + "\n").encode())
            return
        query = parse_qs(urlsplit(self.path).query)
        level = (query.get("level") or [self._body.decode("utf-8", "replace").strip()])[0]
        previous = logsetup.current_level()
        try:
            logsetup.set_level(level)
        except ValueError as exc:
            self._send(400, (redact(str(exc)) + "\n").encode())
            return
        # At warn whatever the new level, so the line shows at every level but error; the new
        # level is a field, never the line's own severity.
        log.warning("log level changed", extra={"new_level": level, "previous_level": previous})
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
        body = json.dumps(redact_data(to_dict(diagnosis)), indent=2).encode()
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
        configured = self._web_config.headers if self._web_config is not None else {}
        headers = "".join(f"{name}: {value}\r\n" for name, value in {**configured, **(extra or {})}.items())
        head = (
            f"HTTP/1.1 {status} {_reason(status)}\r\nServer: {self.server_version}\r\n"
            f"Date: {_http_date()}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"{headers}\r\n"
        )
        if self.command == "HEAD" or not body:
            self.wfile.write(head.encode("latin-1"))
        else:
            _send_all(self.connection, head.encode("latin-1"), body)
        self.log_request(status, len(body))

    def _capture(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        service = (query.get("service") or [""])[0]
        status, message = self.server.hooks.capture(service)
        self._send_json(status, {"message": redact(message), "service": service})

    def _captures(self) -> None:
        self._send_json(200, {"captures": redact_data(self.server.hooks.captures())})

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


def _send_all(sock: socket.socket, head: bytes, body: bytes) -> None:
    """Head and body in one system call (with Nagle off, two would be two segments, and the
    client's delayed ACK holds the second), without joining them: the page is tens of kB and a
    copy of it per scrape cost a tenth of the scrape. TLS has no sendmsg: one joined write."""
    if isinstance(sock, ssl.SSLSocket):
        sock.sendall(head + body)
        return
    sent = sock.sendmsg([head, body])
    if sent < len(head):  # the send buffer took less than all: the rest as sendall would send it
        sock.sendall(head[sent:])
        sent = len(head)
    if sent - len(head) < len(body):
        sock.sendall(memoryview(body)[sent - len(head) :])


def _close(sock: socket.socket) -> None:
    """Close as the server closes a plain connection: FIN first, so the client reads an end."""
    with contextlib.suppress(OSError):  # the client may be gone already
        sock.shutdown(socket.SHUT_WR)
    sock.close()


def _framing_problem(headers: email.message.Message) -> tuple[int, bytes] | None:
    """(status, message) when the request's length cannot be trusted, None when it can.

    A body we misjudge would be read as the next request, so any doubt is a refusal: a malformed or
    folded header line, Transfer-Encoding (we read bodies by Content-Length only), two lengths, a
    length that is not a plain number, or one longer than any body we accept.
    """
    if headers.defects or headers.get_payload() or any("\n" in value for value in headers.values()):
        return 400, b"Malformed request header\n"
    lengths = headers.get_all("Content-Length") or []
    if headers.get_all("Transfer-Encoding"):
        if lengths:
            return 400, b"Both Content-Length and Transfer-Encoding\n"
        return 411, b"Transfer-Encoding is not supported: send Content-Length\n"
    if len(headers.get_all("Host") or []) > 1:
        return 400, b"More than one Host header\n"
    if not lengths:
        return None
    if len(lengths) > 1 or not _CONTENT_LENGTH.fullmatch(lengths[0].strip()):
        return 400, b"Invalid Content-Length\n"
    if int(lengths[0]) > MAX_BODY_BYTES:
        return 413, b"Request body too large\n"
    return None


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, default ports filled in; None when it has none."""
    url = url.strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in DEFAULT_PORTS:
        return None  # "null" (a sandboxed page or a file) is nobody's origin
    try:
        where = url_host_port(url)
    except HostPortError:
        return None
    return scheme, where.host, where.port


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
