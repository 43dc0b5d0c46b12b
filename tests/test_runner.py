"""Deadlines, stuck collectors and the store: a hung read never hangs /metrics or piles up threads."""

from __future__ import annotations

import threading
import time

import httpx

from autoglm_exporter.base.deadline import WATCHDOG
from autoglm_exporter.collectors.base import Collector, CollectorError, Result
from autoglm_exporter.core.runner import CollectorRunner
from autoglm_exporter.core.scheduler import CollectorScheduler
from autoglm_exporter.core.store import Store
from autoglm_exporter.metrics.spec import gauge
from autoglm_exporter.web.server import ExporterHTTPServer, ServerHooks

from .conftest import parse_metrics, sample, wait_until

VALUE = gauge("autoglm_test_value", "A value the test collector reports.")


class Hanging(Collector):
    """Blocks like a wedged NVML call until the test releases it."""

    name = "hanging"
    metrics = (VALUE,)

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.hang = True

    def collect(self) -> Result:
        self.calls += 1
        if self.hang:
            self.release.wait(30)
        return Result([VALUE.single(42)])


class Failing(Collector):
    name = "failing"
    metrics = (VALUE,)

    def __init__(self) -> None:
        self.error: Exception | None = None

    def collect(self) -> Result:
        if self.error:
            raise self.error
        return Result([VALUE.single(7)])


def _page(store: Store) -> dict:
    return parse_metrics(store.render()[0].decode())


def test_a_failed_run_drops_its_series_and_counts_the_kind() -> None:
    store = Store()
    collector = Failing()
    store.set_collectors(["failing"])
    runner = CollectorRunner(collector, store, timeout=5)
    assert runner.run_once()
    assert sample(_page(store), "autoglm_test_value") == 7
    collector.error = CollectorError("parse_error", "garbage in /proc/stat")
    assert not runner.run_once()
    page = _page(store)
    assert sample(page, "autoglm_test_value") is None  # never served stale
    assert sample(page, "autoglm_exporter_collector_success", collector="failing") == 0
    assert (
        sample(page, "autoglm_exporter_collector_errors_total", collector="failing", kind="parse_error") == 1
    )
    collector.error = ZeroDivisionError("a bug")
    runner.run_once()
    page = _page(store)
    assert sample(page, "autoglm_exporter_collector_errors_total", collector="failing", kind="internal") == 1
    assert sample(page, "autoglm_exporter_collector_errors_total", collector="failing", kind="timeout") == 0


def test_a_hung_collector_is_stuck_and_never_started_twice() -> None:
    store = Store()
    collector = Hanging()
    store.set_collectors(["hanging"])
    runner = CollectorRunner(collector, store, timeout=0.1)
    threads_before = set(threading.enumerate())
    assert not runner.run_once()
    page = _page(store)
    assert sample(page, "autoglm_exporter_collector_stuck", collector="hanging") == 1
    assert sample(page, "autoglm_exporter_collector_errors_total", collector="hanging", kind="timeout") == 1
    for _ in range(20):
        assert not runner.run_once()
    assert collector.calls == 1  # the stuck call was not started again
    # One thread holds the hung call, not one per run; the process-wide watchdog may have started
    # here too (it is the first deadline in a test worker's process). Other tests' threads don't count.
    started = [t.name for t in threading.enumerate() if t not in threads_before]
    assert started.count("collector-hanging-worker") == 1
    assert set(started) <= {"collector-hanging-worker", WATCHDOG.name}
    page = _page(store)
    assert (
        sample(page, "autoglm_exporter_collector_errors_total", collector="hanging", kind="skipped_stuck")
        == 20
    )
    collector.hang = False
    collector.release.set()
    wait_until(lambda: sample(_page(store), "autoglm_exporter_collector_stuck", collector="hanging") == 0)
    assert runner.run_once()
    assert sample(_page(store), "autoglm_test_value") == 42


def test_metrics_stay_fast_and_threads_flat_while_a_collector_hangs() -> None:
    """The real scheduler and HTTP server, a collector that hangs on every run, many intervals."""
    store = Store()
    collector = Hanging()
    store.set_collectors(["hanging"])
    scheduler = CollectorScheduler()
    server = ExporterHTTPServer(("127.0.0.1", 0), store, ServerHooks(reload=lambda: (True, "")))
    server.start_background()
    try:
        scheduler.start([(CollectorRunner(collector, store, timeout=0.05), 0.1)], jitter=0)
        url = f"http://127.0.0.1:{server.port}/metrics"
        with httpx.Client(timeout=2) as client:
            wait_until(
                lambda: 'autoglm_exporter_collector_stuck{collector="hanging"} 1.0' in client.get(url).text
            )
            threads = threading.active_count()
            slowest = 0.0
            deadline = time.monotonic() + 2.0  # 20 intervals
            while time.monotonic() < deadline:
                started = time.monotonic()
                response = client.get(url)
                slowest = max(slowest, time.monotonic() - started)
                assert response.status_code == 200
                time.sleep(0.02)
            assert threading.active_count() <= threads + 1
            assert slowest < 0.5  # a scrape never waits for the collector
            assert collector.calls == 1
            page = parse_metrics(client.get(url).text)
            assert (
                sample(
                    page, "autoglm_exporter_collector_errors_total", collector="hanging", kind="skipped_stuck"
                )
                >= 10
            )
    finally:
        scheduler.stop()
        server.stop()
        collector.release.set()


def test_rendered_page_is_cached_until_the_next_publish() -> None:
    store = Store()
    store.set_collectors(["failing"])
    runner = CollectorRunner(Failing(), store, timeout=5)
    runner.run_once()
    first, _ = store.render()
    assert store.render()[0] is first  # same bytes object: no re-render between publishes
    runner.run_once()
    assert store.render()[0] is not first


def test_a_scrape_reads_the_page_the_publisher_rendered(monkeypatch) -> None:
    """After the first scrape of a format, every page is rendered by the publishing collector's
    thread: a scrape never builds one, so a burst of scrapers never waits for a render."""
    from autoglm_exporter.core import store as store_module

    renders: list[str] = []
    real_parts = store_module.Store._page_parts

    def counting(store):  # type: ignore[no-untyped-def]
        renders.append(threading.current_thread().name)
        return real_parts(store)

    monkeypatch.setattr(store_module.Store, "_page_parts", counting)
    store = Store()
    store.set_collectors(["failing"])
    runner = CollectorRunner(Failing(), store, timeout=5)
    runner.run_once()
    store.render()  # the first scrape of the text format renders it
    renders.clear()
    runner.run_once()  # a publish: the collector's worker renders the new page
    assert renders and all(name.startswith("collector-") for name in renders)
    renders.clear()
    for _ in range(20):
        page, _ = store.render()
    assert renders == []  # scrapes only read
    assert b"autoglm_test_value 7.0" in page
