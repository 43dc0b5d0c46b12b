"""The autoglm.system group: the host and the service's cgroup (context switches, CPU throttling,
OOM kills), its threads' locks and its environment."""

from __future__ import annotations

from .. import config
from ..config import FOR, duration
from ..config import THRESHOLDS as T
from .alert import COUNT, Alert
from .fanout import fan_out
from .templates import query_list


def system() -> list[Alert]:
    W = duration(config.RATE_WINDOW)
    drifted = query_list(
        "printf `autoglm_environment_drift{instance=%q,service=%q} == 1` $labels.instance $labels.dependency",
        "component",
    )
    restart_window = duration(config.RESTART_WINDOW)
    return [
        Alert(
            "AutoglmContextSwitchStorm",
            "warning",
            f"rate(autoglm_system_context_switches_total[{W}]) / on (instance, job) autoglm_system_cpus"
            f" > {T['context_switches_per_cpu_per_second']}",
            "{{ $labels.instance }} switches context {{ $value | humanize }} times a second per CPU",
            "{{ $labels.instance }} performs {{ $value | humanize }} context switches per second per CPU: "
            "threads fight over locks or CPUs (too many workers, spinning, interrupt storm).",
            FOR["ticket"],
        ),
        Alert(
            "AutoglmCpuThrottled",
            "warning",
            fan_out(
                f"rate(autoglm_container_cpu_throttled_periods_total[{W}])"
                f" / rate(autoglm_container_cpu_periods_total[{W}]) > {T['cpu_throttled_ratio']}",
                "service",
                "service",
            ),
            "{{ $labels.dependency }} is CPU-throttled in {{ $value | humanizePercentage }} of periods",
            "The cgroup of {{ $labels.dependency }} on {{ $labels.instance }} used up its CPU quota in "
            "{{ $value | humanizePercentage }} of the enforcement periods: requests wait for CPU.",
            FOR["ticket_slow"],
        ),
        Alert(
            "AutoglmOomKilled",
            "warning",
            fan_out(
                f"increase(autoglm_container_oom_kills_total[{restart_window}]) > 0", "service", "service"
            ),
            "The OOM killer killed processes of {{ $labels.dependency }}",
            "The kernel's OOM killer killed processes of {{ $labels.dependency }}'s cgroup on "
            "{{ $labels.instance }} in the last " + restart_window + " (kills: " + COUNT + ").",
        ),
        Alert(
            "AutoglmThreadsBlocked",
            "critical",
            fan_out("autoglm_forensics_deadlock_suspected == 1", "service", "service"),
            "Threads of {{ $labels.dependency }} are blocked on locks",
            "Stack captures of {{ $labels.dependency }} on {{ $labels.instance }} found threads blocked on "
            "locks that did not move between dumps (a likely deadlock). The lines are in the verdict and "
            "the newest capture (/api/captures).",
            role="cause",
        ),
        Alert(
            "AutoglmEnvironmentDrift",
            "warning",
            fan_out("max by (instance, job, service) (autoglm_environment_drift) == 1", "service", "service"),
            "{{ $labels.dependency }}'s environment changed since its baseline",
            "These parts of the environment of {{ $labels.dependency }} on {{ $labels.instance }} differ "
            "from the baseline snapshot: " + drifted + "(`autoglm-exporter diff` lists what changed).",
        ),
    ]
