"""The api's request trace: one JSON line per point a request passes, for the exporter's trace logs.

    {"ts": 1764078127.456789, "stage": "queued", "request_id": "3f2a..."}

`ts` is seconds since the epoch. A point marks the END of the stage it names (the exporter's
`logs` collector with `trace: true` observes its `ts` minus the previous point's), so a request
that went through reads:

    received    the handler got a valid request (starts the clock: no duration of its own)
    queued      the handler is about to LPUSH the job: the time spent in the api before the queue
                (the injected hang and slow faults; a request stuck in the deadlock never gets
                this far: its trace is `received` alone)
    dequeued    a worker BRPOPped it: the time the job waited in the Redis list
    generated   the engine answered the worker: generation
    done        the handler got the result and answers 200: the way back through Redis
    error       or: the handler answers anything else (500, 502, 503, 504), after whichever point
                the request reached; it carries the answer's `status`

`queued` is written just before the LPUSH rather than after it: a worker may pop the job and write
`dequeued` before the handler's LPUSH returns, and the file must hold a request's points in order.
A point is written whole by one write() call, under a lock, with its `ts` taken under that lock, so
points written by the handler and worker threads never interleave and the file is in time order.
The file is opened for append and unbuffered: a follower sees every point as soon as it is written.
Requests refused as bad (400, 413) have no trace. A request that timed out (504) is closed by its
`error`; should its worker still get to it later, its `dequeued` and `generated` points start a new
clock in the exporter, which forgets it in time.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import BinaryIO

log = logging.getLogger("demo.api")

STAGES = ("received", "queued", "dequeued", "generated", "done", "error")


class Trace:
    """Trace points appended to `path`; with no path, points are dropped. OSError when the file
    cannot be opened (its directory is created first, like the log file's)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._failing = False
        self._file: BinaryIO | None = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (open for the process's life)

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def point(self, request_id: str, stage: str, status: int | None = None) -> None:
        """Append one point; a failed write is logged (once until writes succeed again), never raised."""
        if self._file is None:
            return
        with self._lock:
            point: dict[str, object] = {"ts": time.time(), "stage": stage, "request_id": request_id}
            if status is not None:
                point["status"] = status
            try:
                self._file.write(json.dumps(point).encode() + b"\n")
            except (OSError, ValueError) as exc:  # ValueError: closed
                if not self._failing:
                    log.error("cannot write the trace file %s: %s", self.path, exc)
                self._failing = True
                return
            if self._failing:
                log.info("writing the trace file %s again", self.path)
            self._failing = False
