"""Runs one collector under a deadline and publishes what happened to the store.

A hung call (NVML, a socket, a D-state read) cannot be interrupted in Python, so each run gets its
own worker thread and the caller waits at most the deadline. Past it the run is reported failed
and stuck; until that worker returns no new run starts, so a hung dependency costs one thread,
never one more per interval.
"""

from __future__ import annotations

import logging
import threading
import time

from ..collectors.base import Collector, CollectorError, Result
from .store import Store

log = logging.getLogger(__name__)


class CollectorRunner:
    def __init__(self, collector: Collector, store: Store, timeout: float) -> None:
        self.collector = collector
        self.store = store
        self.timeout = timeout
        self._worker: threading.Thread | None = None
        self._started = 0.0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.collector.name

    def run_once(self) -> bool:
        """One run, waiting at most the deadline. True when it succeeded."""
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                if time.monotonic() - self._started < self.timeout:
                    return False  # another caller's run (e.g. before a reload) is still within its deadline
                self.store.publish_failure(
                    self.name, "skipped_stuck", "previous run has not returned yet", 0.0, stuck=True
                )
                log.warning("collector still stuck, run skipped", extra={"collector": self.name})
                return False
            outcome: dict[str, object] = {}
            done = threading.Event()
            started = self._started = time.monotonic()
            worker = threading.Thread(
                target=self._work, args=(outcome, done), name=f"collector-{self.name}", daemon=True
            )
            self._worker = worker
            worker.start()
        if not done.wait(self.timeout):
            self.store.publish_failure(
                self.name,
                "timeout",
                f"no result after {self.timeout:g}s",
                time.monotonic() - started,
                stuck=True,
            )
            log.error(
                "collector passed its deadline", extra={"collector": self.name, "timeout": self.timeout}
            )
            return False
        duration = time.monotonic() - started
        error = outcome.get("error")
        result = outcome.get("result")
        if isinstance(result, Result):
            self.store.publish_success(self.name, result, duration)
            return True
        kind = error.kind if isinstance(error, CollectorError) else "internal"
        self.store.publish_failure(self.name, kind, str(error), duration)
        log.warning("collector failed", extra={"collector": self.name, "kind": kind, "error": str(error)})
        return False

    def _work(self, outcome: dict[str, object], done: threading.Event) -> None:
        try:
            result = self.collector.collect()
            if not isinstance(result, Result):
                raise CollectorError("internal", f"collect() returned {type(result).__name__}, not Result")
            outcome["result"] = result
        except Exception as exc:  # a collector bug must never take the daemon down
            if not isinstance(exc, CollectorError):
                log.exception("collector raised", extra={"collector": self.name})
            outcome["error"] = exc
        finally:
            done.set()
            # If the caller already gave up on us, this late return ends the stuck state.
            self.store.set_stuck(self.name, False)
