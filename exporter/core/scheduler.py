"""One APScheduler job per collector: its own interval, a little jitter, never overlapping itself.

A job only asks the collector's runner to start a run; the run happens in the runner's own worker
thread, so the scheduler's threads never wait for a collector. `update()` applies a reloaded
config as one step: jobs whose runner and interval did not change keep their timing, new ones run
at once, changed ones are rescheduled, removed ones go.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from .runner import CollectorRunner

# APScheduler logs every job start at INFO; that is our debug level.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

Job = tuple[CollectorRunner, float]  # a runner and its interval in seconds


class CollectorScheduler:
    def __init__(self) -> None:
        self._scheduler: BackgroundScheduler | None = None
        self._jobs: dict[str, Job] = {}
        self._jitter = 0.0
        self._lock = threading.Lock()

    def start(self, jobs: Sequence[Job], jitter: float) -> None:
        """Start the schedule (replacing any earlier one); every collector runs once right away."""
        self.stop()
        # Jobs return at once (runs happen in the runners' workers): two threads are plenty.
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=2)}, timezone="UTC"
        )
        scheduler.start()
        with self._lock:
            self._scheduler, self._jobs, self._jitter = scheduler, {}, jitter
        self.update(jobs, jitter)

    def update(self, jobs: Sequence[Job], jitter: float) -> None:
        """Make the schedule run exactly `jobs`, touching only what changed."""
        with self._lock:
            scheduler = self._scheduler
            if scheduler is None:
                return
            wanted = {runner.name: (runner, interval) for runner, interval in jobs}
            for name in [name for name in self._jobs if name not in wanted]:
                scheduler.remove_job(name)
                del self._jobs[name]
            for name, (runner, interval) in wanted.items():
                current = self._jobs.get(name)
                if (
                    current is not None
                    and current[0] is runner
                    and current[1] == interval
                    and jitter == self._jitter
                ):
                    continue
                if current is not None:
                    scheduler.remove_job(name)
                scheduler.add_job(
                    runner.trigger,
                    IntervalTrigger(
                        seconds=interval, jitter=min(jitter, interval / 2) or None, timezone="UTC"
                    ),
                    id=name,
                    name=f"collector {name}",
                    max_instances=1,
                    coalesce=True,
                    misfire_grace_time=None,
                    next_run_time=datetime.now().astimezone(),
                )
                self._jobs[name] = (runner, interval)
            self._jitter = jitter

    def stop(self) -> None:
        with self._lock:
            scheduler, self._scheduler, self._jobs = self._scheduler, None, {}
        if scheduler is not None:
            # Don't wait: jobs only start runs, and a stuck run's worker is a daemon thread.
            scheduler.shutdown(wait=False)
