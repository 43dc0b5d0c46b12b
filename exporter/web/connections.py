"""How many connections the HTTP server holds, and for how long each may keep it waiting.

The server gives each connection a thread, so connections are capped (`--web.max-connections`):
one over the cap is answered 503 and closed by the accept loop itself, without a thread. One client
address may hold half the places at most, so a single flooding host leaves room for Prometheus. A
connection may wait for its next request at most the idle timeout, and then deliver that
request's head and body within the request timeout: a slowloris that sends a byte every few
seconds, which a per-read socket timeout never catches, is cut when its deadline passes. One
reaper thread looks at every deadline each REAP_INTERVAL and shuts the overdue sockets down,
which wakes the thread blocked reading them. Setting a deadline is a dictionary write: a
connection sets two per request, and a queue of deadlines grew by tens of thousands a second
under load, which the reaper then sifted with the GIL held.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

DEFAULT_MAX_CONNECTIONS = 512
REAP_INTERVAL = 0.25  # seconds: how late past its deadline a connection may be shut


def _answer(status: str, body: str) -> bytes:
    """A whole plain-text answer that closes the connection, sent by the accept loop in one write."""
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
    return (head + "Retry-After: 1\r\nConnection: close\r\n\r\n" + body).encode("ascii")


TOO_MANY_CONNECTIONS = _answer("503 Service Unavailable", "Too many connections, try again later\n")
TOO_MANY_FAILED_LOGINS = _answer("429 Too Many Requests", "Too many failed logins, try again later\n")


class ConnectionGuard:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.per_client = max(1, limit // 2)
        self._lock = threading.Lock()
        self._open = 0
        self._by_client: dict[str, int] = {}
        self._deadlines: dict[socket.socket, float] = {}  # at most one a connection: the cap bounds it
        self._wake = threading.Condition(self._lock)
        self._stopped = False
        self._reaper: threading.Thread | None = None

    @property
    def open(self) -> int:
        with self._lock:
            return self._open

    def admit(self, client: str) -> bool:
        """Take a place for a new connection from `client` (its address); False when all are taken,
        or when that client holds its share already."""
        with self._lock:
            held = self._by_client.get(client, 0)
            if self._open >= self.limit or held >= self.per_client:
                return False
            self._open += 1
            self._by_client[client] = held + 1
            return True

    def leave(self, client: str) -> None:
        with self._lock:
            self._open -= 1
            held = self._by_client.pop(client, 1) - 1
            if held > 0:
                self._by_client[client] = held

    def watch(self, sock: socket.socket, seconds: float) -> None:
        """Shut `sock` down unless unwatch() comes within `seconds`."""
        deadline = time.monotonic() + seconds
        with self._lock:
            self._deadlines[sock] = deadline
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="http-deadlines", daemon=True)
                self._reaper.start()

    def unwatch(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(sock, None)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._wake.notify()

    def _reap(self) -> None:
        with self._lock:
            while not self._stopped:
                now = time.monotonic()
                overdue = [sock for sock, deadline in self._deadlines.items() if deadline <= now]
                for sock in overdue:
                    del self._deadlines[sock]
                    _shut(sock)
                # At most REAP_INTERVAL late: cheaper than waking at each new deadline (one a request).
                self._wake.wait(REAP_INTERVAL)


def refuse(sock: socket.socket, answer: bytes, plain_http: bool) -> None:
    """Answer a connection at once from the accept loop, and close it: never blocks."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        if plain_http:  # a TLS client could not read a plain answer: it sees the close
            sock.send(answer)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(65536)  # what the client sent already: unread, the close would reset the answer away
    sock.close()


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for a TLS socket: wakes the reader without touching its
    # TLS state, which the reading thread owns.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
