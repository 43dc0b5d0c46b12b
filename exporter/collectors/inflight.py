"""Probes still waiting for their answer, and how long each has waited so far.

A probe waits up to its timeout (the seed's 30 s) before it fails, so its result alone can never
say "hung" within seconds. The probe collector notes each probe in an InFlightRegistry while it
waits; this small collector, run every second, publishes what the registry holds. The verdict
and the stack capture then see "no answer for 6 s so far" while the probe still waits. Each wait
says how much of it the exporter itself was stalled (an answer may be waiting to be read).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..base.stall import STALL
from ..config import ProbeTarget
from ..facts.inflight import InFlightFacts, InFlightProbe
from ..logs.urls import display_url
from ..metrics.spec import Families, gauge
from .base import Collector, Result

IN_FLIGHT = gauge(
    "autoglm_probe_in_flight_seconds",
    "How long the target's probe now in flight has waited for its answer so far, 0 when none is in flight.",
    "target",
)


@dataclass
class _Waiting:
    target: ProbeTarget
    started_at: float
    started_monotonic: float
    stalled_then: float  # the stall clock at its start
    connected: bool = False


class InFlightRegistry:
    """The probes now waiting, filled by the probe collector's thread, read by the inflight one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiting] = {}

    def started(self, target: ProbeTarget) -> None:
        waiting = _Waiting(target, time.time(), time.monotonic(), STALL.stalled())
        with self._lock:
            self._waiting[target.name] = waiting

    def connected(self, name: str) -> None:
        with self._lock:
            waiting = self._waiting.get(name)
            if waiting is not None:
                waiting.connected = True

    def finished(self, name: str) -> None:
        with self._lock:
            self._waiting.pop(name, None)

    def snapshot(self) -> dict[str, InFlightProbe]:
        now, stalled = time.monotonic(), STALL.stalled()
        with self._lock:
            waiting = list(self._waiting.values())
        return {
            w.target.name: InFlightProbe(
                w.target.name,
                w.target.service,
                w.target.layer,
                display_url(w.target.url),
                w.started_at,
                max(0.0, now - w.started_monotonic),
                w.connected,
                max(0.0, stalled - w.stalled_then),
            )
            for w in waiting
        }


class InFlightCollector(Collector[InFlightFacts]):
    name = "inflight"
    metrics = (IN_FLIGHT,)

    def __init__(
        self, targets: tuple[ProbeTarget, ...], registry: InFlightRegistry, hang_after: float = 5.0
    ) -> None:
        self.targets = targets
        self.registry = registry
        self.hang_after = hang_after
        self.settings = (targets, hang_after)

    def collect(self) -> Result[InFlightFacts]:
        names = {target.name for target in self.targets}
        probes = {name: probe for name, probe in self.registry.snapshot().items() if name in names}
        families = Families(self.metrics)
        for target in self.targets:
            probe = probes.get(target.name)
            families.add(IN_FLIGHT, [target.name], probe.waited if probe is not None else 0.0)
        return Result(families.list(), InFlightFacts(probes, self.hang_after))
