"""A round-robin HTTP load balancer for the fleet test: what users call instead of one replica.

A real HTTP server on 127.0.0.1 that passes each request to the next replica, and to the one after
when a replica refuses the connection (nginx's `proxy_next_upstream error`): a dead replica costs
capacity, not answers. A replica's own answer, an error status included, goes back as it is; when
no replica accepts the connection the client gets 502. A replica can be drained before it is
stopped (what a rolling restart does, like an endpoint leaving a Kubernetes Service): it gets no
new requests, and `drained` says when its last request has been answered.
"""

from __future__ import annotations

import http.client
import itertools
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from .support import BackgroundHTTPServer

CONNECT_TIMEOUT = 0.5  # a replica that does not accept within this is skipped


class LoadBalancer(BackgroundHTTPServer):
    """Use as a context manager; `url` is where users (the client probes) send their requests."""

    def __init__(self, replica_ports: list[int], answer_timeout: float) -> None:
        self._next = itertools.cycle(range(len(replica_ports)))
        self._lock = threading.Lock()
        self._draining: set[int] = set()
        self._in_flight = dict.fromkeys(replica_ports, 0)
        balancer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._pass_on()

            def do_POST(self) -> None:  # noqa: N802
                self._pass_on()

            def _pass_on(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                for port in balancer.order(replica_ports):
                    answer = balancer.forward(port, self.command, self.path, body, headers, answer_timeout)
                    if answer is not None:
                        self._reply(*answer)
                        return
                self._reply(502, b'{"error": "no replica accepted the connection"}', "application/json")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    self.close_connection = True  # the client gave up waiting (its probe timed out)

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)  # ThreadingHTTPServer's request threads are daemon threads

    def order(self, ports: list[int]) -> list[int]:
        """Every replica not drained, starting with the next one in turn."""
        with self._lock:
            first = next(self._next)
            return [port for port in ports[first:] + ports[:first] if port not in self._draining]

    def forward(self, port: int, *request: Any) -> tuple[int, bytes, str] | None:
        with self._lock:
            self._in_flight[port] += 1
        try:
            return _forward(port, *request)
        finally:
            with self._lock:
                self._in_flight[port] -= 1

    def drain(self, port: int) -> None:
        """Send the replica no new requests."""
        with self._lock:
            self._draining.add(port)

    def drained(self, port: int) -> bool:
        """The replica is drained and answered its last request."""
        with self._lock:
            return port in self._draining and self._in_flight[port] == 0

    def restore(self, port: int) -> None:
        with self._lock:
            self._draining.discard(port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _forward(
    port: int, method: str, path: str, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[int, bytes, str] | None:
    """The replica's answer (status, body, content type); None when it refused the connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CONNECT_TIMEOUT)
    try:
        connection.connect()
    except OSError:
        return None
    try:
        connection.sock.settimeout(timeout)
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("Content-Type", "application/json")
    except OSError:
        return 502, b'{"error": "the replica broke the connection"}', "application/json"
    finally:
        connection.close()
