"""Calls that may hang, run under a deadline: one long-lived worker thread per guarded resource.

A hung call (NVML on a wedged driver, a socket, a read in D state) cannot be interrupted in
Python. A `DeadlineWorker` runs calls one at a time in its own daemon thread; whoever waits for
one waits at most its deadline. Past it the call goes on in the worker, and until it returns the
worker is busy: a new call is refused at once (`StillBusy`), so a hung dependency holds one
thread, never one more per interval. The thread ends after `idle_exit` seconds without work and
is started again by the next call, so an abandoned worker leaves nothing behind.

`Watchdog` is one thread for the whole process that calls a function at a moment unless it was
cancelled first: the runner uses it to publish "past its deadline" while the run still hangs,
without a second thread per run.

Deadlines count the exporter's awake time (stall.py): a call is late when it had its time and did
not return, not because the exporter itself was not scheduled (every deadline would pass at once).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .stall import STALL

T = TypeVar("T")

log = logging.getLogger(__name__)

# What a finished call gives to its callback: (result, None) or (None, the exception it raised).
Done = Callable[[Any, BaseException | None], None]


class DeadlinePassed(Exception):
    """The call did not return within its deadline; it goes on in the worker until it does."""

    def __init__(self, timeout: float, doing: str) -> None:
        super().__init__(f"{doing or 'the call'} did not return within {timeout:g}s")
        self.doing = doing


class StillBusy(Exception):
    """A call abandoned earlier has still not returned: nothing new is started."""

    def __init__(self, since: float, doing: str) -> None:
        held = time.monotonic() - since
        super().__init__(f"{doing or 'a call'} has not returned for {held:.0f}s; nothing new started")
        self.doing = doing
        self.since = since


@dataclass
class _Call(Generic[T]):
    fn: Callable[[], T]
    done: Done
    finished: threading.Event = field(default_factory=threading.Event)
    result: T | None = None
    error: BaseException | None = None


class DeadlineWorker:
    """One daemon thread that runs calls one at a time; see the module docstring."""

    def __init__(self, name: str, idle_exit: float = 60.0) -> None:
        self.name = name
        self.idle_exit = idle_exit
        self._busy_stalled = 0.0  # the stall clock when the call in progress started
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._next: _Call[Any] | None = None
        self._thread: threading.Thread | None = None
        self._busy_since: float | None = None
        self._doing: Callable[[], str] = lambda: ""

    @property
    def busy_since(self) -> float | None:
        """time.monotonic() when the call in progress started; None when idle."""
        with self._lock:
            return self._busy_since

    def busy_for(self) -> float | None:
        """Seconds the call in progress has had so far, the exporter's own stalls left out; None when idle."""
        with self._lock:
            since, stalled_then = self._busy_since, self._busy_stalled
        return None if since is None else STALL.awake_since(since, stalled_then)

    def doing(self) -> str:
        """What the call in progress says it is doing (for messages)."""
        return self._doing()

    def start(self, fn: Callable[[], T], done: Done, doing: Callable[[], str] | None = None) -> bool:
        """Run fn() in the worker and return at once; done(result, error) runs in the worker after it.

        False (and nothing started) while a previous call has not returned."""
        return self._submit(_Call(fn, done), doing) is not None

    def run(self, fn: Callable[[], T], timeout: float, doing: Callable[[], str] | None = None) -> T:
        """fn() in the worker, waiting at most `timeout`. StillBusy, DeadlinePassed, or what fn raised."""
        call: _Call[T] = _Call(fn, lambda result, error: None)
        if self._submit(call, doing) is None:
            raise StillBusy(self.busy_since or time.monotonic(), self._doing())
        if not STALL.wait(call.finished.wait, timeout):
            raise DeadlinePassed(timeout, (doing or (lambda: ""))())
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def _submit(self, call: _Call[T], doing: Callable[[], str] | None) -> _Call[T] | None:
        with self._lock:
            if self._busy_since is not None:
                return None
            self._busy_since = time.monotonic()
            self._busy_stalled = STALL.stalled()
            self._doing = doing or (lambda: "")
            self._next = call
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"{self.name}-worker", daemon=True)
                self._thread.start()
            else:
                self._wake.notify()
        return call

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._next is None:
                    self._wake.wait(self.idle_exit)
                if self._next is None:
                    self._thread = None  # idle too long: end; the next call starts a new thread
                    return
                call, self._next = self._next, None
            try:
                call.result = call.fn()
            except Exception as exc:  # handed to the caller: never let it end the worker
                call.error = exc
            with self._lock:
                self._busy_since = None
            call.finished.set()
            try:
                call.done(call.result, call.error)
            except Exception:  # a callback bug must not end the worker either
                log.exception("deadline worker callback failed", extra={"worker": self.name})


@dataclass
class _Watch:
    fn: Callable[[], None]
    at: float  # time.monotonic() to call it, when the exporter does not stall meanwhile
    stalled_then: float  # the stall clock when it was asked for


class Watchdog:
    """One thread that calls each watched function at its moment, unless it was cancelled first.

    A cancelled watch is forgotten at once (its function released); its place in the time order
    is skipped when its moment comes. A moment is in awake time: when it comes after a stall of
    the exporter, the watch moves on by that stall."""

    def __init__(self, name: str = "watchdog") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int]] = []
        self._watched: dict[int, _Watch] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, at: float, fn: Callable[[], None]) -> int:
        """Call fn() at time.monotonic() `at`; returns a handle for cancel()."""
        with self._lock:
            handle = next(self._ids)
            self._watched[handle] = _Watch(fn, at, STALL.stalled())
            heapq.heappush(self._heap, (at, handle))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._wake.notify()
        return handle

    def cancel(self, handle: int) -> None:
        with self._lock:
            self._watched.pop(handle, None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(wait)
                _, handle = heapq.heappop(self._heap)
                watched = self._watched.get(handle)
                if watched is None:
                    continue  # cancelled
                moved = watched.at + (STALL.stalled() - watched.stalled_then)
                if moved > time.monotonic():
                    heapq.heappush(self._heap, (moved, handle))  # the exporter stalled meanwhile
                    continue
                del self._watched[handle]
            try:
                watched.fn()
            except Exception:  # a bug in one watched function must not end the watchdog
                log.exception("watchdog callback failed")


# One watchdog for the whole process: the runners of every collector share it.
WATCHDOG = Watchdog()
