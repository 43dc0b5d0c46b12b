"""Resource links: the machine, the service's cgroup, and the GPUs."""

from __future__ import annotations

from typing import Any

from ..core.store import CollectorHealth
from .model import Link, gib, used_of
from .thresholds import (
    CONTEXT_SWITCHES_PER_CPU_STORM,
    CPU_SATURATED_RATIO,
    CPU_THROTTLED_RATIO,
    GPU_MEMORY_FULL_RATIO,
    MEMORY_LIMIT_PRESSURE_RATIO,
    MEMORY_LOW_RATIO,
)


def resource_links(system: Any, health: CollectorHealth | None) -> list[Link]:
    if health is None:
        return []
    if system is None:
        return [Link("system", "resources", None, f"cannot read /proc: {health.last_error or 'no run yet'}")]
    stat = system.stat
    total = system.memory.get("MemTotal", 0)
    available = system.memory.get("MemAvailable", total)
    summary = (
        f"{stat.cpus} CPUs, load {system.load[0]:.2f}, memory available {gib(available)} of {gib(total)}, "
        f"{stat.procs_blocked} blocked on I/O"
    )
    checks: list[tuple[bool, str, str, str]] = [
        (
            bool(total) and available / total < MEMORY_LOW_RATIO,
            "memory_low",
            f"only {gib(available)} of {gib(total)} memory available",
            "free -h; ps aux --sort=-rss | head",
        ),
        (
            system.cpu_busy_ratio is not None and system.cpu_busy_ratio > CPU_SATURATED_RATIO,
            "cpu_saturated",
            f"CPUs busy {(system.cpu_busy_ratio or 0):.0%} of the time since the last reading",
            "top -b -n 1 | head -20",
        ),
        (
            system.context_switches_per_second is not None
            and system.context_switches_per_second > CONTEXT_SWITCHES_PER_CPU_STORM * max(stat.cpus, 1),
            "context_switch_storm",
            f"{(system.context_switches_per_second or 0):,.0f} context switches/s on {stat.cpus} CPUs",
            "pidstat -w 1 5",
        ),
        (
            stat.procs_blocked > max(stat.cpus, 1),
            "io_blocked",
            f"{stat.procs_blocked} threads blocked on I/O",
            "ps -eLo state,pid,comm | awk '$1==\"D\"'",
        ),
    ]
    for broken, reason, evidence, command in checks:
        if broken:
            return [Link(f"system {reason}", "resources", False, summary, reason, (evidence,), command)]
    return [Link("system", "resources", True, summary)]


def container_links(container: Any) -> list[Link]:
    links = []
    for c in container.services.values() if container is not None else []:
        if not c.found or c.cgroup_version in (None, 0):
            continue
        name = f"cgroup {c.name}"
        where = f"cat /sys/fs/cgroup{c.cgroup_path}/cpu.stat /sys/fs/cgroup{c.cgroup_path}/memory.events"
        if c.oom_kills_delta:
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    f"{c.oom_kills_delta} processes of {c.name} were OOM-killed at its memory limit",
                    "oom_killed",
                    (f"memory limit {gib(c.memory_limit_bytes or 0)}, {c.oom_kills} OOM kills in all",),
                    where,
                )
            )
        elif (
            c.memory_working_set_ratio is not None
            and c.memory_working_set_ratio > MEMORY_LIMIT_PRESSURE_RATIO
        ):
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    f"{c.name} uses {c.memory_working_set_ratio:.0%} of its memory limit",
                    "memory_limit_pressure",
                    (f"working set {gib(c.memory_working_set_bytes or 0)} of the limit",),
                    where,
                )
            )
        elif c.cpu_throttled_fraction is not None and c.cpu_throttled_fraction > CPU_THROTTLED_RATIO:
            quota = f"{c.cpu_quota_cores:g} CPUs" if c.cpu_quota_cores else "its quota"
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    f"{c.name} is CPU-throttled in {c.cpu_throttled_fraction:.0%} of periods (limit {quota})",
                    "cpu_throttled",
                    ("CPU throttling makes a service alive but slow to answer",),
                    where,
                )
            )
        else:
            links.append(Link(name, "resources", True, f"cgroup v{c.cgroup_version}: within its limits"))
    return links


def gpu_links(gpu: Any) -> list[Link]:
    if gpu is None:
        return []
    if not gpu.available:
        return [Link("gpu", "resources", None, gpu.message or "no NVIDIA GPU / driver found")]
    links = []
    for device in gpu.gpus:
        name = f"gpu {device.index} ({device.name})"
        if device.lost or 79 in device.xid_recent:
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    "the GPU is lost (fell off the bus): only a reset or a reboot brings it back",
                    "gpu_lost",
                    (f"uuid {device.uuid}, recent XIDs {list(device.xid_recent)}",),
                    "nvidia-smi -q | head -40; dmesg | grep -i xid | tail",
                )
            )
        elif device.xid_recent:
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    f"XID errors in the last 10 minutes: {', '.join(str(x) for x in device.xid_recent)}",
                    "gpu_xid_errors",
                    (f"last XID {device.last_xid}",),
                    "dmesg | grep -i xid | tail",
                )
            )
        elif (device.memory_used_ratio or 0) >= GPU_MEMORY_FULL_RATIO:
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    f"GPU memory {device.memory_used_ratio:.0%} full",
                    "gpu_memory_full",
                    (used_of(device.memory_used_bytes, device.memory_total_bytes),),
                    "nvidia-smi --query-compute-apps=pid,used_memory --format=csv",
                )
            )
        elif device.throttle_reasons:
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    f"clocks held down: {', '.join(device.throttle_reasons)}",
                    "gpu_throttled",
                    (f"temperature {device.temperature_celsius} C, power {device.power_draw_watts} W",),
                    "nvidia-smi -q -d PERFORMANCE,TEMPERATURE,POWER",
                )
            )
        else:
            used = f"{device.memory_used_ratio:.0%}" if device.memory_used_ratio is not None else "?"
            util = f"{device.utilization:.0%}" if device.utilization is not None else "?"
            links.append(
                Link(
                    name, "resources", True, f"memory {used} used, {util} busy, {device.processes} processes"
                )
            )
    if gpu.compatibility_problems:
        links.append(
            Link(
                "cuda",
                "resources",
                False,
                gpu.compatibility_problems[0],
                "cuda_incompatible",
                tuple(gpu.compatibility_problems[:4]),
                "nvidia-smi; python -c 'import torch; print(torch.version.cuda)'",
            )
        )
    return links
