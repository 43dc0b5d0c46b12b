"""Client and network links: what a user's request met, and why it could not connect."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import Link, host_port_of, pid_list

_CONNECT_FAILURES = {"connect_refused", "connect_timeout", "unreachable", "dns", "tls"}
_CLIENT_REASONS = {
    "read_timeout": "not_answering",
    "reset": "reset",
    "http_status": "http_error",
    "bad_body": "bad_answer",
    "config": "probe_misconfigured",
}


def client_links(probe: Any, services: Mapping[str, Any]) -> list[Link]:
    if probe is None:
        return []
    return [_client_link(t, services) for t in probe.targets.values() if t.layer == "client"]


def _client_link(target: Any, services: Mapping[str, Any]) -> Link:
    outcome = target.outcome
    name = f"probe {target.name}"
    if outcome.success:
        return Link(name, "client", True, f"{target.module} {target.url} answered in {outcome.duration:.2f}s")
    evidence = (
        f"{target.module} {target.url}: {outcome.error} (failed {target.consecutive_failures}x in a row)",
    )
    if outcome.reason in _CONNECT_FAILURES:
        return _network_link(target, services.get(target.service or ""), evidence)
    reason = _CLIENT_REASONS.get(outcome.reason or "", "bad_answer")
    summaries = {
        "not_answering": "connects, but no answer in time: the service is hung or overloaded",
        "reset": "connects, but the connection is reset mid-answer: the service crashed or was killed",
        "http_error": f"answers HTTP {outcome.status}",
        "bad_answer": "answers, but not what a client expects",
        "probe_misconfigured": "the probe itself cannot run",
    }
    return Link(name, "client", False, summaries[reason], reason, evidence, f"curl -sv -m 30 {target.url}")


def _network_link(target: Any, service: Any, evidence: tuple[str, ...]) -> Link:
    name = f"probe {target.name}"
    reason = target.outcome.reason
    host_port = host_port_of(target.url)
    port = host_port.rsplit(":", 1)[-1]
    if reason == "connect_refused" and service is not None:
        if not service.up:
            return Link(
                name,
                "network",
                False,
                f"connection refused: the {service.name} process is not running",
                "process_dead",
                evidence + (f"no process matches service {service.name}",),
                f"ps aux | grep -i {service.name}",
            )
        listening = ", ".join(str(p) for p in service.listening_ports) or "no port"
        if service.listening_ports:
            return Link(
                name,
                "network",
                False,
                f"connection refused on {port}: {service.name} listens on {listening} instead",
                "wrong_port",
                evidence + (f"pid {pid_list(service)} listens on {listening}",),
                "ss -tlnp",
            )
        return Link(
            name,
            "network",
            False,
            f"connection refused: {service.name} runs (pid {pid_list(service)}) but listens on no port",
            "not_listening",
            evidence + ("the process may still be loading the model, or its listener died",),
            f"ss -tlnp; tail -n 50 /proc/{service.pids[0]}/fd/2" if service.pids else "ss -tlnp",
        )
    summaries = {
        "connect_refused": f"connection refused: nothing listens on {host_port}",
        "connect_timeout": f"connect to {host_port} timed out: firewall, routing or a full accept queue",
        "unreachable": f"{host_port} is unreachable: no route to the host",
        "dns": "the host name does not resolve",
        "tls": "the TLS handshake fails",
    }
    commands = {
        "connect_refused": f"ss -tlnp | grep :{port}",
        "connect_timeout": f"nc -vz -w 5 {host_port.replace(':', ' ')}; ss -ltn 'sport = :{port}'",
        "unreachable": "ip route",
        "dns": f"getent hosts {host_port.rsplit(':', 1)[0]}",
        "tls": f"openssl s_client -connect {host_port} </dev/null",
    }
    return Link(name, "network", False, summaries[reason], reason, evidence, commands[reason])
