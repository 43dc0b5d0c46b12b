"""Resource links: the machine, the service's cgroup, and the GPUs.

Pressure on the whole machine (CPU, memory, context switches, threads blocked on I/O) has no
subject: it is a cause only when nothing about the service explains the symptom. When the
service itself is the one pressing (it uses most of the busy CPUs or of the memory, its own
threads wait on I/O), the link is about the service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from ..base.health import CollectorHealth
from ..base.thresholds import (
    CONTEXT_SWITCHES_PER_CPU_STORM,
    CPU_SATURATED_RATIO,
    CPU_THROTTLED_RATIO,
    GPU_MEMORY_FULL_RATIO,
    MEMORY_LIMIT_PRESSURE_RATIO,
    MEMORY_LOW_RATIO,
    OWN_PRESSURE_SHARE,
    XID_CRITICAL,
    XID_LOST,
    XID_WARNING,
)
from .model import Link, gib, used_of
from .trends import Trends

if TYPE_CHECKING:
    from ..facts.container import ContainerFacts, ContainerServiceFacts
    from ..facts.gpu import GpuDeviceFacts, GpuFacts
    from ..facts.process import ServiceFacts
    from ..facts.system import SystemFacts


def resource_links(
    system: SystemFacts | None,
    health: CollectorHealth | None,
    services: Mapping[str, ServiceFacts],
    trends: Trends,
) -> list[Link]:
    if health is None:
        return []
    if system is None:
        why = f"cannot read /proc: {health.last_error or 'no run yet'}"
        return [Link("system", "resources", None, why, source="system")]
    stat = system.stat
    total = system.memory.get("MemTotal", 0)
    available = system.memory.get("MemAvailable", total)
    summary = (
        f"{stat.cpus} CPUs, load {system.load[0]:.2f}, memory available {gib(available)} of {gib(total)}, "
        f"{stat.procs_blocked} blocked on I/O"
    )
    busy_cores = (system.cpu_busy_ratio or 0) * stat.cpus
    checks: list[tuple[bool, str, str, str, str | None]] = [
        (
            bool(total) and available / total < MEMORY_LOW_RATIO,
            "memory_low",
            f"only {gib(available)} of {gib(total)} memory available",
            "free -h; ps aux --sort=-rss | head",
            _largest(services, lambda s: s.rss_bytes, OWN_PRESSURE_SHARE * (total - available)),
        ),
        (
            system.cpu_busy_ratio is not None and system.cpu_busy_ratio > CPU_SATURATED_RATIO,
            "cpu_saturated",
            f"CPUs busy {(system.cpu_busy_ratio or 0):.0%} of the time since the last reading",
            "top -b -n 1 | head -20",
            _largest(services, lambda s: trends.cores(s.name) or 0.0, OWN_PRESSURE_SHARE * busy_cores),
        ),
        (
            system.context_switches_per_second is not None
            and system.context_switches_per_second > CONTEXT_SWITCHES_PER_CPU_STORM * max(stat.cpus, 1),
            "context_switch_storm",
            f"{(system.context_switches_per_second or 0):,.0f} context switches/s on {stat.cpus} CPUs",
            "pidstat -w 1 5",
            None,
        ),
        (
            stat.procs_blocked > max(stat.cpus, 1),
            "io_blocked",
            f"{stat.procs_blocked} threads blocked on I/O",
            "ps -eLo state,pid,comm | awk '$1==\"D\"'",
            _largest(services, lambda s: s.thread_states.get("disk_sleep", 0), 1),
        ),
    ]
    for broken, reason, evidence, command, own in checks:
        if broken:
            lines = (evidence,) + ((f"{own} itself takes most of it",) if own else ())
            return [Link("system", "resources", False, summary, reason, lines, command, "system", own)]
    return [Link("system", "resources", True, summary, source="system")]


def _largest(
    services: Mapping[str, ServiceFacts], share: Callable[[ServiceFacts], float], at_least: float
) -> str | None:
    """The service whose own use makes the machine's pressure, if one uses `at_least` of it."""
    using = [(share(s), s.name) for s in services.values() if s.up]
    if not using or at_least <= 0:
        return None
    used, name = max(using)
    return name if used >= at_least else None


def container_links(container: ContainerFacts | None) -> list[Link]:
    services = container.services.values() if container is not None else []
    return [
        replace(_cgroup_link(c), source="container", subject=c.name)
        for c in services
        if c.found and c.cgroup_version not in (None, 0)
    ]


def _cgroup_link(c: ContainerServiceFacts) -> Link:
    name = f"cgroup {c.name}"
    where = f"cat /sys/fs/cgroup{c.cgroup_path}/cpu.stat /sys/fs/cgroup{c.cgroup_path}/memory.events"
    if c.oom_kills_delta:
        return Link(
            name,
            "resources",
            False,
            f"{c.oom_kills_delta} processes of {c.name} were OOM-killed at its memory limit",
            "oom_killed",
            (f"memory limit {gib(c.memory_limit_bytes or 0)}, {c.oom_kills} OOM kills in all",),
            where,
        )
    if c.memory_working_set_ratio is not None and c.memory_working_set_ratio > MEMORY_LIMIT_PRESSURE_RATIO:
        return Link(
            name,
            "resources",
            False,
            f"{c.name} uses {c.memory_working_set_ratio:.0%} of its memory limit",
            "memory_limit_pressure",
            (f"working set {gib(c.memory_working_set_bytes or 0)} of the limit",),
            where,
        )
    if c.cpu_throttled_fraction is not None and c.cpu_throttled_fraction > CPU_THROTTLED_RATIO:
        quota = f"{c.cpu_quota_cores:g} CPUs" if c.cpu_quota_cores else "its quota"
        return Link(
            name,
            "resources",
            False,
            f"{c.name} is CPU-throttled in {c.cpu_throttled_fraction:.0%} of periods (limit {quota})",
            "cpu_throttled",
            ("CPU throttling makes a service alive but slow to answer",),
            where,
        )
    return Link(name, "resources", True, f"cgroup v{c.cgroup_version}: within its limits")


def gpu_links(gpu: GpuFacts | None) -> list[Link]:
    if gpu is None:
        return []
    if not gpu.available:
        return [Link("gpu", "resources", None, gpu.message or "no NVIDIA GPU / driver found", source="gpu")]
    users: dict[int, set[str]] = {}
    for service in gpu.services.values():
        for index in service.gpus:
            users.setdefault(index, set()).add(service.name)
    links = [replace(_device_link(d), source="gpu", subject=_only(users.get(d.index))) for d in gpu.gpus]
    return links + _cuda_links(gpu)


def _only(names: set[str] | None) -> str | None:
    """The one service using a GPU; None (every chain) when it is shared or nobody's."""
    return next(iter(names)) if names and len(names) == 1 else None


def _device_link(device: GpuDeviceFacts) -> Link:
    name = f"gpu {device.index} ({device.name})"
    faults = tuple(xid for xid in device.xid_recent if xid in XID_CRITICAL or xid in XID_WARNING)
    if device.lost or XID_LOST in faults:
        return Link(
            name,
            "resources",
            False,
            "the GPU is lost (fell off the bus): only a reset or a reboot brings it back",
            "gpu_lost",
            (f"uuid {device.uuid}, recent XIDs {list(device.xid_recent)}",),
            "nvidia-smi -q | head -40; dmesg | grep -i xid | tail",
        )
    if faults:
        return Link(
            name,
            "resources",
            False,
            f"XID errors in the last 10 minutes: {', '.join(str(x) for x in faults)}",
            "gpu_xid_errors",
            (f"last XID {device.last_xid}",),
            "dmesg | grep -i xid | tail",
        )
    if (device.memory_used_ratio or 0) >= GPU_MEMORY_FULL_RATIO:
        return Link(
            name,
            "resources",
            False,
            f"GPU memory {device.memory_used_ratio:.0%} full",
            "gpu_memory_full",
            (used_of(device.memory_used_bytes, device.memory_total_bytes),),
            "nvidia-smi --query-compute-apps=pid,used_memory --format=csv",
        )
    if device.throttle_reasons:
        return Link(
            name,
            "resources",
            False,
            f"clocks held down: {', '.join(device.throttle_reasons)}",
            "gpu_throttled",
            (f"temperature {device.temperature_celsius} C, power {device.power_draw_watts} W",),
            "nvidia-smi -q -d PERFORMANCE,TEMPERATURE,POWER",
        )
    used = f"{device.memory_used_ratio:.0%}" if device.memory_used_ratio is not None else "?"
    util = f"{device.utilization:.0%}" if device.utilization is not None else "?"
    caused_by_application = tuple(
        f"XID {xid} in the last 10 minutes: caused by the application, not the GPU"
        for xid in device.xid_recent
    )
    summary = f"memory {used} used, {util} busy, {device.processes} processes"
    return Link(name, "resources", True, summary, evidence=caused_by_application)


def _cuda_links(gpu: GpuFacts) -> list[Link]:
    if not gpu.compatibility_problems:
        return []
    return [
        Link(
            "cuda",
            "resources",
            False,
            gpu.compatibility_problems[0],
            "cuda_incompatible",
            tuple(gpu.compatibility_problems[:4]),
            "nvidia-smi; python -c 'import torch; print(torch.version.cuda)'",
            source="gpu",
        )
    ]
