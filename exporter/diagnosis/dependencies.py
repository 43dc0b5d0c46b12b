"""Dependency links: Redis, the engine's metrics, and the probes of what the service calls."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .model import Link, number


def dependency_links(redis: Any, engine: Any, probe: Any) -> list[Link]:
    links: list[Link] = []
    if redis is not None:
        links += [_redis_link(instance) for instance in redis.instances.values()]
    if engine is not None:
        links += [_engine_link(instance) for instance in engine.engines.values()]
    if probe is not None:
        targets = [t for t in probe.targets.values() if t.layer == "dependencies"]
        links += [_dependency_probe_link(t, targets) for t in targets]
    return links


def _redis_link(instance: Any) -> Link:
    name = f"redis {instance.name}"
    if instance.up:
        ping = f"{instance.ping_seconds * 1000:.1f} ms" if instance.ping_seconds is not None else "?"
        clients = f", {instance.connected_clients} clients" if instance.connected_clients is not None else ""
        return Link(name, "dependencies", True, f"PING {ping}{clients}")
    host, _, port = instance.address.rpartition(":")
    return Link(
        name,
        "dependencies",
        False,
        f"Redis at {instance.address} is down ({instance.failure})",
        "redis_down",
        (f"{instance.address}: {instance.error}",),
        f"redis-cli -h {host.strip('[]')} -p {port} ping",
    )


def _engine_link(instance: Any) -> Link:
    name = f"engine {instance.name}"
    if instance.up:
        waiting = number(instance.waiting)
        running = number(instance.running)
        return Link(name, "dependencies", True, f"{running} requests running, {waiting} waiting")
    return Link(
        name,
        "dependencies",
        False,
        f"the {instance.kind} engine's metrics do not answer ({instance.failure})",
        "engine_down",
        (f"{instance.error}",),
        f"curl -sv -m 10 {instance.url or 'http://127.0.0.1:8000/metrics'} | head",
    )


def _dependency_probe_link(target: Any, siblings: Iterable[Any]) -> Link:
    name = f"probe {target.name}"
    outcome = target.outcome
    if outcome.success:
        return Link(
            name, "dependencies", True, f"{target.module} {target.url} answered in {outcome.duration:.2f}s"
        )
    evidence = [f"{target.module} {target.url}: {outcome.error}"]
    # vLLM's /health stays 200 while its engine is dead: generation failing beside a healthy
    # health check is the signature of exactly that.
    healthy_sibling = next(
        (
            s
            for s in siblings
            if s is not target and s.service == target.service and s.module == "http" and s.outcome.success
        ),
        None,
    )
    if target.module == "openai_chat" and healthy_sibling is not None:
        evidence.append(f"{healthy_sibling.url} still answers 200: a health check is not proof of life")
        return Link(
            name,
            "dependencies",
            False,
            "the engine answers its health check but cannot generate a token",
            "engine_not_generating",
            tuple(evidence),
            f"curl -s -m 30 {target.url} -H 'Content-Type: application/json' -d "
            '\'{"model": "...", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}\'',
        )
    return Link(
        name,
        "dependencies",
        False,
        f"{target.url} fails: {outcome.reason}",
        "dependency_probe_failed",
        tuple(evidence),
        f"curl -sv -m 30 {target.url}",
    )
