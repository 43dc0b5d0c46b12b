"""The exporter itself: its own process (as every Prometheus client library exports it) and the
chain its config describes (which service depends on which Redis, engine or service).

Watching the watcher: a leak, a thread pile-up or an fd leak in the exporter shows in its own
`process_*` series long before it becomes the second thing that does not answer. Read from
/proc/self on the schedule like everything else, never on a scrape.
"""

from __future__ import annotations

import os
import resource

from ..base.stall import STALL
from ..config import Config
from ..facts.exporter import Dependency, ExporterFacts
from ..linux import procfs
from ..metrics.spec import Families, counter, gauge, info
from .base import Collector, CollectorError, Result

CPU = counter("process_cpu_seconds", "Total user and system CPU time spent by the exporter in seconds.")
RESIDENT = gauge("process_resident_memory_bytes", "Resident memory size of the exporter in bytes.")
VIRTUAL = gauge("process_virtual_memory_bytes", "Virtual memory size of the exporter in bytes.")
START = gauge("process_start_time_seconds", "Start time of the exporter since the unix epoch in seconds.")
OPEN_FDS = gauge("process_open_fds", "Number of open file descriptors of the exporter.")
MAX_FDS = gauge("process_max_fds", "Maximum number of open file descriptors of the exporter.")
STALLED = counter(
    "autoglm_exporter_stalled_seconds",
    "Seconds the exporter wanted to run and was not scheduled (a starved machine, a CPU quota, a "
    "frozen VM): deadlines and hang thresholds leave them out.",
)
THREADS = gauge(
    "autoglm_exporter_threads", "Threads of the exporter's process (all of them, not only Python's)."
)
DEPENDENCY = info(
    "autoglm_service_dependency",
    "What each configured service needs to answer (its depends_on): kind redis, engine or service.",
    "service",
    "kind",
    "dependency",
)


def dependencies_of(config: Config) -> tuple[Dependency, ...]:
    """Every depends_on edge with the kind of what it names (a name may be an engine and a service)."""
    kinds = (
        ("redis", {redis.name for redis in config.redis}),
        ("engine", {engine.name for engine in config.engines}),
        ("service", {service.name for service in config.services}),
    )
    return tuple(
        Dependency(service.name, kind, name)
        for service in config.services
        for name in service.depends_on
        for kind, names in kinds
        if name in names
    )


class ExporterCollector(Collector[ExporterFacts]):
    name = "exporter"
    metrics = (CPU, RESIDENT, VIRTUAL, START, OPEN_FDS, MAX_FDS, STALLED, THREADS, DEPENDENCY)

    def __init__(self, dependencies: tuple[Dependency, ...]) -> None:
        self.dependencies = dependencies
        self.settings = (dependencies,)
        self._page_size = os.sysconf("SC_PAGE_SIZE")
        self._boot_time: float | None = None

    def collect(self) -> Result[ExporterFacts]:
        # Our own /proc/self, whatever `paths.proc` says: that may be the host's, seen from a container.
        try:
            stat = procfs.parse_pid_stat(procfs.read_text("/proc/self/stat"))
            pages = procfs.read_text("/proc/self/statm").split()
            virtual, resident = int(pages[0]) * self._page_size, int(pages[1]) * self._page_size
            open_fds = len(os.listdir("/proc/self/fd"))
            if self._boot_time is None:
                self._boot_time = procfs.parse_stat(procfs.read_text("/proc/stat")).boot_time
        except OSError as exc:
            raise CollectorError("os_error", f"cannot read the exporter's own process: {exc}") from exc
        except (procfs.ProcParseError, ValueError, IndexError) as exc:
            raise CollectorError("parse_error", f"cannot parse the exporter's own process: {exc}") from exc
        facts = ExporterFacts(resident, open_fds, stat.num_threads, self.dependencies)
        families = Families(self.metrics)
        families.add(CPU, [], stat.utime_seconds + stat.stime_seconds)
        families.add(RESIDENT, [], resident)
        families.add(VIRTUAL, [], virtual)
        families.add(START, [], self._boot_time + stat.start_ticks / procfs.CLOCK_TICKS)
        families.add(OPEN_FDS, [], open_fds)
        families.add(MAX_FDS, [], resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        families.add(STALLED, [], STALL.stalled())
        families.add(THREADS, [], stat.num_threads)
        for edge in self.dependencies:
            families.add(DEPENDENCY, [edge.service, edge.kind, edge.dependency], {})
        return Result(families.list(), facts)
