"""Evidence before the restart: py-spy stacks of a service whose probes keep failing.

It watches the latest facts (after every publish). When a service's client probes have failed
`trigger_after_failures` times in a row, it captures the main process's Python stacks a few
times, analyses them (blocked on locks? spinning?) and saves them, at most once per cooldown per
service, in a thread of its own so no collector or scrape ever waits for py-spy. A capture can
also be asked for (POST /api/capture, `autoglm-exporter capture`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import ForensicsConfig
from ..metrics.spec import Families, Family, counter, gauge
from . import CAPTURE_ERROR_KINDS, STATES, Analysis, CaptureError, CaptureStore, StoredCapture
from . import analyse as analyse_dumps
from . import capture as capture_stacks

log = logging.getLogger(__name__)

CAPTURE_REASONS = ("probe_failing", "api", "cli")

CAPTURES = counter(
    "autoglm_forensics_captures",
    "Stack captures saved for the service, by what asked for them: probe_failing, api, cli.",
    "service",
    "reason",
)
FAILURES = counter(
    "autoglm_forensics_capture_failures",
    "Stack captures that failed, by kind (permission means the exporter lacks SYS_PTRACE).",
    "service",
    "kind",
)
LAST_CAPTURE = gauge(
    "autoglm_forensics_last_capture_timestamp_seconds",
    "When the service's last stack capture was taken, in seconds since the epoch.",
    "service",
)
THREADS = gauge(
    "autoglm_forensics_threads",
    "Threads of the service's main process in each state in the last capture: blocked, busy, running, idle.",
    "service",
    "state",
)
DEADLOCK = gauge(
    "autoglm_forensics_deadlock_suspected",
    "1 when the last capture found threads blocked on locks that never moved (a possible deadlock) and "
    "the service has neither answered again nor been restarted since.",
    "service",
)
FORENSICS_METRICS = (CAPTURES, FAILURES, LAST_CAPTURE, THREADS, DEADLOCK)


@dataclass(frozen=True)
class ServiceEvidence:
    service: str
    at: float  # when the last capture (or failed attempt) finished
    capture: StoredCapture | None = None
    analysis: Analysis | None = None
    error_kind: str | None = None
    error: str | None = None  # with the hint, e.g. "... (add SYS_PTRACE)"
    pid: int | None = None  # the process whose stacks these are
    # False once the service answered its client probes again or another process replaced it:
    # the stacks are history then and no longer speak for the service (verdict, deadlock gauge).
    current: bool = True


@dataclass(frozen=True)
class ForensicsFacts:
    services: dict[str, ServiceEvidence] = field(default_factory=dict)


class HangWatch:
    def __init__(self, config: ForensicsConfig, on_change: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.store = CaptureStore(config.directory, config.max_captures, config.max_bytes)
        self._on_change = on_change
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._last_automatic: dict[str, float] = {}
        self._evidence: dict[str, ServiceEvidence] = {}
        self._captures: dict[tuple[str, str], int] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._services: set[str] = set()

    def reconfigure(self, config: ForensicsConfig) -> None:
        """A reloaded config: new limits and directory apply from the next capture."""
        if config != self.config:
            self.config = config
            self.store = CaptureStore(config.directory, config.max_captures, config.max_bytes)

    # --- triggers ---------------------------------------------------------------------------

    def observe(self, facts: Mapping[str, Any]) -> None:
        """Start a capture for every service whose client probes have failed too often in a row."""
        process, probe = facts.get("process"), facts.get("probe")
        if process is None:
            return
        with self._lock:
            self._services.update(process.services)
        if probe is not None:
            self._retire_evidence(process, probe)
        if not self.config.enabled or probe is None:
            return
        now = time.monotonic()
        for target in probe.targets.values():
            service = process.services.get(target.service or "")
            if (
                target.layer != "client"
                or service is None
                or service.main_pid is None
                or target.consecutive_failures < self.config.trigger_after_failures
            ):
                continue
            last = self._last_automatic.get(service.name)
            if last is not None and now - last < self.config.cooldown:
                continue
            if self.request(service.name, service.main_pid, "probe_failing"):
                self._last_automatic[service.name] = now
                log.warning(
                    "service keeps failing: capturing its stacks",
                    extra={"service": service.name, "pid": service.main_pid, "target": target.name},
                )

    def _retire_evidence(self, process: Any, probe: Any) -> None:
        """Mark stacks as history once their service answers again or runs as another process."""
        with self._lock:
            for name, evidence in list(self._evidence.items()):
                service = process.services.get(name)
                if not evidence.current or service is None:
                    continue
                clients = [t for t in probe.targets.values() if t.service == name and t.layer == "client"]
                answering = bool(clients) and all(t.consecutive_failures == 0 for t in clients)
                if answering or service.main_pid != evidence.pid:
                    self._evidence[name] = replace(evidence, current=False)

    def request(self, service: str, pid: int, reason: str) -> bool:
        """Capture in the background; False when a capture of this service is already running."""
        with self._lock:
            if service in self._running:
                return False
            self._running.add(service)
            self._services.add(service)
        threading.Thread(
            target=self._capture, args=(service, pid, reason), name=f"capture-{service}", daemon=True
        ).start()
        return True

    def capture_now(self, service: str, pid: int, reason: str) -> ServiceEvidence:
        """Capture in this thread (the CLI); the same steps and bookkeeping as a triggered capture."""
        with self._lock:
            self._running.add(service)
            self._services.add(service)
        self._capture(service, pid, reason)
        return self._evidence[service]

    def _capture(self, service: str, pid: int, reason: str) -> None:
        config = self.config
        try:
            dumps = capture_stacks(pid, config.dumps, config.dump_interval, config.timeout, config.py_spy)
            analysis = analyse_dumps(dumps)
            saved = self.store.save(service, reason, dumps, analysis)
            evidence = ServiceEvidence(service, time.time(), saved, analysis, pid=pid)
            self._count(self._captures, (service, reason))
            log.warning(
                "stacks captured",
                extra={"service": service, "file": str(saved.path), "summary": analysis.summary},
            )
        except CaptureError as exc:
            evidence = ServiceEvidence(service, time.time(), error_kind=exc.kind, error=str(exc), pid=pid)
            self._count(self._failures, (service, exc.kind))
            log.error("stack capture failed", extra={"service": service, "kind": exc.kind, "error": str(exc)})
        except OSError as exc:  # the capture directory
            evidence = ServiceEvidence(
                service, time.time(), error_kind="failed", error=f"cannot save: {exc}", pid=pid
            )
            self._count(self._failures, (service, "failed"))
            log.error("stack capture could not be saved", extra={"service": service, "error": str(exc)})
        with self._lock:
            self._evidence[service] = evidence
            self._running.discard(service)
        self._on_change()

    def _count(self, counts: dict[tuple[str, str], int], key: tuple[str, str]) -> None:
        with self._lock:
            counts[key] = counts.get(key, 0) + 1

    # --- what it knows --------------------------------------------------------------------------

    def facts(self) -> ForensicsFacts:
        """The evidence that still speaks for each service (see ServiceEvidence.current)."""
        with self._lock:
            return ForensicsFacts({name: e for name, e in self._evidence.items() if e.current})

    def families(self) -> list[Family]:
        families = Families(FORENSICS_METRICS)
        add = families.add

        with self._lock:
            services = sorted(self._services)
            evidence = dict(self._evidence)
            captures, failures = dict(self._captures), dict(self._failures)
        for service in services:
            for reason in CAPTURE_REASONS:
                add(CAPTURES, [service, reason], captures.get((service, reason), 0))
            for kind in CAPTURE_ERROR_KINDS:
                add(FAILURES, [service, kind], failures.get((service, kind), 0))
            found = evidence.get(service)
            if found is not None and found.analysis is not None and found.capture is not None:
                add(LAST_CAPTURE, [service], found.capture.time)
                counts = found.analysis.counts()
                for state in STATES:
                    add(THREADS, [service, state], counts.get(state, 0))
                add(DEADLOCK, [service], 1 if found.current and found.analysis.deadlock_suspected else 0)
        return families.list()
