"""Evidence before the restart: py-spy stacks of a service that stopped answering.

It watches the latest facts (after every publish) and captures a process's Python stacks
a few times, analyses them (blocked on locks? spinning?) and saves them, in a thread of its own
so no collector or scrape ever waits for py-spy. A capture can also be asked for (POST
/api/capture, `autoglm-exporter capture`).

Stacks explain a hang, nothing else, so only a hang of a live process triggers a capture. It takes
the stacks of the process that is stuck: a child of the service stopped or blocked in the kernel,
or its idle worker while its engine has requests (vLLM's engine core: the API server goes
on answering while it hangs; diagnosis/workers.py decides), else the service's main process.
Triggers:
- a probe of the service (a client's, or a generation probe of an engine the API depends on)
  connected and still waiting after `hang_after` seconds (the inflight collector's facts), while
  that probe still waits: evidence within seconds, not after the probe's 30 s timeout;
- a client probe that connected, waited `hang_after` or longer and timed out: the same hang,
  seen only once it ended (a probe whose timeout is `hang_after` ends before the inflight
  collector, read once a second, sees it wait that long);
- or `trigger_after_failures` client probes in a row that connected and timed out (probes whose
  timeout is shorter than `hang_after`), counted for the service's current main process only.
Refused connections, HTTP errors, bad answers, resets or a port held by another process never
trigger one. At most one automatic capture per service per `cooldown`, except that a capture
that found nothing blocked or busy (or could not be taken for a passing reason) may be retried
after RETRY_COOLDOWN, and a new main process (a restart) may be captured at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ..base.hostport import HostPortError, url_host_port
from ..config import ForensicsConfig
from ..diagnosis.workers import stuck_worker
from ..facts.engine import EngineFacts
from ..facts.forensics import ForensicsFacts, ServiceEvidence
from ..facts.inflight import InFlightFacts
from ..facts.probe import ProbeFacts
from ..facts.process import STUCK_STATES, ProcessFacts, ServiceFacts
from ..forensics import CAPTURE_ERROR_KINDS, STATES, CaptureError, CaptureStore
from ..forensics import analyse as analyse_dumps
from ..forensics import capture as capture_stacks
from ..metrics.spec import Families, Family, counter, gauge

log = logging.getLogger(__name__)

CAPTURE_REASONS = ("probe_failing", "api", "cli")
RETRY_COOLDOWN = 60.0  # seconds before another automatic try, after a capture that explained nothing
LASTING_CAPTURE_ERRORS = ("permission", "not_python", "py_spy_missing")  # another try would fail too

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


class HangWatch:
    def __init__(
        self,
        config: ForensicsConfig,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = CaptureStore(config.directory, config.max_captures, config.max_bytes)
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._evidence: dict[str, ServiceEvidence] = {}
        self._captures: dict[tuple[str, str], int] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._services: set[str] = set()
        self._main_pids: dict[str, int | None] = {}  # service -> its main pid at the last look
        self._timeouts: dict[tuple[str, str], int] = {}  # (service, target) -> timed out in a row
        self._waited: dict[tuple[str, str], float] = {}  # its last probe's wait, when it timed out hung
        self._counted: dict[str, float] = {}  # target -> finished_at of the last probe counted
        self._next_automatic: dict[str, float] = {}  # service -> clock() before which none starts

    def reconfigure(self, config: ForensicsConfig) -> None:
        """A reloaded config: new limits and directory apply from the next capture."""
        if config != self.config:
            self.config = config
            self.store = CaptureStore(config.directory, config.max_captures, config.max_bytes)

    # --- triggers ---------------------------------------------------------------------------

    def observe(self, facts: Mapping[str, Any]) -> list[str]:
        """Start a capture for every live service that hangs (see the module docstring); returns
        the services whose capture it started. Safe to call from several threads at once."""
        process: ProcessFacts | None = facts.get("process")
        probe: ProbeFacts | None = facts.get("probe")
        in_flight: InFlightFacts | None = facts.get("inflight")
        engine: EngineFacts | None = facts.get("engine")
        if process is None:
            return []
        started: list[tuple[ServiceFacts, str, int, str | None]] = []
        with self._lock:
            self._services.update(process.services)
            self._follow_main_pids(process)
            if probe is not None:
                self._count_timeouts(probe)
                self._retire_evidence(process, probe)
            if not self.config.enabled:
                return []
            now = self._clock()
            for service, why in self._hanging(process, probe, in_flight):
                if service.name in self._running or now < self._next_automatic.get(service.name, 0.0):
                    continue
                suspect = _suspect(service, engine)
                if suspect is None:
                    continue  # a child just seen stopped: the next process reading says which to capture
                self._next_automatic[service.name] = now + self.config.cooldown
                pid, stuck = suspect
                self._start(service.name, pid, "probe_failing", stuck)
                started.append((service, why, pid, stuck))
        for service, why, pid, stuck in started:
            log.warning(
                "service hangs: capturing its stacks",
                extra={"service": service.name, "pid": pid, "stuck_child": stuck, "why": why},
            )
        return [service.name for service, *_ in started]

    def _follow_main_pids(self, process: ProcessFacts) -> None:
        """A new main process is a new suspect: forget the old one's timeouts and cooldown."""
        for name, service in process.services.items():
            if name in self._main_pids and self._main_pids[name] != service.main_pid:
                self._timeouts = {key: n for key, n in self._timeouts.items() if key[0] != name}
                self._waited = {key: w for key, w in self._waited.items() if key[0] != name}
                self._next_automatic.pop(name, None)
            self._main_pids[name] = service.main_pid

    def _count_timeouts(self, probe: ProbeFacts) -> None:
        """Client probes that connected and timed out in a row; anything else breaks the row."""
        for target in probe.targets.values():
            if target.layer != "client" or not target.service:
                continue
            if self._counted.get(target.name) == target.finished_at:
                continue  # the same probe result, seen again at another collector's publish
            self._counted[target.name] = target.finished_at
            key = (target.service, target.name)
            outcome = target.outcome
            hung = outcome.reason == "read_timeout" and outcome.connected
            self._timeouts[key] = self._timeouts.get(key, 0) + 1 if hung else 0
            if hung and outcome.duration >= self.config.hang_after:
                self._waited[key] = outcome.duration
            else:
                self._waited.pop(key, None)

    def _hanging(
        self, process: ProcessFacts, probe: ProbeFacts | None, in_flight: InFlightFacts | None
    ) -> list[tuple[ServiceFacts, str]]:
        """Live services a client probe reached and got no answer from, with why we think so."""
        found: dict[str, tuple[ServiceFacts, str]] = {}

        def hangs(service_name: str | None, url: str, why: str) -> None:
            service = process.services.get(service_name or "")
            if service is not None and _reached(service, url):
                found.setdefault(service.name, (service, why))

        for waiting in in_flight.targets.values() if in_flight is not None else []:
            # Any probe of the service: a generation probe of vLLM (a dependency of the API in front
            # of it) hangs on the same stuck engine core as a user's request.
            # Not while the exporter itself stalled: the answer may be there, not yet read.
            if waiting.connected and waiting.watched >= self.config.hang_after:
                hangs(
                    waiting.service,
                    waiting.url,
                    f"probe {waiting.target} unanswered for {waiting.waited:.1f}s",
                )
        for target in probe.targets.values() if probe is not None else []:
            key = (target.service or "", target.name)
            row, waited = self._timeouts.get(key, 0), self._waited.get(key)
            if target.layer != "client":
                continue
            if waited is not None:
                hangs(target.service, target.url, f"probe {target.name} timed out after {waited:.1f}s")
            elif row >= self.config.trigger_after_failures:
                hangs(target.service, target.url, f"probe {target.name} timed out {row}x in a row")
        return list(found.values())

    def _retire_evidence(self, process: ProcessFacts, probe: ProbeFacts) -> None:
        """Mark stacks as history once their service answers again or runs as another process."""
        for name, evidence in list(self._evidence.items()):
            service = process.services.get(name)
            if not evidence.current or service is None:
                continue
            # Every probe of the service (a hang may have been seen by a generation probe alone).
            clients = [t for t in probe.targets.values() if t.service == name]
            # Answered since: a result from before the capture says nothing (a hang is caught while
            # its probe still waits, so the last result is often a success from before it began).
            answering = bool(clients) and all(
                t.outcome.success and t.finished_at > evidence.at for t in clients
            )
            if answering or evidence.pid not in (service.main_pid, *(c.pid for c in service.children)):
                self._evidence[name] = replace(evidence, current=False)

    def request(self, service: str, pid: int, reason: str) -> bool:
        """Capture in the background; False when a capture of this service is already running."""
        with self._lock:
            if service in self._running:
                return False
            self._start(service, pid, reason)
        return True

    def _start(self, service: str, pid: int, reason: str, process: str | None = None) -> None:
        """With the lock held: mark the service's capture running and start it in its own thread."""
        self._running.add(service)
        self._services.add(service)
        threading.Thread(
            target=self._capture, args=(service, pid, reason, process), name=f"capture-{service}", daemon=True
        ).start()

    def capture_now(self, service: str, pid: int, reason: str) -> ServiceEvidence:
        """Capture in this thread (the CLI); the same steps and bookkeeping as a triggered capture."""
        with self._lock:
            self._running.add(service)
            self._services.add(service)
        self._capture(service, pid, reason)
        return self._evidence[service]

    def _capture(self, service: str, pid: int, reason: str, process: str | None = None) -> None:
        config = self.config
        begun = self._clock()
        try:
            dumps = capture_stacks(pid, config.dumps, config.dump_interval, config.timeout, config.py_spy)
            analysis = analyse_dumps(dumps)
            saved = self.store.save(service, reason, dumps, analysis)
            evidence = ServiceEvidence(service, time.time(), saved, analysis, pid=pid, process=process)
            self._count(self._captures, (service, reason))
            log.warning(
                "stacks captured",
                extra={"service": service, "file": str(saved.path), "summary": analysis.summary},
            )
        except CaptureError as exc:
            evidence = ServiceEvidence(
                service, time.time(), error_kind=exc.kind, error=str(exc), pid=pid, process=process
            )
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
            if reason == "probe_failing" and not _explains(evidence):
                retry = begun + min(RETRY_COOLDOWN, config.cooldown)
                self._next_automatic[service] = min(self._next_automatic.get(service, retry), retry)
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


def _suspect(service: ServiceFacts, engine: EngineFacts | None) -> tuple[int, str | None] | None:
    """The pid to capture: the service's stuck child (with its name and state), else its main process;
    None while a child was seen stopped or blocked at one reading only (not yet known stuck)."""
    child = stuck_worker(service, engine)
    if child is not None:
        return child.pid, f"{child.name} (pid {child.pid}, state {child.letter})"
    if child is None and any(c.state in STUCK_STATES for c in service.children):
        return None
    return service.main_pid or 0, None


def _explains(evidence: ServiceEvidence) -> bool:
    """Whether the capture found what it looked for (blocked or busy threads), or failed in a way
    another try would not change: either spends the full cooldown."""
    if evidence.error_kind is not None:
        return evidence.error_kind in LASTING_CAPTURE_ERRORS
    counts = evidence.analysis.counts() if evidence.analysis is not None else {}
    return counts.get("blocked", 0) + counts.get("busy", 0) > 0


def _reached(service: ServiceFacts, url: str) -> bool:
    """A live service the probe could have reached: not when another process holds the service's
    port (stacks of the service would not explain that process's silence)."""
    if service.main_pid is None:
        return False
    try:
        port = url_host_port(url).port
    except HostPortError:
        return True  # the config refuses such a URL; no port to hold
    return not (port == service.expected_port and not service.expected_port_listening)
