"""Service links: its processes, its error logs and its environment."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from ..base.health import CollectorHealth
from ..base.thresholds import RECENT_LOG_SECONDS, RESTART_LOOP_RESTARTS
from .model import SAME_FAULT, Link, duration, pid_list
from .trends import Trends

if TYPE_CHECKING:
    from ..facts.environment import EnvironmentFacts
    from ..facts.logs import LogFacts, LogsFacts
    from ..facts.process import ProcessFacts, ServiceFacts

SEVERE_LOG_PATTERNS = ("cuda_oom", "model_load_failure", "config_not_found", "nccl_error", "oom_killed")


def service_links(
    process: ProcessFacts | None,
    health: CollectorHealth | None,
    trends: Trends,
    now: float,
    probed_unrefused: frozenset[str] = frozenset(),
) -> list[Link]:
    """`probed_unrefused`: the services whose client probe was not refused at its latest reading."""
    if health is None:
        return []
    if process is None:
        why = f"cannot read processes: {health.last_error or 'no run yet'}"
        return [Link("processes", "service", None, why, source="process")]
    links = []
    for s in process.services.values():
        link = _restart_loop(s, trends, now) or _service_link(s)
        # Its users will meet this as a refusal: the probe's next reading names it (one verdict).
        users_to_see = link.reason in SAME_FAULT and s.name in probed_unrefused
        links.append(
            replace(link, source="process", subject=s.name, awaits="probe" if users_to_see else None)
        )
    return links


def _restart_loop(service: ServiceFacts, trends: Trends, now: float) -> Link | None:
    """A process replaced again and again: the loop, not the moment it is caught down, is the news.
    A loop's processes die young; a process that served a while and was restarted (on purpose, or
    crashing once) is not part of one. The loop is over once the process now running has outlived
    a young death."""
    restarts = trends.restarts(service.name, now)
    young = [r for r in restarts if r.young]
    if len(young) < RESTART_LOOP_RESTARTS:
        return None
    if service.up and service.start_time > 0 and now - service.start_time >= trends.restart_young:
        return None
    window = duration(trends.restart_window)
    state = f"now pid {pid_list(service)}" if service.up else "no process at the last reading"
    return Link(
        f"service {service.name}",
        "service",
        False,
        f"keeps restarting: {len(restarts)} new processes in the last {window} ({state})",
        "restarting",
        (f"{service.restarts} restarts since the exporter started",),
        f"journalctl -u {service.name} --since '-{int(trends.restart_window)}s' | tail -n 50",
        began_at=young[0].at,
        held=len(restarts),  # each restart was seen by a reading of its own
    )


def _service_link(service: ServiceFacts) -> Link:
    name = f"service {service.name}"
    port = service.expected_port
    if port is not None and service.port_taken_by:
        return _port_taken(service, port)
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
    pids = pid_list(service)
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
    restarted = f", restarted {service.restarts}x" if service.restarts else ""
    return Link(
        name,
        "service",
        True,
        f"running (pid {pids}), {service.threads} threads, listening on {listening}{restarted}",
    )


def _port_taken(service: ServiceFacts, port: int) -> Link:
    """Another process holds the service's port, whether the service runs or not: who it is comes
    first, since clients reach it instead of the service."""
    holders = [f"pid {pid} ({command})" for pid, command in service.port_taken_by[:3]]
    state = f"running (pid {pid_list(service)}) but" if service.up else "no process of it runs and"
    own = (
        f"{service.name} itself (pid {pid_list(service)}) listens on: "
        + (", ".join(str(p) for p in service.listening_ports[:8]) or "none")
        if service.up
        else f"no running process matches the rules of service {service.name}"
    )
    return Link(
        f"service {service.name}",
        "service",
        False,
        f"{state} port {port} is held by another process: {', '.join(holders)}",
        reason="port_taken",
        evidence=(
            *(
                f"{holder} listens on {port}; clients reach it instead of {service.name}"
                for holder in holders
            ),
            own,
        ),
        next_command=f"ss -tlnp 'sport = :{port}'",
    )


def log_links(logs: LogsFacts | None, now: float) -> list[Link]:
    if logs is None:
        return []
    return [replace(_log_link(log, now), source="logs", subject=log.service) for log in logs.logs.values()]


def _log_link(log: LogFacts, now: float) -> Link:
    name = f"log {log.name}"
    if log.error:
        return Link(name, "service", None, f"cannot read {log.path}: {log.error}")
    if not log.present:
        return Link(name, "service", None, f"{log.path} does not exist (yet)")
    recent = [m for m in log.recent if now - m.timestamp <= RECENT_LOG_SECONDS]
    severe = [m for m in recent if m.pattern in SEVERE_LOG_PATTERNS]
    if not severe:
        summary = f"{len(recent)} matching lines in the last 5 minutes" if recent else "no recent errors"
        return Link(name, "service", True, summary)
    patterns = sorted({m.pattern for m in severe})
    return Link(
        name,
        "service",
        False,
        f"{', '.join(patterns)} in {log.path} in the last 5 minutes",
        "log_errors",
        tuple(f"{m.pattern}: {m.line}" for m in severe[-3:]),
        f"tail -n 50 {log.path}",
        began_at=min(m.timestamp for m in severe),  # the first of them: broken since then
    )


def recent_errors(logs: LogsFacts | None, keep: int = 10) -> tuple[str, ...]:
    if logs is None:
        return ()
    matches = sorted((m for log in logs.logs.values() for m in log.recent), key=lambda m: m.timestamp)
    return tuple(
        f"{time.strftime('%H:%M:%S', time.localtime(m.timestamp))} {m.pattern}: {m.line}"
        for m in matches[-keep:]
    )


def environment_links(environment: EnvironmentFacts | None) -> list[Link]:
    links = []
    for env in environment.services.values() if environment is not None else []:
        if env.baseline_taken_at is None:
            continue
        conflicts = f", {env.conflicts} dependency conflicts" if env.conflicts else ""
        if env.drifted:
            summary = f"changed since the baseline ({', '.join(env.drifted)}){conflicts}"
        else:
            summary = f"as in the baseline{conflicts}"
        links.append(
            Link(
                f"environment {env.name}",
                "service",
                True,
                summary,
                evidence=env.changes,
                source="environment",
                subject=env.name,
            )
        )
    return links


def with_drift(verdict: Link | None, environment: EnvironmentFacts | None) -> Link | None:
    """A broken chain after an upgrade: say what changed beside the verdict."""
    if verdict is None or environment is None:
        return verdict
    changes = [
        f"changed since the baseline: {line}" for env in environment.services.values() for line in env.changes
    ]
    if not changes:
        return verdict
    return replace(verdict, evidence=verdict.evidence + tuple(changes[:5]))
