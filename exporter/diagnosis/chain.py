"""The verdict of each chain from its broken links, and the one-shot diagnosis (doctor).

A one-shot reading believes every broken link at once and knows no onset; the daemon judges over
time instead (deriver.py), with the same links and the same ranking.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..base.health import CollectorHealth
from ..config import ForensicsConfig
from .chains import Chains, chains_named
from .facts import Facts
from .links import all_links
from .model import ChainVerdict, Diagnosis
from .ranking import Broken, pick
from .service import recent_errors, with_drift
from .trends import Trends

if TYPE_CHECKING:
    from ..facts.environment import EnvironmentFacts

# A verdict in these layers hurts the service's users even while its own probe still answers.
HURTING_LAYERS = ("client", "network", "service", "stall")


def chain_verdict(
    service: str,
    chains: Chains,
    broken: Sequence[Broken],
    environment: EnvironmentFacts | None,
    healthy_since: float | None,
) -> ChainVerdict:
    mine = [b for b in broken if chains.holds(service, b.link)]
    chosen = pick(mine)
    probe_fails = any(b.link.layer in ("client", "network") and b.link.subject == service for b in mine)
    hurt = probe_fails or (chosen is not None and chosen.cause.layer in HURTING_LAYERS)
    if chosen is None:
        return ChainVerdict(service, None, healthy_since, hurt)
    return ChainVerdict(service, with_drift(chosen.cause, environment), chosen.since, hurt)


def diagnose(
    facts: Mapping[str, object],
    health: Mapping[str, CollectorHealth],
    now: float | None = None,
    *,
    observed_at: Mapping[str, float] | None = None,
    chains: Chains | None = None,
    hang_after: float = ForensicsConfig.hang_after,
) -> Diagnosis:
    """One reading judged alone: every broken link is believed, none has a known onset."""
    now = time.time() if now is None else now
    typed = Facts.of(facts)
    links = all_links(typed, health, now, observed_at or {}, Trends(), hang_after)
    chains = chains or chains_named(_client_services(typed))
    broken = [Broken(link, None) for link in links if link.ok is False]
    verdicts = tuple(chain_verdict(s, chains, broken, typed.environment, None) for s in chains.members)
    return Diagnosis(links, verdicts, recent_errors(typed.logs), one_shot=True)


def _client_services(facts: Facts) -> list[str]:
    targets = list(facts.probe.targets.values()) if facts.probe is not None else []
    return [t.service or t.name for t in targets if t.layer == "client"]
