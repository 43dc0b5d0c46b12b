"""Helpers shared by the tests (through conftest.py) and the bench scripts.

No pytest here: the bench scripts import this module too (they run as scripts from the repo root
and put the root on sys.path). What differs between the two stays with each caller: a missing
binary fails a test (conftest.require_binary) and stops a benchmark (bench/_common.require_binary).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
# How long a component the tests start (the exporter, redis-server, Prometheus, Alertmanager...) may
# take to answer. Generous: CI shares its 2 cores with other work, and `make test` runs tests side
# by side; a component that exits fails the wait at once, with its log, so a broken one costs no time.
START_WITHIN = 60.0


class BackgroundHTTPServer:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port), served from a thread while it is used as a
    context manager. Subclasses build their handler and call `_serve(handler)` in __init__."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until predicate returns something truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def find_binary(name: str) -> str | None:
    """The path of a real component (on PATH, or a Debian package's /usr/bin), None when missing."""
    if os.path.isabs(name):
        return name if os.access(name, os.X_OK) else None
    return shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)


def start_logged(command: list[str], log_path: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """Start a process with stdout and stderr in `log_path`; stop it with stop_process."""
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen
        )


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
    """Signal a process, give it `timeout` seconds to exit, then kill it; reaped either way."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return int(process.returncode)


def wait_http_ok(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = START_WITHIN
) -> None:
    """Wait until `url` answers 200; fail at once, with the log, when the server exits."""

    def ok() -> bool:
        assert process.poll() is None, f"{url}: the server exited:\n{log.read_text(errors='replace')}"
        return httpx.get(url, timeout=2).status_code == 200

    wait_until(ok, timeout=timeout, interval=0.1)
