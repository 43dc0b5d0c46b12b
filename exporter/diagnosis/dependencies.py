"""Dependency links: Redis, the engine's metrics, and the probes of what the service calls."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ..facts.engine import EngineInstanceFacts
from ..facts.probe import TargetFacts
from ..facts.redis import RedisInstanceFacts
from .client import hung_probe
from .facts import Facts
from .model import Link, engine_subject, number, redis_cli


def dependency_links(facts: Facts, hang_after: float) -> list[Link]:
    links: list[Link] = []
    if facts.redis is not None:
        links += [_redis_link(instance) for instance in facts.redis.instances.values()]
    if facts.engine is not None:
        links += [_engine_link(instance) for instance in facts.engine.engines.values()]
    if facts.probe is not None:
        targets = [_as_of_now(t, facts, hang_after) for t in facts.probe.targets.values()]
        dependencies = [(t, source) for t, source in targets if t.layer == "dependencies"]
        siblings = [t for t, _ in dependencies]
        engines = {engine_subject(e) for e in facts.engine.engines.values()} if facts.engine else set()
        for target, source in dependencies:
            link = _dependency_probe_link(target, siblings, source)
            if source == "inflight" and not link.ok and link.subject in engines:
                # A generation hanging on an engine: the engine's next reading may say it stalled
                # (requests waiting, no token), which says more; it is read again at once.
                link = replace(link, awaits="engine")
            links.append(link)
    return links


def _as_of_now(target: TargetFacts, facts: Facts, hang_after: float) -> tuple[TargetFacts, str]:
    """The target as its probe in flight sees it: failing already when it waited too long."""
    waiting = hung_probe(facts, target.name, hang_after)
    if waiting is None:
        return target, "probe"
    so_far = f"no answer for {waiting.waited:.0f} s so far"
    outcome = replace(target.outcome, success=False, reason="read_timeout", error=so_far, status=None)
    return replace(target, outcome=outcome), "inflight"


def _redis_link(instance: RedisInstanceFacts) -> Link:
    name = f"redis {instance.name}"
    if instance.up:
        ping = f"{instance.ping_seconds * 1000:.1f} ms" if instance.ping_seconds is not None else "?"
        clients = f", {instance.connected_clients} clients" if instance.connected_clients is not None else ""
        return Link(
            name, "dependencies", True, f"PING {ping}{clients}", source="redis", subject=instance.name
        )
    return Link(
        name,
        "dependencies",
        False,
        f"Redis at {instance.address} is down ({instance.failure})",
        "redis_down",
        (f"{instance.address}: {instance.error}",),
        f"{redis_cli(instance.address)} ping",
        source="redis",
        subject=instance.name,
    )


def _engine_link(instance: EngineInstanceFacts) -> Link:
    name = f"engine {instance.name}"
    if instance.up:
        waiting = number(instance.waiting)
        running = number(instance.running)
        summary = f"{running} requests running, {waiting} waiting"
        return Link(name, "dependencies", True, summary, source="engine", subject=engine_subject(instance))
    return Link(
        name,
        "dependencies",
        False,
        f"the {instance.kind} engine's metrics do not answer ({instance.failure})",
        "engine_down",
        (f"{instance.error}",),
        f"curl -sv -m 10 {instance.url or 'http://127.0.0.1:8000/metrics'} | head",
        source="engine",
        subject=engine_subject(instance),
    )


def _dependency_probe_link(target: TargetFacts, siblings: Iterable[TargetFacts], source: str) -> Link:
    name = f"probe {target.name}"
    subject = target.service or target.name
    outcome = target.outcome
    if outcome.success:
        summary = f"{target.module} {target.url} answered in {outcome.duration:.2f}s"
        return Link(name, "dependencies", True, summary, source=source, subject=subject)
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
            source=source,
            subject=subject,
        )
    failed = outcome.error if source == "inflight" else outcome.reason
    return Link(
        name,
        "dependencies",
        False,
        f"{target.url} fails: {failed}",
        "dependency_probe_failed",
        tuple(evidence),
        f"curl -sv -m 30 {target.url}",
        source=source,
        subject=subject,
    )
