"""A new state a probe (or the Redis collector) saw is read again seconds later, not an interval later.

Two readings confirm a verdict (no flapping on one bad request); the probe collector's second
reading comes `READ_AGAIN_AFTER` seconds after the first that saw something new, so an instant
failure is named in seconds even at a long interval. Here the interval is 10 minutes: within the
test, every reading after the first at start-up is a read-again one.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from autoglm_exporter.collectors.base import Collector, Result
from autoglm_exporter.core.runner import CollectorRunner
from autoglm_exporter.core.scheduler import CollectorScheduler
from autoglm_exporter.core.store import Store

from . import faultservers as fs
from .conftest import free_port, wait_until

LONG_INTERVAL = 600  # seconds: no second scheduled probe during a test


def _exporter(
    tmp_path: Path, start_exporter, api: fs.FaultServer, redis_port: int | None = None, fast: str = ""
):
    """An exporter at a 10-minute interval watching service `api`: its client probe, or (with a
    `redis_port`) no probe but the Redis queue the service depends on. The `fast` collector reads
    every 5 s instead."""
    if redis_port is None:
        depends_on, watched = (
            "",
            (
                f"targets:\n  - {{name: inference, module: inference, url: '{api.url}/inference', service: api,"
                " timeout: 2s, expect: {json_field: text}}\nredis: []"
            ),
        )
    else:
        depends_on = "\n    depends_on: [queue]"
        watched = (
            f"targets: []\nredis:\n  - {{name: queue, address: '127.0.0.1:{redis_port}', timeout: 0.5s}}"
        )
    config = tmp_path / "autoglm.yml"
    config.write_text(
        f"""
global: {{interval: {LONG_INTERVAL}s, timeout: 3s, jitter: 0}}
collectors: {{system: {{enabled: false}}{f", {fast}: {{interval: 5s}}" if fast else ""}}}
services:
  - name: api
    match: {{port: {api.port}}}{depends_on}
engines: []
{watched}
"""
    )
    return start_exporter(f"--config.file={config}")


def _verdict(exporter) -> tuple[str, str] | None:
    verdict = exporter.get("/api/diagnosis").json()["verdict"]
    return (verdict["layer"], verdict["reason"]) if verdict else None


def test_an_instant_failure_is_named_after_a_second_reading_seconds_later(tmp_path, start_exporter) -> None:
    with fs.FaultServer(fs.answer(500, '{"error": "internal"}')) as api:
        exporter = _exporter(tmp_path, start_exporter, api)
        wait_until(lambda: _verdict(exporter) == ("client", "http_error"), timeout=60)
        assert len(api.requests) == 2  # the scheduled probe at start-up and the one that confirmed it


def test_redis_down_is_named_after_a_second_reading_seconds_later(tmp_path, start_exporter) -> None:
    with fs.FaultServer(fs.answer(200, '{"text": "Hello"}')) as api:
        exporter = _exporter(tmp_path, start_exporter, api, redis_port=free_port())
        wait_until(lambda: _verdict(exporter) == ("dependencies", "redis_down"), timeout=60)


def test_one_failed_request_alone_changes_nothing(tmp_path, start_exporter) -> None:
    answers = [fs.answer(500, '{"error": "internal"}')]  # the first request fails, every later one works

    def first_fails(conn, server) -> None:
        (answers.pop() if answers else fs.answer(200, '{"text": "Hello"}'))(conn, server)

    with fs.FaultServer(first_fails) as api:
        exporter = _exporter(tmp_path, start_exporter, api)
        wait_until(lambda: 'autoglm_probe_success{target="inference"} 1.0' in exporter.get("/metrics").text)
        diagnosis = exporter.get("/api/diagnosis").json()
        assert diagnosis["healthy"], diagnosis["verdict"]
        assert [c for c in diagnosis["history"] if c["kind"] == "verdict"] == []
        assert len(api.requests) == 2


@pytest.mark.parametrize("fast", ["probe", "process"])
def test_a_killed_service_is_one_verdict_whichever_collector_sees_it_first(
    tmp_path, start_exporter, fast
) -> None:
    """The process reading and the user's refused probe see one fault: the one that reads first
    has the other read again, so the verdict names it once, as a dead process."""
    with fs.FaultServer(fs.answer(200, '{"text": "Hello"}')) as api:
        exporter = _exporter(tmp_path, start_exporter, api, fast=fast)
        wait_until(lambda: 'autoglm_process_up{service="api"} 1.0' in exporter.get("/metrics").text)
        wait_until(lambda: exporter.get("/api/diagnosis").json()["healthy"])
        api.stop()
        wait_until(lambda: _verdict(exporter) == ("network", "process_dead"), timeout=60)
        history = exporter.get("/api/diagnosis").json()["history"]
        assert [(c["kind"], c["reason"]) for c in history if c["kind"] == "verdict"] == [
            ("verdict", "process_dead")
        ]


class Counting(Collector):
    name = "counting"
    metrics = ()

    def __init__(self) -> None:
        self.runs = 0

    def collect(self) -> Result:
        self.runs += 1
        return Result([])


def test_a_collector_is_read_again_at_most_once_per_interval() -> None:
    """A reading that flaps every time must not make its collector loop."""
    store = Store()
    store.set_collectors(["counting"])
    collector = Counting()
    scheduler = CollectorScheduler()
    scheduler.start([(CollectorRunner(collector, store, timeout=1), LONG_INTERVAL)], jitter=0)
    try:
        wait_until(lambda: collector.runs == 1)  # the first scheduled run, at once
        scheduler.read_again_soon({"counting"}, 0.05)
        wait_until(lambda: collector.runs == 2)
        scheduler.read_again_soon({"counting"}, 0.05)  # within the same interval: refused
        scheduler.read_again_soon({"counting"}, 0.05)
        scheduler.read_again_soon({"unknown"}, 0.05)  # not scheduled: nothing to read
        time.sleep(0.5)  # ten times the delay asked for: a refused extra run would have come
        assert collector.runs == 2
    finally:
        scheduler.stop()


class Blocking(Collector):
    """A collector whose first run waits like a call past its timeout (until released)."""

    name = "blocking"
    metrics = ()

    def __init__(self) -> None:
        self.runs = 0
        self.release = threading.Event()

    def collect(self) -> Result:
        self.runs += 1
        if self.runs == 1:
            self.release.wait()
        return Result([])


def _read_again_at(scheduler: CollectorScheduler, name: str) -> datetime | None:
    job = scheduler._scheduler.get_job(f"{name}:again") if scheduler._scheduler else None
    return None if job is None else job.next_run_time


def test_the_second_look_is_timed_from_the_start_of_the_first() -> None:
    """A run that waited out the delay itself (a hung nvidia-smi killed at its deadline, a probe
    that timed out) is looked at again at once; a quick run still waits the delay."""
    store = Store()
    store.set_collectors(["blocking", "counting"])
    blocking, counting = Blocking(), Counting()
    scheduler = CollectorScheduler()
    runners = [CollectorRunner(blocking, store, timeout=60), CollectorRunner(counting, store, timeout=60)]
    scheduler.start([(runner, LONG_INTERVAL) for runner in runners], jitter=0)
    try:
        wait_until(lambda: counting.runs == 1)
        asked = datetime.now().astimezone()
        scheduler.read_again_soon({"counting"}, 100.0)  # far beyond the time its run took
        later = _read_again_at(scheduler, "counting")
        assert later is not None and later >= asked + timedelta(seconds=50)

        delay = 1.0
        wait_until(lambda: time.monotonic() - runners[0].last_started > delay)  # the run spans the delay
        blocking.release.set()
        wait_until(lambda: store.health()["blocking"].runs == 1)
        asked = datetime.now().astimezone()
        scheduler.read_again_soon({"blocking"}, delay)
        at_once = _read_again_at(scheduler, "blocking")
        assert at_once is None or at_once <= asked + timedelta(seconds=delay / 2)  # None: it ran already
        wait_until(lambda: blocking.runs == 2)
    finally:
        blocking.release.set()
        scheduler.stop()
