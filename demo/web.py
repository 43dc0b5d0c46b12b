"""HTTP plumbing shared by the three services: a threaded server, JSON in and out, a clean stop.

One thread per connection (ThreadingHTTPServer with daemon threads) is what lets the admin
endpoints answer while other handlers hang, stall or deadlock on purpose, and daemon threads are
what lets the process exit on SIGTERM although some of them will never return. HTTP/1.1 with
Content-Length (or chunked for streams), as the real services speak it.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

access_log = logging.getLogger("demo.access")

MAX_BODY_BYTES = 64 * 1024
IDLE_CONNECTION_TIMEOUT = 30.0  # seconds a kept-alive connection may sit without a request


class BadRequest(Exception):
    """A request the handler refuses; the status and message go back to the client as JSON."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Server(ThreadingHTTPServer):
    block_on_close = False  # server_close() would otherwise join every handler, hung ones included
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], app: Any) -> None:
        self.app = app  # what the handlers serve: the service's state
        super().__init__(address, handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_TIMEOUT
    server: Server

    @property
    def app(self) -> Any:
        return self.server.app

    @property
    def route(self) -> str:
        return self.path.split("?", 1)[0]

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.command != "POST" and (
            "Transfer-Encoding" in self.headers or self.headers.get("Content-Length", "0").strip() != "0"
        ):
            self.close_connection = True  # only POST routes read a body: this one would be the next request
        return True

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(status, json.dumps(payload).encode() + b"\n", "application/json", headers)

    def send_body(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True  # the client gave up (a timed-out probe): nobody to tell

    def start_stream(self, status: int, content_type: str) -> None:
        """Headers of a body of unknown length, sent in chunks with write_chunk and end_stream."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def read_body(self, limit: int = MAX_BODY_BYTES) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise BadRequest(411, "send the body with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise BadRequest(400, "bad Content-Length") from None
        if length < 0:
            self.close_connection = True
            raise BadRequest(400, "bad Content-Length")
        if length > limit:
            self.close_connection = True  # the unread body would be taken for the next request
            raise BadRequest(413, f"body larger than {limit} bytes")
        return self.rfile.read(length) if length else b""

    def read_json(self, limit: int = MAX_BODY_BYTES) -> Any:
        body = self.read_body(limit)
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(400, "the body is not JSON") from None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        access_log.debug("%s %s", self.address_string(), format % args)


def serve(server: Server, name: str, on_stop: Callable[[], None] | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then stop within a second or so; returns the exit status."""
    log = logging.getLogger(f"demo.{name}")
    stop = threading.Event()
    received: list[str] = []

    def handle(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http")
    thread.start()
    while not stop.wait(0.1):  # a signal only wakes the main thread when the wait returns
        if not thread.is_alive():
            log.error("the HTTP server stopped on its own")
            return 1
    log.info("stopping on %s", received[0])
    server.shutdown()
    thread.join(2)
    if on_stop is not None:
        on_stop()
    server.server_close()  # handler threads are daemons: a hung one does not hold the exit
    return 0


def display_url(url: str) -> str:
    """The URL without the password of its user info, for logs."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}{slash}{path}"
