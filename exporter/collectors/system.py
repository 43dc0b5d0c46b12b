"""The machine as a whole, from /proc: CPU by mode, context switches, forks, run queue, memory, load.

A context-switch storm or a pile of processes blocked on I/O is how "alive but not answering"
often looks from outside the service, so these are part of the chain's resources layer.
"""

from __future__ import annotations

import time

from ..facts.system import SystemFacts
from ..linux import procfs
from ..metrics.spec import Family, counter, gauge
from .base import Collector, CollectorError, Result

CONTEXT_SWITCHES = counter(
    "autoglm_system_context_switches", "Context switches of all CPUs since boot (ctxt of /proc/stat)."
)
FORKS = counter("autoglm_system_forks", "Processes and threads created since boot (processes of /proc/stat).")
PROCS_RUNNING = gauge("autoglm_system_procs_running", "Threads runnable or running right now.")
PROCS_BLOCKED = gauge("autoglm_system_procs_blocked", "Threads blocked waiting for I/O right now.")
CPU_SECONDS = counter("autoglm_system_cpu_seconds", "CPU time spent in each mode, all CPUs added up.", "mode")
CPUS = gauge("autoglm_system_cpus", "Number of CPUs the kernel lists in /proc/stat.")
BOOT_TIME = gauge("autoglm_system_boot_time_seconds", "Time the machine booted, in seconds since the epoch.")
MEMORY = gauge(
    "autoglm_system_memory_bytes",
    "Memory from /proc/meminfo by field: total, available, free, cached, buffers, swap_total, swap_free.",
    "field",
)
LOAD = gauge("autoglm_system_load", "Load average over the window given in the label.", "window")

MEMINFO_FIELDS = {
    "total": "MemTotal",
    "available": "MemAvailable",
    "free": "MemFree",
    "cached": "Cached",
    "buffers": "Buffers",
    "swap_total": "SwapTotal",
    "swap_free": "SwapFree",
}


class SystemCollector(Collector):
    name = "system"
    metrics = (
        CONTEXT_SWITCHES,
        FORKS,
        PROCS_RUNNING,
        PROCS_BLOCKED,
        CPU_SECONDS,
        CPUS,
        BOOT_TIME,
        MEMORY,
        LOAD,
    )

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self.settings = (proc_root,)
        self._previous: tuple[float, procfs.SystemStat] | None = None

    def collect(self) -> Result:
        try:
            stat = procfs.parse_stat(procfs.read_text(f"{self.proc_root}/stat"))
            meminfo = procfs.parse_meminfo(procfs.read_text(f"{self.proc_root}/meminfo"))
            load = procfs.parse_loadavg(procfs.read_text(f"{self.proc_root}/loadavg"))
        except procfs.ProcParseError as exc:
            raise CollectorError("parse_error", str(exc)) from exc
        except OSError as exc:
            raise CollectorError("os_error", f"{exc.filename}: {exc.strerror}") from exc
        now = time.monotonic()
        facts = self._facts(now, stat, meminfo, load)
        self._previous = (now, stat)
        return Result(self._families(stat, meminfo, load), facts)

    def _facts(
        self, now: float, stat: procfs.SystemStat, memory: dict[str, int], load: tuple[float, float, float]
    ) -> SystemFacts:
        ctxt_rate = busy = None
        if self._previous is not None:
            then, old = self._previous
            elapsed = now - then
            if elapsed > 0 and stat.context_switches >= old.context_switches:
                ctxt_rate = (stat.context_switches - old.context_switches) / elapsed
            spent = {
                mode: stat.cpu_seconds[mode] - old.cpu_seconds.get(mode, 0.0) for mode in stat.cpu_seconds
            }
            total = sum(spent.values())
            if total > 0:
                busy = 1.0 - (spent.get("idle", 0.0) + spent.get("iowait", 0.0)) / total
        return SystemFacts(stat, memory, load, ctxt_rate, busy)

    def _families(
        self, stat: procfs.SystemStat, meminfo: dict[str, int], load: tuple[float, float, float]
    ) -> list[Family]:
        cpu = CPU_SECONDS.family()
        for mode, seconds in stat.cpu_seconds.items():
            cpu.add_metric([mode], seconds)
        memory = MEMORY.family()
        for label, field_name in MEMINFO_FIELDS.items():
            if field_name in meminfo:
                memory.add_metric([label], meminfo[field_name])
        loads = LOAD.family()
        for window, value in zip(("1m", "5m", "15m"), load, strict=True):
            loads.add_metric([window], value)
        return [
            CONTEXT_SWITCHES.single(stat.context_switches),
            FORKS.single(stat.forks),
            PROCS_RUNNING.single(stat.procs_running),
            PROCS_BLOCKED.single(stat.procs_blocked),
            cpu,
            CPUS.single(stat.cpus),
            BOOT_TIME.single(stat.boot_time),
            memory,
            loads,
        ]
