"""A small real service for the diagnosis matrix, with the faults demo/ does not have.

    python bench/_matrix_service.py --name NAME --port PORT --mode-file PATH [--retry-bind]

It serves `POST /inference` one connection at a time (a single worker, as small model servers
often run) and behaves as the mode file says, read again before every connection:

    healthy      200 {"text": "ok"}
    non_json     200 with an HTML page where a client expects JSON
    reset        the headers and half a body, then a TCP reset
    hung_accept  stops calling accept(): connections wait in the kernel's queue, unanswered
    spin         the request's handler enters a CPU loop it never leaves (only a restart clears it)

With --retry-bind a port held by another process does not end it: it keeps trying every half
second, alive and listening nowhere, as a supervised service does. It prints `ready pid=PID` once
it listens, dies with its parent (PR_SET_PDEATHSIG) and exits after an hour at most.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import faultservers  # noqa: E402

LIFETIME = 3600.0
HTML = b"<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"


class _LastRequest:
    """What faultservers' handlers record requests into; one is enough here."""

    def __init__(self) -> None:
        self.requests: collections.deque[bytes] = collections.deque(maxlen=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="a marker for the exporter's cmdline match")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode-file", type=Path, required=True)
    parser.add_argument("--retry-bind", action="store_true")
    args = parser.parse_args()
    _die_with_parent()
    listener = _listen(args.port, args.retry_bind)
    print(f"ready pid={os.getpid()}", flush=True)
    deadline = time.monotonic() + LIFETIME
    while time.monotonic() < deadline:
        mode = _mode(args.mode_file)
        if mode == "hung_accept":
            time.sleep(0.1)
            continue
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(10)
            with contextlib.suppress(OSError):  # the client went away: serve the next one
                _serve(conn, mode)


def _serve(conn: socket.socket, mode: str) -> None:
    if mode == "reset":
        faultservers.reset_mid_body(conn, _LastRequest())
        return
    faultservers.read_request(conn, _LastRequest())
    if mode == "spin":
        _spin()
    if mode == "non_json":
        conn.sendall(faultservers.response_bytes(200, HTML, "text/html"))
    else:
        conn.sendall(faultservers.response_bytes(200, b'{"text": "ok"}'))


def _spin() -> None:
    value = 0
    while True:
        value = (value * 31 + 7) % 1_000_003  # the handler never leaves this loop


def _listen(port: int, retry: bool) -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not past a live listener
    while True:
        try:
            listener.bind(("127.0.0.1", port))
            break
        except OSError as exc:
            if not retry:
                sys.exit(f"cannot listen on {port}: {exc.strerror}")
            time.sleep(0.5)
    listener.listen(64)
    listener.settimeout(0.1)
    return listener


def _mode(path: Path) -> str:
    try:
        return path.read_text().strip() or "healthy"
    except OSError:
        return "healthy"


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


if __name__ == "__main__":
    main()
