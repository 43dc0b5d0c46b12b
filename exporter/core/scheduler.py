"""One APScheduler job per collector: its own interval, never overlapping itself, a little jitter."""

from __future__ import annotations

import logging
from datetime import datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from .runner import CollectorRunner

# APScheduler logs every job start at INFO; that is our debug level.
logging.getLogger("apscheduler").setLevel(logging.WARNING)


class CollectorScheduler:
    def __init__(self) -> None:
        self._scheduler: BackgroundScheduler | None = None

    def start(self, jobs: list[tuple[CollectorRunner, float]], jitter: float) -> None:
        """Start (or replace) the schedule; every collector runs once right away."""
        self.stop()
        # One pool thread per collector: a job waits at most its collector's deadline.
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=max(1, len(jobs)))}, timezone="UTC"
        )
        now = datetime.now().astimezone()
        for runner, interval in jobs:
            scheduler.add_job(
                runner.run_once,
                "interval",
                seconds=interval,
                jitter=min(jitter, interval / 2) or None,
                id=runner.name,
                name=f"collector {runner.name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=now,
            )
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        if self._scheduler is not None:
            # Don't wait: a stuck collector's thread is a daemon and must not block shutdown.
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
