"""What the in-flight collector hands to the verdict: the probes that have not finished yet."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InFlightProbe:
    target: str
    service: str | None
    layer: str
    url: str  # without credentials
    started_at: float  # seconds since the epoch
    waited: float  # seconds from its start to when these facts were taken
    connected: bool  # the TCP connection is up: the peer accepted it and has not answered yet
    stalled: float = 0.0  # seconds of `waited` the exporter itself was stalled (base/stall.py)

    @property
    def watched(self) -> float:
        """How long the exporter watched it wait: an answer may have come while it was stalled, so
        hangs are judged by this, not by `waited`."""
        return max(0.0, self.waited - self.stalled)


@dataclass(frozen=True)
class InFlightFacts:
    targets: dict[str, InFlightProbe]  # only the targets with a probe in flight
    # The config's forensics.hang_after: a connected client probe unanswered this long is a hang
    # (the stack capture starts then), so the verdict can judge by the same number.
    hang_after: float = 5.0
