"""The services' containers: cgroup CPU quota and throttling, memory limit, usage and OOM kills,
whether the process may ptrace, and whether it shares the host's network namespace.

CPU throttling is a classic cause of "alive but not answering": the process is runnable but its
quota for the period is spent. Each service's MAIN process (its oldest, as the shared
ServiceMatcher finds the service: command line, executable, pidfile or port) is the one read.
Every service has autoglm_container_process_found from the first scrape on; the other series
exist only while its process does (and quota / limit only when one is set).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..config import ServiceConfig
from ..facts.container import ContainerFacts, ContainerServiceFacts
from ..linux import cgroups
from ..linux.processes import ProcfsUnreadable, ServiceMatcher
from ..metrics.spec import Families, Family, MetricSpec, counter, gauge
from .base import Collector, CollectorError, Result

FOUND = gauge(
    "autoglm_container_process_found",
    "1 when the service's main process was found (its cgroup is then read), else 0.",
    "service",
)
CGROUP_VERSION = gauge(
    "autoglm_container_cgroup_version",
    "cgroup version (1 or 2) of the service's main process, 0 when its cgroup could not be read.",
    "service",
)
CPU_QUOTA = gauge(
    "autoglm_container_cpu_quota_cores",
    "CPU quota of the service's cgroup in cores (quota / period, the tightest up the tree); absent: none.",
    "service",
)
CPU_PERIODS = counter(
    "autoglm_container_cpu_periods",
    "CPU bandwidth enforcement periods that elapsed in the service's quota-holding cgroup.",
    "service",
)
CPU_THROTTLED_PERIODS = counter(
    "autoglm_container_cpu_throttled_periods",
    "Enforcement periods in which the service's cgroup used up its CPU quota and was throttled.",
    "service",
)
CPU_THROTTLED_SECONDS = counter(
    "autoglm_container_cpu_throttled_seconds",
    "Time the service's cgroup spent throttled for exceeding its CPU quota.",
    "service",
)
MEMORY_LIMIT = gauge(
    "autoglm_container_memory_limit_bytes",
    "Memory limit of the service's cgroup (tightest on the way up); absent when unlimited.",
    "service",
)
MEMORY_USAGE = gauge(
    "autoglm_container_memory_usage_bytes",
    "Memory charged to the service's cgroup, page cache included.",
    "service",
)
MEMORY_WORKING_SET = gauge(
    "autoglm_container_memory_working_set_bytes",
    "Memory of the service's cgroup less its inactive page cache: what the kernel cannot simply drop.",
    "service",
)
OOM_KILLS = counter(
    "autoglm_container_oom_kills",
    "Processes of the service's cgroup killed by the OOM killer, as the kernel counts them.",
    "service",
)
SYS_PTRACE = gauge(
    "autoglm_container_capability_sys_ptrace",
    "1 when the service's main process has CAP_SYS_PTRACE in its effective set, else 0.",
    "service",
)
HOST_NETWORK = gauge(
    "autoglm_container_host_network",
    "1 when the service's main process shares the network namespace of pid 1 (the host's), else 0.",
    "service",
)

NO_PROCESS_REASON = "no process matches the service"


@dataclass(frozen=True)
class _Previous:
    cpu_dir: str | None
    periods: int | None
    throttled: int | None
    memory_dir: str | None
    oom_kills: int | None


class ContainerCollector(Collector):
    name = "container"
    metrics = (
        FOUND,
        CGROUP_VERSION,
        CPU_QUOTA,
        CPU_PERIODS,
        CPU_THROTTLED_PERIODS,
        CPU_THROTTLED_SECONDS,
        MEMORY_LIMIT,
        MEMORY_USAGE,
        MEMORY_WORKING_SET,
        OOM_KILLS,
        SYS_PTRACE,
        HOST_NETWORK,
    )
    items_attribute = "services"
    state_per_item = ("_previous",)

    def __init__(
        self,
        services: tuple[ServiceConfig, ...],
        proc_root: str = "/proc",
        cgroup_root: str = cgroups.DEFAULT_CGROUP_ROOT,
        matcher: ServiceMatcher | None = None,
    ) -> None:
        self.services = services
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root
        self.settings = (services, proc_root, cgroup_root)
        self.matcher = matcher or ServiceMatcher(services, proc_root)
        self._previous: dict[str, _Previous] = {}

    def collect(self) -> Result:
        try:
            membership = self.matcher.current()
        except ProcfsUnreadable as exc:
            raise CollectorError("os_error", str(exc)) from exc
        mounts = cgroups.read_mounts(self.proc_root)
        host_namespace = cgroups.net_namespace(self.proc_root, 1)
        facts = {}
        for service in self.services:
            pid = membership.main_pid(service.name)
            if pid is None:
                self._previous.pop(service.name, None)
                facts[service.name] = ContainerServiceFacts(service.name, reason=NO_PROCESS_REASON)
            else:
                facts[service.name] = self._read(service.name, pid, mounts, host_namespace)
        return Result(_families(self.metrics, facts), ContainerFacts(facts))

    # --- its cgroup ---------------------------------------------------------------------------

    def _read(
        self, name: str, pid: int, mounts: list[cgroups.CgroupMount], host_namespace: str | None
    ) -> ContainerServiceFacts:
        capabilities: tuple[str, ...] | None = None
        ptrace: bool | None = None
        try:
            mask = cgroups.read_effective_capabilities(self.proc_root, pid)
            capabilities = cgroups.capability_names(mask)
            ptrace = cgroups.has_capability(mask, cgroups.CAP_SYS_PTRACE)
        except (OSError, cgroups.CgroupError, ValueError):
            pass
        host_network = cgroups.shares_host_network(self.proc_root, pid, host_namespace)
        base = ContainerServiceFacts(
            name, pid, capabilities=capabilities, ptrace_capable=ptrace, host_network=host_network
        )
        try:
            stats = cgroups.read_process(self.proc_root, pid, self.cgroup_root, mounts)
        except FileNotFoundError:
            self._previous.pop(name, None)
            return replace(base, reason="the process exited while its cgroup was read")
        except (OSError, ValueError, cgroups.CgroupError) as exc:
            self._previous.pop(name, None)
            return replace(base, reason=f"cannot read its cgroup: {exc}")

        previous = self._previous.get(name)
        self._previous[name] = _Previous(
            stats.cpu_dir, stats.cpu_periods, stats.cpu_throttled_periods, stats.memory_dir, stats.oom_kills
        )
        fraction = None
        oom_delta = None
        if previous is not None and previous.cpu_dir == stats.cpu_dir:
            periods = _delta(previous.periods, stats.cpu_periods)
            throttled = _delta(previous.throttled, stats.cpu_throttled_periods)
            if periods is not None and throttled is not None:
                fraction = min(throttled / periods, 1.0) if periods > 0 else 0.0
        if previous is not None and previous.memory_dir == stats.memory_dir:
            oom_delta = _delta(previous.oom_kills, stats.oom_kills)
        limit = stats.memory_limit_bytes
        return replace(
            base,
            cgroup_version=stats.version,
            cgroup_path=stats.path,
            cpu_quota_cores=stats.cpu_quota_cores,
            cpu_periods=stats.cpu_periods,
            cpu_throttled_periods=stats.cpu_throttled_periods,
            cpu_throttled_fraction=fraction,
            cpu_throttled_seconds=stats.cpu_throttled_seconds,
            memory_limit_bytes=limit,
            memory_usage_bytes=stats.memory_usage_bytes,
            memory_working_set_bytes=stats.memory_working_set_bytes,
            memory_usage_ratio=_ratio(stats.memory_usage_bytes, limit),
            memory_working_set_ratio=_ratio(stats.memory_working_set_bytes, limit),
            oom_kills=stats.oom_kills,
            oom_kills_delta=oom_delta,
        )


def _families(specs: tuple[MetricSpec, ...], services: dict[str, ContainerServiceFacts]) -> list[Family]:
    families = Families(specs)

    def add(spec: MetricSpec, name: str, value: float | int | bool | None) -> None:
        families.add(spec, [name], None if value is None else float(value))

    for name, facts in services.items():
        add(FOUND, name, facts.found)
        if not facts.found:
            continue
        add(CGROUP_VERSION, name, facts.cgroup_version or 0)
        add(SYS_PTRACE, name, facts.ptrace_capable)
        add(HOST_NETWORK, name, facts.host_network)
        if facts.cgroup_version is None:
            continue
        add(CPU_QUOTA, name, facts.cpu_quota_cores)
        add(MEMORY_LIMIT, name, facts.memory_limit_bytes)
        add(MEMORY_USAGE, name, facts.memory_usage_bytes)
        add(MEMORY_WORKING_SET, name, facts.memory_working_set_bytes)
        add(OOM_KILLS, name, facts.oom_kills)
        add(CPU_THROTTLED_SECONDS, name, facts.cpu_throttled_seconds)
        add(CPU_PERIODS, name, facts.cpu_periods)
        add(CPU_THROTTLED_PERIODS, name, facts.cpu_throttled_periods)
    return families.list()


def _delta(before: int | None, now: int | None) -> int | None:
    """A counter's increase; None when unknown or when it went backwards (a new cgroup)."""
    if before is None or now is None or now < before:
        return None
    return now - before


def _ratio(part: int | None, whole: int | None) -> float | None:
    return part / whole if part is not None and whole else None
