"""How long this process wanted to run and could not: the exporter's own stalls.

A monitor that is not scheduled for seconds (a starved machine, a CPU quota, a frozen VM, a C call
holding the interpreter) finds every wait it times longer by that much: a probe answered during the
stall looks unanswered, every collector's deadline passes at the same instant. Measured on the real
vLLM flood on 2 cores: the engine's two busy threads took 14.4 of 14.4 CPU-seconds in 7.2 s while
every other runnable thread, the exporter's included, waited.

A ticker thread sleeps TICK at a time and adds up how late it wakes, when it is later than GRACE
(GIL hand-offs and timer slack are not stalls). `stalled()` also counts a tick that is overdue
now, so whoever runs first after a stall already sees it. Deadlines and hang thresholds are then
kept in the exporter's awake time: `awake_since()` is the time it could watch since a mark.
Until `start()` nothing is measured and `stalled()` stays 0 (a library use, a unit test).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

TICK = 0.25  # seconds between the ticker's wake-ups
GRACE = 0.1  # a wake-up later than this is a stall


class StallClock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stalled = 0.0
        self._due: float | None = None  # when the ticker should wake next; None until started

    def start(self) -> None:
        """Start measuring, for the life of the process (once; later calls do nothing)."""
        with self._lock:
            if self._due is not None:
                return
            self._due = time.monotonic() + TICK
        threading.Thread(target=self._run, name="stall-clock", daemon=True).start()

    def stalled(self) -> float:
        """Seconds this process has been stalled since start(), one going on now included."""
        now = time.monotonic()
        with self._lock:
            return self._stalled + self._late(now)

    def awake_since(self, at: float, stalled_then: float) -> float:
        """Seconds since `at` (time.monotonic()) that the process was not stalled, given what
        stalled() said at `at`."""
        return max(0.0, time.monotonic() - at - (self.stalled() - stalled_then))

    def wait(self, wait_for: Callable[[float], bool], timeout: float) -> bool:
        """Call wait_for(seconds) (an Event's wait, say: True once done) until it is done or
        `timeout` of awake time has passed (a stall meanwhile adds to it); whether it is done."""
        start, stalled_then = time.monotonic(), self.stalled()
        left = timeout
        while not wait_for(max(0.0, left)):
            left = timeout - self.awake_since(start, stalled_then)
            if left <= 0:
                return False
        return True

    def _late(self, now: float) -> float:
        """With the lock held: how late the ticker is now, when that is a stall."""
        if self._due is None:
            return 0.0
        late = now - self._due
        return late if late > GRACE else 0.0

    def _run(self) -> None:
        while True:
            time.sleep(TICK)
            now = time.monotonic()
            with self._lock:
                self._stalled += self._late(now)
                self._due = now + TICK


# The exporter's process: started by the daemon, read by deadlines and hang thresholds.
STALL = StallClock()
