"""The verdict: a pure function from the latest facts to the first broken link of the chain.

It knows nothing of how facts were gathered. Links are checked in chain order (client, network,
service, dependencies, resources, stall) and the first broken one is the verdict, with the
evidence a human needs and the command they would run next to confirm it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .collectors.process import ProcessFacts, ServiceFacts
from .collectors.system import SystemFacts
from .store import CollectorHealth

LAYERS = ("client", "network", "service", "dependencies", "resources", "stall", "exporter")

MEMORY_LOW_RATIO = 0.05  # available memory under 5% of total
CPU_SATURATED_RATIO = 0.95


@dataclass(frozen=True)
class Link:
    name: str
    layer: str
    ok: bool | None  # None: not known (its collector failed or is disabled)
    summary: str
    reason: str = "ok"
    evidence: tuple[str, ...] = ()
    next_command: str | None = None


@dataclass(frozen=True)
class Diagnosis:
    links: tuple[Link, ...]
    verdict: Link | None = field(default=None)

    @property
    def healthy(self) -> bool:
        return self.verdict is None


def diagnose(facts: Mapping[str, Any], health: Mapping[str, CollectorHealth]) -> Diagnosis:
    links: list[Link] = []
    links += _service_links(facts.get("process"), health.get("process"))
    links += _resource_links(facts.get("system"), health.get("system"))
    links += _exporter_links(health)
    ordered = sorted(links, key=lambda link: LAYERS.index(link.layer))
    broken = next((link for link in ordered if link.ok is False), None)
    return Diagnosis(tuple(ordered), broken)


def _service_links(facts: ProcessFacts | None, health: CollectorHealth | None) -> list[Link]:
    if health is None:
        return []
    if facts is None:
        return [
            Link("processes", "service", None, f"cannot read processes: {health.last_error or 'no run yet'}")
        ]
    return [_service_link(service) for service in facts.services.values()]


def _service_link(service: ServiceFacts) -> Link:
    name = f"service {service.name}"
    port = service.expected_port
    if not service.up:
        return Link(
            name,
            "service",
            False,
            "no process found",
            reason="process_missing",
            evidence=(f"no running process matches the rules of service {service.name}",),
            next_command=f"ps aux | grep -i {service.name}"
            + (f"; ss -tlnp 'sport = :{port}'" if port else ""),
        )
    pids = ", ".join(str(pid) for pid in service.pids[:5])
    listening = ", ".join(str(p) for p in service.listening_ports[:8]) or "none"
    if port is not None and not service.expected_port_listening:
        return Link(
            name,
            "service",
            False,
            f"running (pid {pids}) but not listening on port {port}",
            reason="port_not_listening",
            evidence=(
                f"pid {pids} listens on: {listening}",
                f"expected port {port} has no listener of this service",
            ),
            next_command=f"ss -tlnp 'sport = :{port}'",
        )
    threads = service.threads
    return Link(
        name,
        "service",
        True,
        f"running (pid {pids}), {threads} threads, listening on {listening}",
    )


def _resource_links(facts: SystemFacts | None, health: CollectorHealth | None) -> list[Link]:
    if health is None:
        return []
    if facts is None:
        return [Link("system", "resources", None, f"cannot read /proc: {health.last_error or 'no run yet'}")]
    total = facts.memory.get("MemTotal", 0)
    available = facts.memory.get("MemAvailable", total)
    load1 = facts.load[0]
    summary = (
        f"{facts.stat.cpus} CPUs, load {load1:.2f}, memory available {_gib(available)} of {_gib(total)}, "
        f"{facts.stat.procs_blocked} blocked on I/O"
    )
    if total and available / total < MEMORY_LOW_RATIO:
        return [
            Link(
                "system memory",
                "resources",
                False,
                summary,
                reason="memory_low",
                evidence=(f"only {_gib(available)} of {_gib(total)} memory available",),
                next_command="free -h; ps aux --sort=-rss | head",
            )
        ]
    if facts.cpu_busy_ratio is not None and facts.cpu_busy_ratio > CPU_SATURATED_RATIO:
        return [
            Link(
                "system cpu",
                "resources",
                False,
                summary,
                reason="cpu_saturated",
                evidence=(f"CPUs busy {facts.cpu_busy_ratio:.0%} of the time since the last reading",),
                next_command="top -b -n 1 | head -20",
            )
        ]
    return [Link("system", "resources", True, summary)]


def _exporter_links(health: Mapping[str, CollectorHealth]) -> list[Link]:
    links = []
    for name, h in sorted(health.items()):
        if h.runs and not h.success:
            state = "stuck" if h.stuck else "failing"
            links.append(
                Link(
                    f"collector {name}",
                    "exporter",
                    False,
                    f"{state}: {h.last_error}",
                    reason="collector_stuck" if h.stuck else "collector_failed",
                    evidence=(f"collector {name} last error: {h.last_error}",),
                    next_command="autoglm-exporter doctor --log.level=debug",
                )
            )
    return links


def _gib(value: int) -> str:
    return f"{value / 2**30:.1f} GiB"
