"""The store: the latest finished Result of every collector, its health, and the rendered page.

Collectors publish here; /metrics, the diagnosis and doctor only read. Each publish is followed,
in the publishing thread and one at a time, by the observers of the published facts (the
forensics trigger) and then by the deriver (the verdict); a scrape only reads what the last
derivation left. The page is rendered by the publisher too (pages.py): the bytes of each format
are ready before a scrape asks, so a scrape costs a dictionary lookup, never a render, a
collector run, a diagnosis or a capture.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from .. import __version__
from ..base.health import CollectorHealth
from ..base.published import Published
from ..collectors.base import Result
from ..metrics.spec import Family, counter, gauge, info
from .pages import Pages

log = logging.getLogger(__name__)

SUCCESS = gauge(
    "autoglm_exporter_collector_success", "1 when the collector's last run succeeded, else 0.", "collector"
)
DURATION = gauge(
    "autoglm_exporter_collector_duration_seconds", "How long the collector's last run took.", "collector"
)
LAST_SUCCESS = gauge(
    "autoglm_exporter_collector_last_success_timestamp_seconds",
    "When the collector last succeeded, in seconds since the epoch; 0 if never.",
    "collector",
)
ERRORS = counter(
    "autoglm_exporter_collector_errors",
    "Failed runs of the collector by kind of failure.",
    "collector",
    "kind",
)
STUCK = gauge(
    "autoglm_exporter_collector_stuck",
    "1 while a run of the collector is still going past its deadline; no new run starts until it returns.",
    "collector",
)
RELOAD_OK = gauge(
    "autoglm_exporter_config_last_reload_successful", "1 when the last configuration load succeeded, else 0."
)
RELOAD_TIME = gauge(
    "autoglm_exporter_config_last_reload_success_timestamp_seconds",
    "When the configuration was last loaded successfully, in seconds since the epoch.",
)
BUILD_INFO = info(
    "autoglm_exporter_build",
    "Version of the exporter and of the Python running it.",
    "version",
    "python_version",
)

SELF_METRICS = (SUCCESS, DURATION, LAST_SUCCESS, ERRORS, STUCK, RELOAD_OK, RELOAD_TIME, BUILD_INFO)


# Computes what follows from the facts (the verdict): its metric families and an object for the API.
Deriver = Callable[[Published], tuple[list[Family], object]]
# Is told of every publish (the forensics trigger); it must return quickly.
Observer = Callable[[Mapping[str, object]], object]  # what it returns is not used


class Store:
    def __init__(self, deriver: Deriver | None = None, observers: Iterable[Observer] = ()) -> None:
        self._deriver = deriver
        self._observers = tuple(observers)
        self._derived: tuple[list[Family], object] | None = None
        # One derivation at a time, in the order of the publishes: the deriver keeps history.
        self._derive_lock = threading.Lock()
        self._lock = threading.Lock()
        self._results: dict[str, Result] = {}
        self._observed_at: dict[str, float] = {}
        self._health: dict[str, CollectorHealth] = {}
        self._reload_ok = True
        self._reload_time = time.time()
        self._version = 0
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_StoreView(self))
        self._pages = Pages(self._registry, lambda: self._version)

    # --- writers ----------------------------------------------------------------------------

    def set_collectors(self, names: Iterable[str]) -> None:
        """The enabled set changed (start, reload): keep health of survivors, forget the rest."""
        with self._lock:
            wanted = list(names)
            self._health = {name: self._health.get(name) or CollectorHealth() for name in wanted}
            self._results = {name: r for name, r in self._results.items() if name in self._health}
            self._observed_at = {n: t for n, t in self._observed_at.items() if n in self._health}
            self._version += 1
            reload = self._derived is not None
        if reload:
            self._derive(None)  # the verdict forgets links of collectors that are gone
        self._pages.refresh()

    def publish_success(self, name: str, result: Result, duration: float) -> None:
        with self._lock:
            health = self._health.get(name)
            if health is None:
                return  # removed by a reload while it ran
            now = time.time()
            health.runs += 1
            health.success = True
            health.duration = duration
            health.last_success = now
            health.last_error = None
            health.last_error_kind = None
            self._results[name] = result
            self._observed_at[name] = now
            self._version += 1
        # Derive right away, in the publishing thread: the verdict (and what remembers it over
        # time) sees every change, not only those a scrape happens to look at.
        self._derive(name)
        self._pages.refresh()

    def publish_failure(
        self, name: str, kind: str, message: str, duration: float, stuck: bool = False
    ) -> None:
        """A failed run's series are dropped, never served stale; its self-metrics say why."""
        with self._lock:
            health = self._health.get(name)
            if health is None:
                return
            health.runs += 1
            health.success = False
            health.duration = duration
            health.last_error = message
            health.last_error_kind = kind
            health.errors[kind] = health.errors.get(kind, 0) + 1
            health.stuck = health.stuck or stuck
            self._results.pop(name, None)
            self._observed_at[name] = time.time()
            self._version += 1
        self._derive(name)
        self._pages.refresh()

    def touch(self) -> None:
        """Something the deriver reads besides the facts changed (a stack capture finished)."""
        with self._lock:
            self._version += 1
        self._derive(None)
        self._pages.refresh()

    def set_stuck(self, name: str, stuck: bool) -> None:
        with self._lock:
            health = self._health.get(name)
            if health is None or health.stuck == stuck:
                return
            health.stuck = stuck
            self._version += 1
        self._pages.refresh()

    def set_reload_result(self, ok: bool) -> None:
        with self._lock:
            self._reload_ok = ok
            if ok:
                self._reload_time = time.time()
            self._version += 1
        self._pages.refresh()

    # --- readers ----------------------------------------------------------------------------

    def facts(self) -> dict[str, Any]:
        with self._lock:
            return {name: result.facts for name, result in self._results.items()}

    def published(self, publisher: str | None = None) -> Published:
        """The facts, their observation times and the health, as one consistent copy."""
        with self._lock:
            return self._published(publisher)

    def _published(self, publisher: str | None) -> Published:
        return Published(
            {name: result.facts for name, result in self._results.items()},
            dict(self._observed_at),
            self._copy_health(),
            publisher,
        )

    def health(self) -> dict[str, CollectorHealth]:
        with self._lock:
            return self._copy_health()

    def _copy_health(self) -> dict[str, CollectorHealth]:
        return {name: replace(h, errors=dict(h.errors)) for name, h in self._health.items()}

    def derived(self) -> Any:
        """The deriver's object (the diagnosis) of the last publish; None before the first one.

        Only reads: a scrape or a page never derives."""
        with self._lock:
            return self._derived[1] if self._derived is not None else None

    def _derived_families(self) -> list[Family]:
        with self._lock:
            return list(self._derived[0]) if self._derived is not None else []

    def _derive(self, publisher: str | None) -> None:
        """Tell the observers, then derive: once per publish, in the publishing thread."""
        if self._deriver is None and not self._observers:
            return
        with self._derive_lock:
            published = self.published(publisher)
            for observer in self._observers:
                try:
                    observer(published.facts)
                except Exception:  # an observer's bug must not fail the collector that published
                    log.exception("observer of published facts failed")
            if self._deriver is None:
                return
            try:
                derived = self._deriver(published)
            except Exception:  # keep serving the last diagnosis rather than none
                log.exception("deriving the verdict failed")
                return
            with self._lock:
                self._derived = derived
                self._version += 1  # the page now carries the new verdict: render it again

    def ready(self) -> bool:
        """Ready once every enabled collector has finished at least one run."""
        with self._lock:
            return all(h.runs > 0 for h in self._health.values())

    def render(self, accept: str = "", compressed: bool = False) -> tuple[bytes, str]:
        """The page for this Accept header (text format or OpenMetrics) and its content type."""
        return self._pages.page(accept, compressed)

    def _snapshot(self) -> tuple[list[Family], dict[str, CollectorHealth], bool, float]:
        with self._lock:
            families = [family for result in self._results.values() for family in result.families]
            return families, self._copy_health(), self._reload_ok, self._reload_time


class _StoreView(Collector):
    """A prometheus_client collector over the store's snapshot plus the self-metrics."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        families, health, reload_ok, reload_time = self.store._snapshot()
        families += self.store._derived_families()
        families += _self_metrics(health, reload_ok, reload_time)
        return cast(list[Metric], families)


def _self_metrics(health: dict[str, CollectorHealth], reload_ok: bool, reload_time: float) -> list[Family]:
    success, duration, last, errors, stuck = (
        s.family() for s in (SUCCESS, DURATION, LAST_SUCCESS, ERRORS, STUCK)
    )
    for name, h in sorted(health.items()):
        success.add_metric([name], 1 if h.success else 0)
        duration.add_metric([name], h.duration)
        last.add_metric([name], h.last_success)
        stuck.add_metric([name], 1 if h.stuck else 0)
        for kind, count in sorted(h.errors.items()):
            errors.add_metric([name, kind], count)
    families = [success, duration, last, errors, stuck]
    families.append(RELOAD_OK.single(1 if reload_ok else 0))
    families.append(RELOAD_TIME.single(reload_time))
    build = BUILD_INFO.family()
    build.add_metric([], {"version": __version__, "python_version": platform.python_version()})
    families.append(build)
    return families
