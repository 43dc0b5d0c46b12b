"""What the environment collector hands to the verdict: each service's drift from its baseline snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServiceEnvironment:
    name: str
    pid: int | None
    drifted: tuple[str, ...] = ()  # components that differ from the baseline
    changes: tuple[str, ...] = ()  # what changed, in plain words (at most MAX_CHANGES)
    conflicts: int | None = None
    baseline_taken_at: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class EnvironmentFacts:
    services: dict[str, ServiceEnvironment] = field(default_factory=dict)
