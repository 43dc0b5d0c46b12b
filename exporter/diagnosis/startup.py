"""Start-up tracking (seed 3.1): how long a freshly started service takes to listen and to answer.

A model server can take minutes between exec and its first good answer; an operator needs to
tell "still loading" from "hung". For each service's current process this remembers when the
exporter first saw its expected port listened on and when one of its probe targets first
succeeded, measured from the process's start time. Milestones the exporter did not witness
(it started after them) are not guessed. Resolution is the collection interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..metrics.spec import Family, gauge
from .facts import Facts

if TYPE_CHECKING:
    from ..facts.probe import ProbeFacts
    from ..facts.process import ServiceFacts

STARTUP = gauge(
    "autoglm_service_startup_seconds",
    "Seconds from the service's process start to a milestone (listening: its expected port is "
    "listened on; first_success: a probe of it succeeded), for the current process.",
    "service",
    "milestone",
)
STARTUP_METRICS = (STARTUP,)

_UNSEEN = -1.0  # the milestone happened before the exporter was watching


@dataclass
class _Startup:
    start_time: float
    listening_at: float | None = None
    first_success_at: float | None = None


class StartupTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: dict[str, _Startup] = {}

    def observe(self, facts: Mapping[str, object], now: float | None = None) -> list[Family]:
        """Feed the latest facts; returns the start-up families. Safe to call from several threads."""
        now = time.time() if now is None else now
        typed = Facts.of(facts)
        process, probe = typed.process, typed.probe
        with self._lock:
            if process is not None:
                for service in process.services.values():
                    if service.up:
                        self._update(service, probe, now)
            return self._families()

    def _update(self, service: ServiceFacts, probe: ProbeFacts | None, now: float) -> None:
        record = self._services.get(service.name)
        succeeded = _first_success(service.name, probe, service.start_time)
        if record is None or record.start_time != service.start_time:
            # A process we see for the first time: milestones already reached were not witnessed.
            record = _Startup(service.start_time)
            if service.expected_port_listening:
                record.listening_at = _UNSEEN
            if succeeded is not None:
                record.first_success_at = _UNSEEN
            self._services[service.name] = record
            return
        if record.listening_at is None and service.expected_port_listening:
            record.listening_at = now
        if record.first_success_at is None and succeeded is not None:
            record.first_success_at = succeeded

    def _families(self) -> list[Family]:
        family = STARTUP.family()
        for name, record in sorted(self._services.items()):
            for milestone, at in (
                ("listening", record.listening_at),
                ("first_success", record.first_success_at),
            ):
                if at is not None and at != _UNSEEN:
                    family.add_metric([name, milestone], max(0.0, at - record.start_time))
        return [family]


def _first_success(service: str, probe: ProbeFacts | None, since: float) -> float | None:
    if probe is None:
        return None
    times = [
        target.finished_at
        for target in probe.targets.values()
        if target.service == service and target.outcome.success and target.finished_at >= since
    ]
    return min(times) if times else None
