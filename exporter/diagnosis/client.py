"""Client and network links: what a user's request met, and why it could not connect.

A probe still waiting is already a fact: once it has waited `hang_after` for a live process, the
link says "no answer for N s so far" from the in-flight reading instead of the last finished one.
A refusal is explained by the process reading only when both readings tell the same moment.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace

from ..base.thresholds import SAME_CYCLE_SECONDS
from ..facts.inflight import InFlightProbe
from ..facts.probe import TargetFacts
from ..facts.process import ServiceFacts
from .facts import Facts
from .model import Link, address_of, pid_list

_CONNECT_FAILURES = {"connect_refused", "connect_timeout", "unreachable", "dns", "tls"}
_CLIENT_REASONS = {
    "read_timeout": "not_answering",
    "reset": "reset",
    "http_status": "http_error",
    "bad_body": "bad_answer",
    "config": "probe_misconfigured",
}


def client_links(facts: Facts, observed_at: Mapping[str, float], hang_after: float) -> list[Link]:
    finished = {t.name: t for t in facts.probe.targets.values()} if facts.probe is not None else {}
    links = []
    for name in _client_targets(facts):
        target = finished.get(name)
        waiting = hung_probe(facts, name, hang_after)
        if waiting is not None:
            links.append(_waiting_link(waiting, target, facts.services))
        elif target is not None:
            links.append(_finished_link(target, facts.services, observed_at.get("process")))
    return links


def probed_unrefused(facts: Facts) -> frozenset[str]:
    """The services whose client probe was not refused at its latest reading."""
    targets = facts.probe.targets.values() if facts.probe is not None else ()
    return frozenset(
        t.service
        for t in targets
        if t.layer == "client" and t.service and t.outcome.reason != "connect_refused"
    )


def _client_targets(facts: Facts) -> list[str]:
    names = [t.name for t in facts.probe.targets.values() if t.layer == "client"] if facts.probe else []
    if facts.inflight is not None:
        names += [p.target for p in facts.inflight.targets.values() if p.layer == "client"]
    return list(dict.fromkeys(names))


def hung_probe(facts: Facts, target: str, hang_after: float) -> InFlightProbe | None:
    """The target's probe in flight, when it has waited `hang_after` for a process that lives (the
    exporter's own stalls not counted: the answer may have come meanwhile)."""
    probe = facts.inflight.targets.get(target) if facts.inflight is not None else None
    if probe is None or probe.watched < hang_after:
        return None
    service = facts.services.get(probe.service or "")
    if service is not None and not service.up:
        return None  # nobody to hang: the finished probe will say refused
    return probe


def _waiting_link(
    probe: InFlightProbe, target: TargetFacts | None, services: Mapping[str, ServiceFacts]
) -> Link:
    name = f"probe {probe.target}"
    subject = probe.service or probe.target
    since = time.strftime("%H:%M:%S", time.localtime(probe.started_at))
    url = target.url if target is not None else None
    service = services.get(probe.service or "")
    where = f"curl -sv -m 30 {url}" if url else None
    if service is not None and service.main_pid is not None:
        where = f"py-spy dump --pid {service.main_pid}" + (f"; {where}" if where else "")
    if not probe.connected:
        return Link(
            name,
            "network",
            False,
            f"no connection after {probe.waited:.0f} s so far: firewall, routing or a full accept queue",
            "connect_timeout",
            (f"the probe sent at {since} is still connecting",),
            where,
            source="inflight",
            subject=subject,
        )
    return Link(
        name,
        "client",
        False,
        f"no answer for {probe.waited:.0f} s so far: the service is hung or overloaded",
        "not_answering",
        (f"the probe sent at {since} connected and still waits for its answer",),
        where,
        source="inflight",
        subject=subject,
    )


def _finished_link(
    target: TargetFacts, services: Mapping[str, ServiceFacts], process_at: float | None
) -> Link:
    outcome = target.outcome
    name = f"probe {target.name}"
    subject = target.service or target.name
    if outcome.success:
        return Link(
            name,
            "client",
            True,
            f"{target.module} {target.url} answered in {outcome.duration:.2f}s",
            source="probe",
            subject=subject,
        )
    evidence = (
        f"{target.module} {target.url}: {outcome.error} (failed {target.consecutive_failures}x in a row)",
    )
    if outcome.reason in _CONNECT_FAILURES:
        return _network_link(target, services.get(target.service or ""), evidence, process_at)
    reason = _CLIENT_REASONS.get(outcome.reason or "", "bad_answer")
    summaries = {
        "not_answering": "connects, but no answer in time: the service is hung or overloaded",
        "reset": "connects, but the connection is reset mid-answer: the service crashed or was killed",
        "http_error": f"answers HTTP {outcome.status}",
        "bad_answer": "answers, but not what a client expects",
        "probe_misconfigured": "the probe itself cannot run",
    }
    return Link(
        name,
        "client",
        False,
        summaries[reason],
        reason,
        evidence,
        f"curl -sv -m 30 {target.url}",
        source="probe",
        subject=subject,
    )


def _network_link(
    target: TargetFacts, service: ServiceFacts | None, evidence: tuple[str, ...], process_at: float | None
) -> Link:
    reason = target.outcome.reason or "connect_refused"
    if reason == "connect_refused" and service is not None:
        refused = _refused_by(target, service, evidence, process_at)
        # A process that ran at a reading taken before the refusal may have died since: the
        # process collector's next reading says which.
        ran_before = process_at is not None and target.finished_at > process_at and service.up
        return replace(refused, awaits="process") if ran_before else refused
    where = address_of(target.url)
    host_port, host, port = (str(where), where.host, str(where.port)) if where else (target.url,) * 3
    summaries = {
        "connect_refused": f"connection refused: nothing listens on {host_port}",
        "connect_timeout": f"connect to {host_port} timed out: firewall, routing or a full accept queue",
        "unreachable": f"{host_port} is unreachable: no route to the host",
        "dns": "the host name does not resolve",
        "tls": "the TLS handshake fails",
    }
    commands = {
        "connect_refused": f"ss -tlnp | grep :{port}",
        "connect_timeout": f"nc -vz -w 5 {host} {port}; ss -ltn 'sport = :{port}'",
        "unreachable": "ip route",
        "dns": f"getent hosts {host}",
        "tls": f"openssl s_client -connect {host_port} </dev/null",
    }
    return _link(target, reason, summaries[reason], evidence, commands[reason])


def _refused_by(
    target: TargetFacts, service: ServiceFacts, evidence: tuple[str, ...], process_at: float | None
) -> Link:
    """A refusal explained by what the process reading of the same moment shows."""
    where = address_of(target.url)
    host_port = str(where) if where else target.url
    port = where.port if where else service.expected_port
    listening = ", ".join(str(p) for p in service.listening_ports[:8])
    # Seconds from the process reading to the refusal (> 0: the reading came first).
    gap = None if process_at is None else target.finished_at - process_at
    if gap is not None and abs(gap) > SAME_CYCLE_SECONDS:
        when = "before" if gap > 0 else "after"
        return _link(
            target,
            "connect_refused",
            f"connection refused on {host_port}; the process reading was taken {abs(gap):.0f} s {when} "
            "it: too far apart to say why",
            evidence + ("the process readings are stale: is the process collector failing or stuck?",),
            f"ss -tlnp | grep :{port}",
        )
    if service.up and port in service.listening_ports:
        # The two readings disagree: the process changed between them.
        if gap is None:
            when = "listens on it"
        elif gap >= 0:
            when = f"listened on it {gap:.0f} s earlier"
        else:
            when = f"listens on it again {-gap:.0f} s later"
        return _link(
            target,
            "connect_refused",
            f"connection refused on {host_port}, though {service.name} (pid {pid_list(service)}) {when}: "
            "it stopped or restarted in between, or it listens on another address",
            evidence + (f"pid {pid_list(service)} listens on {listening}",),
            f"ss -tlnp 'sport = :{port}'",
        )
    if not service.up:
        return _link(
            target,
            "process_dead",
            f"connection refused: the {service.name} process is not running",
            evidence + (f"no process matches service {service.name}",),
            f"ps aux | grep -i {service.name}",
        )
    if service.listening_ports:
        return _link(
            target,
            "wrong_port",
            f"connection refused on {port}: {service.name} listens on {listening} instead",
            evidence + (f"pid {pid_list(service)} listens on {listening}, not on {port}",),
            "ss -tlnp",
        )
    return _link(
        target,
        "not_listening",
        f"connection refused: {service.name} runs (pid {pid_list(service)}) but listens on no port",
        evidence + ("the process may still be loading the model, or its listener died",),
        f"ss -tlnp; tail -n 50 /proc/{service.pids[0]}/fd/2",
    )


def _link(target: TargetFacts, reason: str, summary: str, evidence: tuple[str, ...], command: str) -> Link:
    return Link(
        f"probe {target.name}",
        "network",
        False,
        summary,
        reason,
        evidence,
        command,
        source="probe",
        subject=target.service or target.name,
    )
