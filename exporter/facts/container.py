"""What the container collector hands to the verdict: each service's cgroup limits and pressure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContainerServiceFacts:
    name: str
    pid: int | None = None  # the main process; None when not found
    reason: str | None = None  # why there is no pid, or why its cgroup could not be read
    cgroup_version: int | None = None
    cgroup_path: str | None = None  # as /proc/PID/cgroup shows it
    cpu_quota_cores: float | None = None  # None: no quota (or not readable)
    cpu_periods: int | None = None  # counters as the kernel keeps them
    cpu_throttled_periods: int | None = None
    # Throttled periods / elapsed periods since the previous reading; None on the first one.
    cpu_throttled_fraction: float | None = None
    cpu_throttled_seconds: float | None = None
    memory_limit_bytes: int | None = None  # None: no limit
    memory_usage_bytes: int | None = None
    memory_working_set_bytes: int | None = None
    memory_usage_ratio: float | None = None  # usage / limit; None without a limit
    memory_working_set_ratio: float | None = None  # working set / limit: the pressure that matters
    oom_kills: int | None = None
    oom_kills_delta: int | None = None  # since the previous reading; None on the first one
    capabilities: tuple[str, ...] | None = None  # effective capability names, None when unreadable
    ptrace_capable: bool | None = None
    host_network: bool | None = None  # None when a namespace could not be read

    @property
    def found(self) -> bool:
        return self.pid is not None


@dataclass(frozen=True)
class ContainerFacts:
    services: dict[str, ContainerServiceFacts]
