"""Real TCP servers on 127.0.0.1 that misbehave the way sick inference services do.

Each server accepts connections in a thread and hands each one to a handler; stop() closes
everything, including connections a handler is holding open. Raw sockets, not http.server, so a
test can choose exactly which byte arrives when (or never).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable

Handler = Callable[[socket.socket, "FaultServer"], None]


class FaultServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.stopped = threading.Event()
        self.requests: list[bytes] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(10)
            self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self._thread.join(5)
        self._sock.close()
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def read_request(conn: socket.socket, server: FaultServer) -> tuple[str, str, bytes]:
    """Read one HTTP request; returns (method, path, body) and records the raw request."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return "", "", b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    server.requests.append(head + b"\r\n\r\n" + body)
    method, path = head.split(b"\r\n")[0].decode().split(" ")[:2]
    return method, path, body


def response_bytes(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return (head + "Connection: close\r\n\r\n").encode() + body


def answer(
    status: int, body: bytes | str, content_type: str = "application/json", delay: float = 0
) -> Handler:
    payload = body.encode() if isinstance(body, str) else body

    def handle(conn: socket.socket, server: FaultServer) -> None:
        read_request(conn, server)
        if delay:
            server.stopped.wait(delay)
        conn.sendall(response_bytes(status, payload, content_type))

    return handle


def plain_reply(conn: socket.socket, server: FaultServer) -> None:
    """Answers whatever arrives (a TLS ClientHello included) with a plain-text HTTP error."""
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def never_answer(conn: socket.socket, server: FaultServer) -> None:
    """Accepts, reads the request, then says nothing: a hung worker pool."""
    read_request(conn, server)
    server.stopped.wait(60)


def slow_body(conn: socket.socket, server: FaultServer) -> None:
    """Headers at once, then one byte every 200 ms of a body that never ends in time."""
    read_request(conn, server)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    while not server.stopped.wait(0.2):
        conn.sendall(b" ")


def reset_mid_body(conn: socket.socket, server: FaultServer) -> None:
    """Headers and part of the body, then a TCP reset (SO_LINGER 0 turns close into RST)."""
    read_request(conn, server)
    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"te')
    time.sleep(0.05)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def openai(model: str = "glm-4", stream_delay: float = 0.0) -> Handler:
    """A tiny OpenAI-compatible engine: /v1/models and /v1/chat/completions (plain or streamed)."""

    def handle(conn: socket.socket, server: FaultServer) -> None:
        method, path, body = read_request(conn, server)
        if method == "GET" and path == "/v1/models":
            conn.sendall(response_bytes(200, json.dumps({"data": [{"id": model}]}).encode()))
            return
        request = json.loads(body or b"{}")
        if request.get("model") != model:
            conn.sendall(response_bytes(404, b'{"error": "model not found"}'))
            return
        choice = {"index": 0, "message": {"role": "assistant", "content": "Hi"}}
        if not request.get("stream"):
            conn.sendall(response_bytes(200, json.dumps({"choices": [choice]}).encode()))
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        server.stopped.wait(stream_delay)
        chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}
        conn.sendall(f"data: {json.dumps(chunk)}\n\n".encode() + b"data: [DONE]\n\n")

    return handle


def vllm_metrics(state: dict[str, float]) -> Handler:
    """An engine's /metrics in vLLM's names, read from `state` at each request (the test edits it)."""

    def handle(conn: socket.socket, server: FaultServer) -> None:
        read_request(conn, server)
        text = (
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="glm"}} {state["waiting"]}\n'
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="glm"}} {state["running"]}\n'
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f'vllm:kv_cache_usage_perc{{model_name="glm"}} {state["kv"]}\n'
            "# TYPE vllm:generation_tokens counter\n"
            f'vllm:generation_tokens_total{{model_name="glm"}} {state["tokens"]}\n'
        )
        conn.sendall(response_bytes(200, text.encode(), "text/plain; version=0.0.4"))

    return handle
