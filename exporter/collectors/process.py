"""The service's processes: alive, listening, restarted, and what their threads are doing.

Each configured service is found by command-line regex, executable, pidfile or listening port
(any rule that matches claims the process), optionally with its children. Every service has all
of its series from the first scrape on: a service with no process reports up 0 and zeros.
A process that exits while we read it is simply not counted: that race is normal.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from .. import procfs, sockdiag
from ..config import ServiceConfig
from ..metricspec import Family, MetricSpec, counter, gauge
from .base import Collector, CollectorError, Result

UP = gauge("autoglm_process_up", "1 when at least one process of the service is running, else 0.", "service")
PROCESSES = gauge("autoglm_process_processes", "Number of processes matched for the service.", "service")
RESTARTS = counter(
    "autoglm_process_restarts",
    "Times the service's oldest process was replaced by another since the exporter started.",
    "service",
)
START_TIME = gauge(
    "autoglm_process_start_time_seconds",
    "Start time of the service's oldest process in seconds since the epoch, 0 when none runs.",
    "service",
)
CPU_SECONDS = counter(
    "autoglm_process_cpu_seconds", "CPU time used by the service's processes, by mode.", "service", "mode"
)
RSS = gauge("autoglm_process_resident_memory_bytes", "Resident memory of the service's processes.", "service")
THREADS = gauge("autoglm_process_threads", "Threads in the service's processes.", "service")
OPEN_FDS = gauge("autoglm_process_open_fds", "Open file descriptors of the service's processes.", "service")
THREAD_STATES = gauge(
    "autoglm_process_thread_states", "Threads of the service in each scheduler state.", "service", "state"
)
CONTEXT_SWITCHES = counter(
    "autoglm_process_context_switches",
    "Context switches of ALL threads of the service's processes (voluntary: waited; involuntary: preempted).",
    "service",
    "type",
)
LISTENING = gauge(
    "autoglm_process_listening",
    "1 for each TCP port a process of the service listens on (at most 32 ports a service).",
    "service",
    "port",
)
EXPECTED_PORT = gauge(
    "autoglm_process_expected_port_listening",
    "1 when a process of the service listens on the port it is configured to serve, else 0.",
    "service",
    "port",
)

PORT_TAKEN = gauge(
    "autoglm_process_expected_port_taken",
    "1 when a process that is not part of the service listens on the service's expected port, else 0.",
    "service",
    "port",
)

MAX_PORTS_PER_SERVICE = 32
CMDLINE_CACHE_SECONDS = 60.0  # a process may rename itself (setproctitle) soon after start


@dataclass
class ServiceFacts:
    name: str
    pids: list[int] = field(default_factory=list)
    main_pid: int | None = None  # the oldest process: where stacks and the environment are read
    start_time: float = 0.0
    restarts: int = 0
    cpu_user_seconds: float = 0.0
    cpu_system_seconds: float = 0.0
    rss_bytes: int = 0
    threads: int = 0
    open_fds: int = 0
    thread_states: dict[str, int] = field(default_factory=dict)
    voluntary_ctxt_switches: int = 0
    involuntary_ctxt_switches: int = 0
    listening_ports: list[int] = field(default_factory=list)
    expected_port: int | None = None
    expected_port_listening: bool = False
    # Processes outside the service that listen on its expected port (pid, command name).
    port_taken_by: list[tuple[int, str]] = field(default_factory=list)

    @property
    def up(self) -> bool:
        return bool(self.pids)


@dataclass(frozen=True)
class ProcessFacts:
    services: dict[str, ServiceFacts]


class ProcessCollector(Collector):
    name = "process"
    metrics = (
        UP,
        PROCESSES,
        RESTARTS,
        START_TIME,
        CPU_SECONDS,
        RSS,
        THREADS,
        OPEN_FDS,
        THREAD_STATES,
        CONTEXT_SWITCHES,
        LISTENING,
        EXPECTED_PORT,
        PORT_TAKEN,
    )

    def __init__(self, services: tuple[ServiceConfig, ...], proc_root: str = "/proc") -> None:
        self.services = services
        self.proc_root = proc_root
        self.settings = (services, proc_root)
        self._patterns = {s.name: re.compile(s.match.cmdline) for s in services if s.match.cmdline}
        self._cmdlines: dict[int, tuple[float, str, str | None]] = {}  # pid -> (read at, cmdline, exe)
        self._port_owners: dict[
            int, tuple[int, list[tuple[int, int]]]
        ] = {}  # port -> (inode, [(pid, start)])
        self._main_process: dict[str, tuple[int, int]] = {}  # service -> (pid, start ticks) of oldest process
        self._restarts: dict[str, int] = {s.name: 0 for s in services}
        self._boot_time: float | None = None

    def collect(self) -> Result:
        try:
            pids = procfs.list_pids(self.proc_root)
        except OSError as exc:
            raise CollectorError("os_error", f"cannot list {self.proc_root}: {exc.strerror}") from exc
        own_pid = os.getpid()
        pids = [pid for pid in pids if pid != own_pid]
        cycle = _Cycle(self.proc_root)
        facts = {}
        for service in self.services:
            matched = self._match(service, pids, cycle)
            facts[service.name] = self._service_facts(service, sorted(matched), pids, cycle)
        self._forget_gone(pids)
        return Result(self._families(facts), ProcessFacts(facts))

    # --- finding the processes -------------------------------------------------------------

    def _match(self, service: ServiceConfig, pids: list[int], cycle: _Cycle) -> set[int]:
        rule = service.match
        matched: set[int] = set()
        if rule.cmdline or rule.exe:
            pattern = self._patterns.get(service.name)
            for pid in pids:
                seen = self._cmdline(pid)
                if seen is None:
                    continue
                cmdline, exe = seen
                if (pattern and cmdline and pattern.search(cmdline)) or (rule.exe and exe == rule.exe):
                    matched.add(pid)
        if rule.pidfile:
            pidfile_pid = _read_pidfile(rule.pidfile)
            if pidfile_pid is not None and cycle.stat(pidfile_pid) is not None:
                matched.add(pidfile_pid)
        if rule.port is not None:
            matched.update(self._port_owner_pids(rule.port, pids, cycle))
        if service.include_children and matched:
            matched |= _descendants(matched, pids, cycle)
        return {pid for pid in matched if cycle.stat(pid) is not None}

    def _cmdline(self, pid: int) -> tuple[str, str | None] | None:
        now = time.monotonic()
        cached = self._cmdlines.get(pid)
        if cached and now - cached[0] < CMDLINE_CACHE_SECONDS:
            return cached[1], cached[2]
        try:
            cmdline = procfs.read_cmdline(self.proc_root, pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        exe = procfs.read_exe(self.proc_root, pid)
        self._cmdlines[pid] = (now, cmdline, exe)
        return cmdline, exe

    def _port_owner_pids(self, port: int, pids: list[int], cycle: _Cycle) -> list[int]:
        """Pids holding the socket that listens on `port`; the costly fd scan runs only on change."""
        inodes = [inode for inode, p in cycle.listening_here().items() if p == port]
        if not inodes:
            self._port_owners.pop(port, None)
            return []
        cached = self._port_owners.get(port)
        if (
            cached
            and cached[0] in inodes
            and all(_same_process(cycle.stat(pid), start) for pid, start in cached[1])
        ):
            return [pid for pid, _ in cached[1]]
        owners: list[tuple[int, int]] = []
        wanted = set(inodes)
        for pid in pids:
            try:
                held = procfs.socket_inodes(self.proc_root, pid)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            stat = cycle.stat(pid)
            if held & wanted and stat is not None:
                owners.append((pid, stat.start_ticks))
        self._port_owners[port] = (inodes[0], owners)
        return [pid for pid, _ in owners]

    def _forget_gone(self, pids: list[int]) -> None:
        alive = set(pids)
        for pid in [pid for pid in self._cmdlines if pid not in alive]:
            del self._cmdlines[pid]

    # --- reading them -----------------------------------------------------------------------

    def _service_facts(
        self, service: ServiceConfig, pids: list[int], all_pids: list[int], cycle: _Cycle
    ) -> ServiceFacts:
        facts = ServiceFacts(service.name, expected_port=service.port)
        oldest: tuple[int, int] | None = None
        ports: set[int] = set()
        for pid in pids:
            stat = cycle.stat(pid)
            if stat is None:
                continue
            try:
                threads = procfs.summarize_threads(self.proc_root, pid)
                fds = procfs.count_fds(self.proc_root, pid)
                ports |= cycle.listening_ports(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited while we read it
            except PermissionError:
                threads, fds = procfs.ThreadSummary(), 0
            facts.pids.append(pid)
            facts.cpu_user_seconds += stat.utime_seconds
            facts.cpu_system_seconds += stat.stime_seconds
            facts.rss_bytes += stat.rss_bytes
            facts.threads += stat.num_threads
            facts.open_fds += fds
            facts.voluntary_ctxt_switches += threads.voluntary_ctxt_switches
            facts.involuntary_ctxt_switches += threads.nonvoluntary_ctxt_switches
            for state, count in threads.states.items():
                facts.thread_states[state] = facts.thread_states.get(state, 0) + count
            if oldest is None or (stat.start_ticks, pid) < (oldest[1], oldest[0]):
                oldest = (pid, stat.start_ticks)
        facts.listening_ports = sorted(ports)
        facts.expected_port_listening = service.port is not None and service.port in ports
        if service.port is not None and not facts.expected_port_listening:
            for pid in self._port_owner_pids(service.port, all_pids, cycle):
                stat = cycle.stat(pid)
                if stat is not None and pid not in facts.pids:
                    facts.port_taken_by.append((pid, stat.comm))
        if oldest is not None:
            facts.main_pid = oldest[0]
            facts.start_time = self._boot() + oldest[1] / procfs.CLOCK_TICKS
            previous = self._main_process.get(service.name)
            if previous is not None and previous != oldest:
                self._restarts[service.name] += 1
            self._main_process[service.name] = oldest
        facts.restarts = self._restarts[service.name]
        return facts

    def _boot(self) -> float:
        if self._boot_time is None:
            self._boot_time = procfs.parse_stat(procfs.read_text(f"{self.proc_root}/stat")).boot_time
        return self._boot_time

    # --- metrics ------------------------------------------------------------------------------

    def _families(self, services: dict[str, ServiceFacts]) -> list[Family]:
        families = {spec.name: spec.family() for spec in self.metrics}

        def add(spec: MetricSpec, labels: list[str], value: float) -> None:
            families[spec.name].add_metric(labels, value)

        for name, facts in services.items():
            add(UP, [name], 1 if facts.up else 0)
            add(PROCESSES, [name], len(facts.pids))
            add(RESTARTS, [name], facts.restarts)
            add(START_TIME, [name], facts.start_time)
            add(CPU_SECONDS, [name, "user"], facts.cpu_user_seconds)
            add(CPU_SECONDS, [name, "system"], facts.cpu_system_seconds)
            add(RSS, [name], facts.rss_bytes)
            add(THREADS, [name], facts.threads)
            add(OPEN_FDS, [name], facts.open_fds)
            for state in procfs.THREAD_STATE_NAMES:
                add(THREAD_STATES, [name, state], facts.thread_states.get(state, 0))
            add(CONTEXT_SWITCHES, [name, "voluntary"], facts.voluntary_ctxt_switches)
            add(CONTEXT_SWITCHES, [name, "involuntary"], facts.involuntary_ctxt_switches)
            for port in facts.listening_ports[:MAX_PORTS_PER_SERVICE]:
                add(LISTENING, [name, str(port)], 1)
            if facts.expected_port is not None:
                port_label = [name, str(facts.expected_port)]
                add(EXPECTED_PORT, port_label, 1 if facts.expected_port_listening else 0)
                add(PORT_TAKEN, port_label, 1 if facts.port_taken_by else 0)
        return list(families.values())


class _Cycle:
    """What one collection reads at most once: each pid's stat, each namespace's LISTEN sockets."""

    def __init__(self, proc_root: str) -> None:
        self.proc_root = proc_root
        self._stats: dict[int, procfs.PidStat | None] = {}
        self._listening: dict[str, dict[int, int]] = {}
        # sock_diag answers for our own network namespace on the live /proc only.
        self._own_namespace = _own_namespace() if proc_root == "/proc" else None

    def stat(self, pid: int) -> procfs.PidStat | None:
        """/proc/PID/stat, None for a pid that is gone."""
        if pid not in self._stats:
            try:
                self._stats[pid] = procfs.parse_pid_stat(procfs.read_text(f"{self.proc_root}/{pid}/stat"))
            except (FileNotFoundError, ProcessLookupError, procfs.ProcParseError):
                self._stats[pid] = None
        return self._stats[pid]

    def listening_here(self) -> dict[int, int]:
        """LISTEN sockets (inode -> port) of the namespace the exporter runs in."""
        return self._table(self._own_namespace or "self", f"{self.proc_root}/net")

    def listening_ports(self, pid: int) -> set[int]:
        """Ports a process listens on: its socket inodes against its own namespace's LISTEN table."""
        try:
            namespace = os.readlink(f"{self.proc_root}/{pid}/ns/net")
        except OSError:
            namespace = f"pid {pid}"
        listening = self._table(namespace, f"{self.proc_root}/{pid}/net")
        if not listening:
            return set()
        return {listening[inode] for inode in procfs.socket_inodes(self.proc_root, pid) if inode in listening}

    def _table(self, namespace: str, net_dir: str) -> dict[int, int]:
        if namespace not in self._listening:
            table = None
            if namespace == self._own_namespace:
                try:
                    table = sockdiag.listening_tcp()
                except OSError:
                    table = None  # no netlink (seccomp, old kernel): read /proc instead
            self._listening[namespace] = table if table is not None else procfs.listening_tcp(net_dir)
        return self._listening[namespace]


def _own_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None


def _same_process(stat: procfs.PidStat | None, start_ticks: int) -> bool:
    return stat is not None and stat.start_ticks == start_ticks


def _read_pidfile(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def _descendants(roots: set[int], pids: list[int], cycle: _Cycle) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in pids:
        stat = cycle.stat(pid)
        if stat is not None:
            children.setdefault(stat.ppid, []).append(pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found and child not in roots:
                found.add(child)
                stack.append(child)
    return found
