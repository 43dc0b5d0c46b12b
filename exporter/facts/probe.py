"""What the probe collector hands to the verdict: each target's latest finished probe."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProbeOutcome:
    success: bool
    reason: str | None = None  # one of REASONS when it failed
    error: str | None = None  # a short human message, never a secret
    status: int | None = None
    duration: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    connected: bool = False  # a TCP connection was established
    ttft: float | None = None


@dataclass(frozen=True)
class TargetFacts:
    name: str
    module: str
    layer: str
    service: str | None
    url: str
    outcome: ProbeOutcome
    consecutive_failures: int
    finished_at: float


@dataclass(frozen=True)
class ProbeFacts:
    targets: dict[str, TargetFacts]
