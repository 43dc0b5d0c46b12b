"""Runs one collector under a deadline and publishes what happened to the store.

Each collector has one DeadlineWorker: its run happens in that worker thread, and the scheduler
that asks for it does not wait. The shared watchdog publishes "failed: past its deadline" at the
deadline while the run still hangs; until that run returns no new run starts (each skipped turn
is counted as skipped_stuck), so a hung dependency costs one thread, never one more per interval,
and a run never holds two threads.

A reload that changes a collector's settings makes a new runner that succeeds the old one: it
shares the old one's worker, so runs of one collector never overlap across a reload (nor pile up
threads behind a hung one), and before its first run the new collector adopts the state of the
items whose config did not change (Collector.adopt), after the old runs are done with it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from ..base.deadline import WATCHDOG, DeadlineWorker
from ..collectors.base import Collector, CollectorError, Result
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class _Run:
    started: float
    succeeded: bool = False
    returned: bool = False  # the collector returned before its deadline
    timed_out: bool = False  # the deadline came first
    watch: int | None = None
    finished: threading.Event = field(default_factory=threading.Event)


class CollectorRunner:
    def __init__(
        self, collector: Collector, store: Store, timeout: float, succeeds: CollectorRunner | None = None
    ) -> None:
        self.collector = collector
        self.store = store
        self.timeout = timeout
        self._worker: DeadlineWorker = (
            succeeds._worker if succeeds else DeadlineWorker(f"collector-{collector.name}")
        )
        self._succeeds = succeeds  # until this runner's first run has adopted its state
        self._retired = False
        self._lock = threading.Lock()
        self.last_started: float | None = None  # monotonic time the latest run began; None: never ran

    @property
    def name(self) -> str:
        return self.collector.name

    def retire(self) -> None:
        """A reload replaced or removed this runner: what its runs still in flight find is not
        published (the runner that succeeds it publishes for the collector now)."""
        self._retired = True

    def trigger(self) -> None:
        """Start a run without waiting for it (the scheduler's job)."""
        self._start()

    def run_once(self) -> bool:
        """One run, waiting until it is published or its deadline passed (doctor, tests).

        True when it succeeded."""
        run = self._start()
        if run is None:
            return False
        run.finished.wait()  # set by the run's end or by the watchdog at its deadline
        return run.succeeded

    def _start(self) -> _Run | None:
        with self._lock:
            busy_for = self._worker.busy_for()
            if busy_for is not None:
                if busy_for >= self.timeout:
                    self.store.publish_failure(
                        self.name, "skipped_stuck", "previous run has not returned yet", 0.0, stuck=True
                    )
                    log.warning("collector still stuck, run skipped", extra={"collector": self.name})
                return None  # else a run within its deadline (interval shorter than timeout): let it end
            run = _Run(time.monotonic())
            self.last_started = run.started
            self._worker.start(self._collect, lambda result, error: self._finished(run, result, error))
            run.watch = WATCHDOG.watch(run.started + self.timeout, lambda: self._deadline(run))
        return run

    def _collect(self) -> Result[object]:
        """One run, in the worker (so never beside a run of the runner this one succeeds)."""
        self._adopt()
        return self.collector.collect()

    def _adopt(self) -> None:
        """Take over the predecessor's state, once; a predecessor that never ran (two reloads
        before a run) first takes over its own predecessor's."""
        if self._succeeds is not None:
            previous, self._succeeds = self._succeeds, None
            previous._adopt()
            self.collector.adopt(previous.collector)

    def _deadline(self, run: _Run) -> None:
        with self._lock:
            if run.returned:
                return
            run.timed_out = True
        if self._retired:
            run.finished.set()
            return
        self.store.publish_failure(
            self.name,
            "timeout",
            f"no result after {self.timeout:g}s",
            time.monotonic() - run.started,
            stuck=True,
        )
        log.error("collector passed its deadline", extra={"collector": self.name, "timeout": self.timeout})
        run.finished.set()

    def _finished(self, run: _Run, result: object, error: BaseException | None) -> None:
        with self._lock:
            late = run.timed_out
            run.returned = not late
            if run.watch is not None:
                WATCHDOG.cancel(run.watch)
        if late:
            # The deadline already reported this run failed; its late return only ends "stuck".
            self.store.set_stuck(self.name, False)
            return
        if not self._retired:
            run.succeeded = self._publish(result, error, time.monotonic() - run.started)
        run.finished.set()

    def _publish(self, result: object, error: BaseException | None, duration: float) -> bool:
        if error is None and not isinstance(result, Result):
            error = CollectorError("internal", f"collect() returned {type(result).__name__}, not Result")
        expected = self.collector.facts_type
        facts = result.facts if isinstance(result, Result) else None
        if error is None and expected is not None and facts is not None and not isinstance(facts, expected):
            error = CollectorError(
                "internal", f"facts of type {type(facts).__name__}, declared {expected.__name__}"
            )
        if error is None and isinstance(result, Result):
            self.store.publish_success(self.name, result, duration)
            return True
        if not isinstance(error, CollectorError):
            assert error is not None
            log.error(
                "collector raised",
                extra={"collector": self.name},
                exc_info=(type(error), error, error.__traceback__),
            )
        kind = error.kind if isinstance(error, CollectorError) else "internal"
        self.store.publish_failure(self.name, kind, str(error), duration)
        log.warning("collector failed", extra={"collector": self.name, "kind": kind, "error": str(error)})
        return False
