"""The api's two locks, and the fault that takes them in opposite orders and never lets go.

In normal operation every /inference request takes the registry lock for a moment (to count itself
in flight). `trigger()` starts two
threads that take them in opposite orders, each holding one and waiting for the other: a classic
lock-ordering deadlock, forever. From then on every /inference handler blocks on the registry lock,
so the service hangs while its shallow /health still answers. py-spy shows the two threads (and the
handlers) waiting in lock acquire at the lines below; nothing clears it but a restart.

The threads are daemons, so SIGTERM still ends the process.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("demo.api")


class ServiceLocks:
    def __init__(self) -> None:
        self.registry = threading.Lock()  # guards the table of requests in flight
        self.stats = threading.Lock()  # guards the statistics the reporter publishes
        self.in_flight = 0
        self._triggered = False
        self._guard = threading.Lock()

    def request_started(self) -> None:
        with self.registry:  # a deadlocked api hangs here
            self.in_flight += 1

    def request_finished(self) -> None:
        with self.registry:
            self.in_flight -= 1

    def trigger(self) -> None:
        """Deadlock both locks for good; returns once both threads hold their first lock (at once
        when it had already been done)."""
        with self._guard:
            if self._triggered:
                return
            self._triggered = True
        both_hold_one = threading.Barrier(3)
        threading.Thread(target=self._janitor, args=(both_hold_one,), name="janitor", daemon=True).start()
        threading.Thread(
            target=self._reporter, args=(both_hold_one,), name="stats-reporter", daemon=True
        ).start()
        both_hold_one.wait(timeout=5)
        log.debug("two threads now wait for each other's lock")

    def _janitor(self, both_hold_one: threading.Barrier) -> None:
        with self.registry:
            both_hold_one.wait(timeout=5)
            with self.stats:  # deadlock: waits for stats-reporter, which waits for the registry lock
                self.in_flight = 0

    def _reporter(self, both_hold_one: threading.Barrier) -> None:
        with self.stats:
            both_hold_one.wait(timeout=5)
            with self.registry:  # deadlock: waits for janitor, which waits for the stats lock
                self.in_flight += 0
