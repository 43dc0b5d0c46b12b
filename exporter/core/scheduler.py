"""One APScheduler job per collector: its own interval, a little jitter, never overlapping itself.

A job only asks the collector's runner to start a run; the run happens in the runner's own worker
thread, so the scheduler's threads never wait for a collector. `update()` applies a reloaded
config as one step: jobs whose runner and interval did not change keep their timing, new ones run
at once, changed ones are rescheduled, removed ones go. A read-again still pending for a collector
whose runner was replaced runs the new runner; one of a removed collector goes with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
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
        self._read_again_at: dict[str, float] = {}  # collector -> monotonic time of its last extra run

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
                _change_pending(scheduler, f"{name}:again", None)
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
                    if current[0] is not runner:
                        _change_pending(scheduler, f"{name}:again", runner)
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

    def read_again_soon(self, names: Iterable[str], delay: float) -> None:
        """One extra run of each named collector `delay` seconds after its latest run began, besides
        its schedule: a new state it saw is confirmed (or dropped) by a second reading in seconds,
        not an interval. Counted from the start, not the end: a run that waited out its deadline
        (a hung nvidia-smi, a probe's timeout) already spans the delay, so its second look starts
        at once. At most one extra run per interval, so a flapping reading cannot make a collector
        loop; none when the next scheduled run comes about as soon."""
        with self._lock:
            scheduler = self._scheduler
            if scheduler is None:
                return
            now = time.monotonic()
            for name in names:
                job = self._jobs.get(name)
                if job is None or delay >= job[1] / 2:
                    continue
                if now - self._read_again_at.get(name, float("-inf")) < job[1]:
                    continue
                self._read_again_at[name] = now
                began = job[0].last_started
                wait = delay if began is None else max(0.0, delay - (now - began))
                scheduler.add_job(
                    job[0].trigger,
                    DateTrigger(datetime.now().astimezone() + timedelta(seconds=wait)),
                    id=f"{name}:again",
                    name=f"collector {name}, read again",
                    replace_existing=True,
                    misfire_grace_time=None,
                )

    def stop(self) -> None:
        with self._lock:
            scheduler, self._scheduler, self._jobs = self._scheduler, None, {}
        if scheduler is not None:
            # Don't wait: jobs only start runs, and a stuck run's worker is a daemon thread.
            scheduler.shutdown(wait=False)


def _change_pending(scheduler: BackgroundScheduler, job_id: str, runner: CollectorRunner | None) -> None:
    """A pending one-off job runs `runner` instead, or goes when None; nothing when none is pending."""
    try:
        if runner is None:
            scheduler.remove_job(job_id)
        else:
            scheduler.modify_job(job_id, func=runner.trigger)
    except JobLookupError:
        pass  # it already ran
