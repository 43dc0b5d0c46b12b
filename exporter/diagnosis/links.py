"""Every link of the chain from one set of facts: what each layer's module says, in layer order."""

from __future__ import annotations

from collections.abc import Mapping

from ..base.health import CollectorHealth
from .client import client_links, probed_unrefused
from .dependencies import dependency_links
from .exporterlinks import exporter_links
from .facts import Facts
from .model import LAYERS, Link
from .resources import container_links, gpu_links, resource_links
from .service import environment_links, log_links, service_links
from .stall import forensics_links, stall_links
from .trends import Trends
from .workers import worker_links


def all_links(
    facts: Facts,
    health: Mapping[str, CollectorHealth],
    now: float,
    observed_at: Mapping[str, float],
    trends: Trends,
    hang_after: float,
) -> tuple[Link, ...]:
    links = (
        client_links(facts, observed_at, hang_after)
        + service_links(facts.process, health.get("process"), trends, now, probed_unrefused(facts))
        + log_links(facts.logs, now)
        + dependency_links(facts, hang_after)
        + resource_links(facts.system, health.get("system"), facts.services, trends)
        + container_links(facts.container)
        + gpu_links(facts.gpu)
        + forensics_links(facts.forensics, now)
        + stall_links(facts, trends, hang_after)
        + worker_links(facts, hang_after, now)
        + environment_links(facts.environment)
        + exporter_links(health)
    )
    return tuple(sorted(links, key=lambda link: LAYERS.index(link.layer)))
