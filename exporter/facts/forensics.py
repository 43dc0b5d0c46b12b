"""What the hang watch hands to the verdict: each service's latest stack capture and its analysis."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..forensics.analysis import Analysis
from ..forensics.store import StoredCapture


@dataclass(frozen=True)
class ServiceEvidence:
    service: str
    at: float  # when the last capture (or failed attempt) finished
    capture: StoredCapture | None = None
    analysis: Analysis | None = None
    error_kind: str | None = None
    error: str | None = None  # with the hint, e.g. "... (add SYS_PTRACE)"
    pid: int | None = None  # the process whose stacks these are
    # When that is a stuck child of the service rather than its main process: its name, pid and
    # state when the capture began, e.g. "VLLM::EngineCore (pid 4321, state T)".
    process: str | None = None
    # False once the service answered its probes again or another process replaced it:
    # the stacks are history then and no longer speak for the service (verdict, deadlock gauge).
    current: bool = True


@dataclass(frozen=True)
class ForensicsFacts:
    services: dict[str, ServiceEvidence] = field(default_factory=dict)
