"""AutoGLM / Service process: the service's processes (context switches of all threads, threads,
CPU, memory, descriptors, restarts, ports), cgroup limits, stack captures and environment drift."""

from __future__ import annotations

from .. import config
from ..config import prometheus_duration
from ..grafana import (
    BYTES,
    CORES,
    NONE,
    PER_SECOND,
    RATIO,
    SHORT,
    Dashboard,
    Row,
    Target,
    flag,
    stat,
    state_timeline,
    table,
    timeseries,
)
from .panels import (
    INST,
    INSTANCE_VAR,
    SERVICE_VAR,
    SVC,
    W,
    increase,
    line,
    rate,
)


def context_switch_row() -> Row:
    per_cpu = f"instance:autoglm_system_context_switches_per_cpu:rate{W}{{{INST}}}"
    return Row(
        "Context switches",
        (
            timeseries(
                "Context switches per service",
                "All threads: voluntary switches are waits (I/O, locks), involuntary ones preemption.",
                (
                    Target(
                        f"instance_service:autoglm_process_context_switches:rate{W}{{{SVC}}}",
                        "{{service}} {{type}}",
                    ),
                ),
                PER_SECOND,
            ),
            timeseries(
                "System context switches per CPU",
                "Context switches of the whole machine per CPU; above the line is a context-switch storm.",
                (Target(per_cpu, "{{instance}}"),),
                PER_SECOND,
                steps=line("context_switches_per_cpu_per_second"),
            ),
        ),
    )


def threads_cpu_row() -> Row:
    restarts = (
        f"increase(autoglm_process_restarts_total{{{SVC}}}[{prometheus_duration(config.RESTART_WINDOW)}])"
    )
    return Row(
        "Threads, CPU and memory",
        (
            timeseries(
                "Threads",
                "Threads of the service's processes; steady growth is a thread leak.",
                (Target(f"autoglm_process_threads{{{SVC}}}", "{{service}}"),),
                SHORT,
                width=8,
            ),
            timeseries(
                "Thread states",
                "Threads in each scheduler state; many in D (disk sleep) means they wait for I/O.",
                (Target(f"autoglm_process_thread_states{{{SVC}}}", "{{service}} {{state}}"),),
                SHORT,
                width=8,
            ),
            timeseries(
                "CPU by mode",
                "CPU cores the service uses, user and system; flat at its quota means it is CPU-bound.",
                (
                    Target(
                        rate("autoglm_process_cpu_seconds_total", SVC, "instance, service, mode"),
                        "{{service}} {{mode}}",
                    ),
                ),
                CORES,
                width=8,
            ),
            timeseries(
                "Resident memory",
                "Resident memory of the service's processes; growth without bound is a leak.",
                (Target(f"autoglm_process_resident_memory_bytes{{{SVC}}}", "{{service}}"),),
                BYTES,
                width=8,
            ),
            timeseries(
                "Open file descriptors",
                "File descriptors the service holds open; steady growth is a leak of sockets or files.",
                (Target(f"autoglm_process_open_fds{{{SVC}}}", "{{service}}"),),
                SHORT,
                width=8,
            ),
            timeseries(
                f"Restarts in {prometheus_duration(config.RESTART_WINDOW)}",
                "Times the service's process was replaced; above the line it is crash-looping.",
                (Target(restarts, "{{service}}"),),
                SHORT,
                steps=line("restarts_per_window"),
                width=8,
            ),
            table(
                "Listening ports",
                "Every TCP port a process of the service listens on now; the expected port should be here.",
                Target(f"autoglm_process_listening{{{SVC}}} == 1"),
                height=5,
            ),
        ),
    )


def cgroup_row() -> Row:
    throttled = f"instance_service:autoglm_container_cpu_throttled:ratio_rate{W}{{{SVC}}}"
    return Row(
        "Container (cgroup)",
        (
            timeseries(
                "CPU throttled ratio",
                "Share of CPU periods the cgroup spent throttled; above the line requests slow down.",
                (Target(throttled, "{{service}}"),),
                RATIO,
                steps=line("cpu_throttled_ratio"),
                high=1,
                width=8,
            ),
            timeseries(
                "CPU used vs quota",
                "CPU cores the service uses against its cgroup quota; touching the quota means throttling.",
                (
                    Target(
                        f"instance_service:autoglm_process_cpu_seconds:rate{W}{{{SVC}}}",
                        "{{service}} used",
                    ),
                    Target(f"autoglm_container_cpu_quota_cores{{{SVC}}}", "{{service}} quota"),
                ),
                CORES,
                width=8,
            ),
            timeseries(
                "Memory vs limit",
                "The cgroup's memory against its limit; a working set near the limit risks an OOM kill.",
                (
                    Target(f"autoglm_container_memory_usage_bytes{{{SVC}}}", "{{service}} usage"),
                    Target(f"autoglm_container_memory_working_set_bytes{{{SVC}}}", "{{service}} working set"),
                    Target(f"autoglm_container_memory_limit_bytes{{{SVC}}}", "{{service}} limit"),
                ),
                BYTES,
                width=8,
            ),
            timeseries(
                "OOM kills",
                "Processes of the service's cgroup the kernel's OOM killer ended; any bar is a crash.",
                (
                    Target(
                        increase("autoglm_container_oom_kills_total", SVC, "instance, service"), "{{service}}"
                    ),
                ),
                SHORT,
                bars=True,
                width=24,
                height=6,
            ),
        ),
    )


def forensics_row() -> Row:
    captures = increase("autoglm_forensics_captures_total", SVC, "instance, service, reason", "$__range")
    failures = increase(
        "autoglm_forensics_capture_failures_total", SVC, "instance, service, kind", "$__range"
    )
    return Row(
        "Forensics and environment",
        (
            timeseries(
                "Threads by state in the last capture",
                "py-spy's view of the main process: many blocked threads while probes fail is a hang.",
                (Target(f"autoglm_forensics_threads{{{SVC}}}", "{{service}} {{state}}"),),
                SHORT,
                width=10,
            ),
            stat(
                "Deadlock suspected",
                "Red when the last stack captures found threads blocked on locks that never moved.",
                (Target(f"autoglm_forensics_deadlock_suspected{{{SVC}}}", "{{service}}"),),
                NONE,
                mapped=flag("no", "suspected"),
                width=4,
                height=8,
            ),
            stat(
                "Stack captures in range",
                "Captures taken and failed in the range; failures of kind permission need SYS_PTRACE.",
                (
                    Target(captures, "{{service}} {{reason}}"),
                    Target(failures, "{{service}} failed: {{kind}}"),
                ),
                SHORT,
                base_color="blue",
                width=10,
                height=8,
            ),
            state_timeline(
                "Environment drift",
                "When a part of the service's environment (packages, python, model...) left its baseline.",
                (Target(f"autoglm_environment_drift{{{SVC}}}", "{{service}} {{component}}"),),
                mapped=flag("baseline", "drifted", "orange"),
            ),
        ),
    )


def dashboard() -> Dashboard:
    return Dashboard(
        "autoglm-process",
        "AutoGLM / Service process",
        "The service's processes: context switches of all threads, threads, CPU, memory, descriptors, "
        "restarts, ports, cgroup limits, stack captures and environment drift.",
        (context_switch_row(), threads_cpu_row(), cgroup_row(), forensics_row()),
        (INSTANCE_VAR, SERVICE_VAR),
    )
