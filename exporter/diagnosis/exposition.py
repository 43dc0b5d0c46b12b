"""The diagnosis as metrics and as plain data (/api/diagnosis, doctor --json)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from ..metrics.spec import Family, gauge
from .model import REASONS, ChainVerdict, Diagnosis, clock, since_text

VERDICT = gauge(
    "autoglm_diagnosis_verdict",
    "1 for the layer and reason of the service's current verdict (the cause its chain names), else 0.",
    "service",
    "layer",
    "reason",
)
HEALTHY = gauge("autoglm_diagnosis_healthy", "1 when every link of the chain answers, else 0.")
SINCE = gauge(
    "autoglm_diagnosis_verdict_since_timestamp_seconds",
    "When the service's current verdict (or health) began, in seconds since the epoch, as its collector "
    "observed it; the exporter's start when it was already so then.",
    "service",
)
USERS_HURT = gauge(
    "autoglm_diagnosis_users_hurt",
    "1 when the service's users are hurt: its client probe fails, or the verdict is in the client, "
    "network, service or stall layer; else 0.",
    "service",
)
DIAGNOSIS_METRICS = (VERDICT, HEALTHY, SINCE, USERS_HURT)


def verdict_families(diagnosis: Diagnosis) -> list[Family]:
    verdict, since, hurt = VERDICT.family(), SINCE.family(), USERS_HURT.family()
    for chain in diagnosis.chains:
        current = (chain.verdict.layer, chain.verdict.reason) if chain.verdict else None
        for layer, reasons in REASONS.items():
            for reason in reasons:
                verdict.add_metric([chain.service, layer, reason], 1 if (layer, reason) == current else 0)
        since.add_metric([chain.service], chain.since if chain.since is not None else diagnosis.started_at)
        hurt.add_metric([chain.service], 1 if chain.users_hurt else 0)
    return [verdict, HEALTHY.single(1 if diagnosis.healthy else 0), since, hurt]


def to_dict(diagnosis: Diagnosis, now: float | None = None) -> dict[str, Any]:
    """The diagnosis as plain data for JSON; `since_text` is worded for `now`."""
    now = time.time() if now is None else now
    chains = [_chain(chain, diagnosis.one_shot, now) for chain in diagnosis.chains]
    first = next((c for c in chains if not c["healthy"]), chains[0] if chains else None)
    since = dict(diagnosis.link_since)
    return {
        "healthy": diagnosis.healthy,
        "verdict": asdict(diagnosis.verdict) if diagnosis.verdict else None,
        "since": first["since"] if first else None,
        "since_text": first["since_text"] if first else None,
        "one_shot": diagnosis.one_shot,
        "chains": chains,
        "links": [{**asdict(link), "since": since.get(link.name)} for link in diagnosis.links],
        "history": [{**asdict(change), "at_text": clock(change.at)} for change in diagnosis.history],
        "recent_errors": list(diagnosis.recent_errors),
    }


def _chain(chain: ChainVerdict, one_shot: bool, now: float) -> dict[str, Any]:
    return {
        "service": chain.service,
        "healthy": chain.healthy,
        "verdict": asdict(chain.verdict) if chain.verdict else None,
        "since": None if one_shot else chain.since,
        "since_text": None if one_shot else since_text(chain.healthy, chain.since, now),
        "users_hurt": chain.users_hurt,
    }
