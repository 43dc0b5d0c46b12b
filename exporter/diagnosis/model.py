"""What a diagnosis is made of: the layers, the bounded reasons, links, and wording helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LAYERS = ("client", "network", "service", "dependencies", "resources", "stall", "exporter")

# Every (layer, reason) a verdict can name: bounded, so each is a series from the first scrape.
REASONS: dict[str, tuple[str, ...]] = {
    "client": ("not_answering", "reset", "http_error", "bad_answer", "probe_misconfigured"),
    "network": (
        "process_dead",
        "not_listening",
        "wrong_port",
        "connect_refused",
        "connect_timeout",
        "unreachable",
        "dns",
        "tls",
    ),
    "service": ("process_missing", "port_not_listening", "port_taken", "log_errors"),
    "dependencies": ("redis_down", "engine_down", "engine_not_generating", "dependency_probe_failed"),
    "resources": (
        "memory_low",
        "cpu_saturated",
        "context_switch_storm",
        "io_blocked",
        "cpu_throttled",
        "memory_limit_pressure",
        "oom_killed",
        "gpu_lost",
        "gpu_xid_errors",
        "gpu_memory_full",
        "gpu_throttled",
        "cuda_incompatible",
    ),
    "stall": (
        "threads_blocked",
        "cpu_bound_loop",
        "engine_stalled",
        "gpu_idle_with_backlog",
        "queue_backlog_growing",
    ),
    "exporter": ("collector_failed", "collector_stuck", "capture_not_permitted"),
}


@dataclass(frozen=True)
class Link:
    name: str
    layer: str
    ok: bool | None  # None: not known (its collector failed, is disabled, or has not run)
    summary: str
    reason: str = "ok"
    evidence: tuple[str, ...] = ()
    next_command: str | None = None


@dataclass(frozen=True)
class Diagnosis:
    links: tuple[Link, ...]
    verdict: Link | None = field(default=None)
    recent_errors: tuple[str, ...] = ()  # the last matching log lines, redacted, newest last

    @property
    def healthy(self) -> bool:
        return self.verdict is None


def pid_list(service: Any) -> str:
    return ", ".join(str(pid) for pid in service.pids[:5])


def host_port_of(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0]


def number(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def used_of(used: int | None, total: int | None) -> str:
    return f"{gib(used or 0)} used of {gib(total or 0)}"


def gib(value: int) -> str:
    return f"{value / 2**30:.1f} GiB"
