"""When each phase of a probe began and ended: our own DNS lookup, then httpx's trace events."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

from .failures import ProbeFailure

PHASES = ("resolve", "connect", "tls", "processing", "transfer")


class Timings:
    """Phase timestamps, fed by our own DNS lookup and httpx's trace extension."""

    def __init__(self, on_connected: Callable[[], None] = lambda: None) -> None:
        self.marks: dict[str, float] = {}
        self.connected = False
        self.status: int | None = None  # of the answer, once its headers arrived
        self._on_connected = on_connected

    def mark_connected(self) -> None:
        self.marks["connection.connect_tcp.complete"] = time.monotonic()
        self.connected = True
        self._on_connected()

    async def resolve(self, host: str, port: int) -> None:
        self.marks["resolve.started"] = time.monotonic()
        try:
            await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ProbeFailure("dns", f"cannot resolve {host}: {exc.strerror}") from None
        self.marks["resolve.complete"] = time.monotonic()

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            self.mark_connected()
        else:
            self.marks[event] = time.monotonic()

    def in_tls_handshake(self) -> bool:
        return (
            "connection.start_tls.started" in self.marks and "connection.start_tls.complete" not in self.marks
        )

    def span(self, start: str, end: str) -> float | None:
        if start in self.marks and end in self.marks:
            return max(0.0, self.marks[end] - self.marks[start])
        return None

    def phases(self) -> dict[str, float]:
        spans = {
            "resolve": self.span("resolve.started", "resolve.complete"),
            "connect": self.span("connection.connect_tcp.started", "connection.connect_tcp.complete"),
            "tls": self.span("connection.start_tls.started", "connection.start_tls.complete"),
            "processing": self.span(
                "http11.send_request_headers.started", "http11.receive_response_headers.complete"
            ),
            "transfer": self.span(
                "http11.receive_response_body.started", "http11.receive_response_body.complete"
            ),
        }
        return {phase: value for phase, value in spans.items() if value is not None}
