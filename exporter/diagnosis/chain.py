"""The verdict: the first broken link of the chain, from every layer's links."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from ..core.store import CollectorHealth
from ..metrics.spec import Family, gauge
from .client import client_links
from .dependencies import dependency_links
from .exporterlinks import exporter_links
from .model import LAYERS, REASONS, Diagnosis, Link
from .resources import container_links, gpu_links, resource_links
from .service import environment_links, log_links, recent_errors, service_links, services_of, with_drift
from .stall import forensics_links, stall_links

VERDICT = gauge(
    "autoglm_diagnosis_verdict",
    "1 for the layer and reason of the current verdict (the first broken link of the chain), else 0.",
    "layer",
    "reason",
)
HEALTHY = gauge("autoglm_diagnosis_healthy", "1 when every link of the chain answers, else 0.")
DIAGNOSIS_METRICS = (VERDICT, HEALTHY)


def diagnose(
    facts: Mapping[str, Any], health: Mapping[str, CollectorHealth], now: float | None = None
) -> Diagnosis:
    now = time.time() if now is None else now
    services = services_of(facts.get("process"))
    links = (
        client_links(facts.get("probe"), services)
        + service_links(facts.get("process"), health.get("process"))
        + log_links(facts.get("logs"), now)
        + dependency_links(facts.get("redis"), facts.get("engine"), facts.get("probe"))
        + resource_links(facts.get("system"), health.get("system"))
        + container_links(facts.get("container"))
        + gpu_links(facts.get("gpu"))
        + forensics_links(facts.get("forensics"), now)
        + stall_links(facts.get("engine"), facts.get("redis"), facts.get("gpu"))
        + environment_links(facts.get("environment"))
        + exporter_links(health)
    )
    ordered = tuple(sorted(links, key=lambda link: LAYERS.index(link.layer)))
    verdict = with_drift(first_broken(ordered), facts.get("environment"))
    return Diagnosis(ordered, verdict, recent_errors(facts.get("logs")))


def first_broken(links: tuple[Link, ...]) -> Link | None:
    broken = [link for link in links if link.ok is False]
    if not broken:
        return None
    first = broken[0]
    if first.layer != "client":
        return first
    # It connects but fails: a deeper broken link is the cause, the client failure its symptom.
    cause = next((link for link in broken[1:] if link.layer not in ("client", "exporter")), None)
    if cause is None:
        return first
    return Link(
        cause.name,
        cause.layer,
        False,
        cause.summary,
        cause.reason,
        cause.evidence + (f"symptom: {first.name}: {first.summary}",),
        cause.next_command,
    )


def to_dict(diagnosis: Diagnosis) -> dict[str, Any]:
    """The diagnosis as plain data for JSON (/api/diagnosis, doctor --json)."""
    return {
        "healthy": diagnosis.healthy,
        "verdict": asdict(diagnosis.verdict) if diagnosis.verdict else None,
        "links": [asdict(link) for link in diagnosis.links],
        "recent_errors": list(diagnosis.recent_errors),
    }


def verdict_families(diagnosis: Diagnosis) -> list[Family]:
    verdict = VERDICT.family()
    current = (diagnosis.verdict.layer, diagnosis.verdict.reason) if diagnosis.verdict else None
    for layer, reasons in REASONS.items():
        for reason in reasons:
            verdict.add_metric([layer, reason], 1 if (layer, reason) == current else 0)
    return [verdict, HEALTHY.single(1 if diagnosis.healthy else 0)]


Deriver = Callable[[Mapping[str, Any], Mapping[str, CollectorHealth]], tuple[list[Family], Diagnosis]]


def derive(facts: Mapping[str, Any], health: Mapping[str, CollectorHealth]) -> tuple[list[Family], Diagnosis]:
    """What the store adds to every page: the verdict as metrics, and the diagnosis itself."""
    diagnosis = diagnose(facts, health)
    return verdict_families(diagnosis), diagnosis
