"""Which processes belong to which configured service: one matcher, one membership result per cycle.

A process belongs to a service when any of the service's rules claims it: command-line regex,
executable, pidfile or listening port (and, with include_children, its descendants). A port rule
never adopts a process the service's other rules contradict: when a command line, executable or
live pidfile says who the service is, the port's holder must be one of those processes or descend
from one; anything else on the port is a squatter (the process collector names it). Every
collector that needs a service's processes (process, container, environment, the GPU join) asks
the same `ServiceMatcher`, so a service means the same processes everywhere: `current()` hands
out one `Membership` until it is older than `reuse_for`, then looks at /proc again. Collectors
run in their own threads; `current()` is safe to call from any of them.

Scanning /proc is the costly part of a cycle: command lines are cached per pid, listening
sockets come from sock_diag, and the "which pid holds this socket" fd scan runs only when the
listening socket changes.
"""

from __future__ import annotations

import os
import re
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import ServiceConfig
from . import procfs, sockdiag

CMDLINE_CACHE_SECONDS = 60.0  # a process may rename itself (setproctitle) soon after start
MAX_ANCESTRY = 32  # parents climbed to find the service of a process (a GPU worker's server)
# A membership is handed out again while younger than this share of the interval of the quickest
# collector that asks: the collectors of one cycle get one result, the next cycle a new look.
MEMBERSHIP_REUSE = 0.5


class ProcfsUnreadable(OSError):
    """The proc root itself cannot be listed."""


class Cycle:
    """What one look at /proc reads at most once: each pid's stat, each namespace's LISTEN sockets.

    The collectors sharing a Membership share its Cycle from their own threads: its tables only
    ever gain entries, so two threads asking at once at worst read the same file twice.
    """

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


@dataclass(frozen=True)
class Membership:
    """One look at /proc: which processes belong to which service. Shared, never changed."""

    taken_at: float  # time.monotonic()
    cycle: Cycle  # the reads it made: reuse them
    pids: tuple[int, ...]  # every pid but the exporter's
    services: dict[str, tuple[int, ...]]  # service -> its pids, sorted
    main: dict[str, tuple[int, int]]  # service -> (pid, start ticks) of its oldest process, if any
    port_owners: dict[int, tuple[int, ...]]  # each configured port -> the pids holding its LISTEN socket
    first_service: dict[int, str]  # pid -> the first configured service it belongs to
    # service -> the processes below its processes in the tree (its workers: vLLM's engine core,
    # renamed VLLM::EngineCore, which no command-line rule of the API server matches), sorted;
    # found whether or not include_children counts them as the service's own.
    children: dict[str, tuple[int, ...]]

    def main_pid(self, service: str) -> int | None:
        """The service's oldest process: where stacks, its cgroup and its environment are read."""
        main = self.main.get(service)
        return main[0] if main else None

    def owner(self, pid: int) -> str | None:
        """The service of the process or of its nearest ancestor that belongs to one (an engine's
        workers are children of the matched server)."""
        current = pid
        for _ in range(MAX_ANCESTRY):
            if current in self.first_service:
                return self.first_service[current]
            stat = self.cycle.stat(current)
            if stat is None or stat.ppid <= 1:
                return None
            current = stat.ppid
        return None


class ServiceMatcher:
    """Finds the services' processes; one instance is shared by every collector that asks."""

    def __init__(
        self, services: tuple[ServiceConfig, ...], proc_root: str = "/proc", reuse_for: float = 0.0
    ) -> None:
        self.services = services
        self.proc_root = proc_root
        self.reuse_for = reuse_for  # seconds a Membership is handed out again; 0: a new look each time
        self._patterns = {s.name: re.compile(s.match.cmdline) for s in services if s.match.cmdline}
        self._cmdlines: dict[int, tuple[float, str, str | None]] = {}  # pid -> (read at, cmdline, exe)
        self._port_owners: dict[int, tuple[int, list[tuple[int, int]]]] = {}  # port -> (inode, owners)
        self._latest: Membership | None = None
        self._lock = threading.Lock()

    def current(self, newer_than: float | None = None) -> Membership:
        """The latest Membership while it is younger than `reuse_for` (and taken after `newer_than`,
        a caller's previous look), else a new look at /proc.

        Raises ProcfsUnreadable when the proc root cannot be listed."""
        with self._lock:
            latest = self._latest
            if (
                latest is None
                or time.monotonic() - latest.taken_at >= self.reuse_for
                or (newer_than is not None and latest.taken_at <= newer_than)
            ):
                latest = self._latest = self._look()
            return latest

    def forget(self) -> None:
        """The next current() looks at /proc again (a new set of collectors starts)."""
        with self._lock:
            self._latest = None

    def _look(self) -> Membership:
        try:
            listed = procfs.list_pids(self.proc_root)
        except OSError as exc:
            raise ProcfsUnreadable(exc.errno, f"cannot list {self.proc_root}: {exc.strerror}") from exc
        own_pid = os.getpid()
        pids = [pid for pid in listed if pid != own_pid]
        cycle = Cycle(self.proc_root)
        ports = {port for s in self.services for port in (s.match.port, s.port) if port is not None}
        port_owners = {port: tuple(self._port_owner_pids(port, pids, cycle)) for port in sorted(ports)}
        services = {s.name: tuple(sorted(self._match(s, pids, cycle, port_owners))) for s in self.services}
        first_service: dict[int, str] = {}
        for name, members in services.items():
            for pid in members:
                first_service.setdefault(pid, name)
        main = {name: found for name, members in services.items() if (found := _oldest(members, cycle))}
        below = _children_of(pids, cycle)
        children = {name: tuple(sorted(_below(members, below))) for name, members in services.items()}
        self._forget_gone(pids)
        return Membership(
            time.monotonic(), cycle, tuple(pids), services, main, port_owners, first_service, children
        )

    def _match(
        self, service: ServiceConfig, pids: list[int], cycle: Cycle, port_owners: dict[int, tuple[int, ...]]
    ) -> set[int]:
        rule = service.match
        matched: set[int] = set()  # by who the process is: command line, executable, pidfile
        if rule.cmdline or rule.exe:
            matched.update(self._by_command(service, pids))
        pidfile_pid = _read_pidfile(rule.pidfile) if rule.pidfile else None
        if pidfile_pid is not None and cycle.stat(pidfile_pid) is not None:
            matched.add(pidfile_pid)
        if rule.port is not None:
            # A port says where a process listens, not who it is: when the other rules can tell
            # who the service is, a holder they do not claim (itself or an ancestor) is a squatter.
            identified = bool(rule.cmdline or rule.exe or matched)
            matched.update(
                pid
                for pid in port_owners[rule.port]
                if not identified or pid in matched or _descends_from(pid, matched, cycle)
            )
        if service.include_children and matched:
            matched |= _descendants(matched, pids, cycle)
        return {pid for pid in matched if cycle.stat(pid) is not None}

    def _by_command(self, service: ServiceConfig, pids: list[int]) -> Iterable[int]:
        pattern, exe_rule = self._patterns.get(service.name), service.match.exe
        for pid in pids:
            seen = self._cmdline(pid)
            if seen is None:
                continue
            cmdline, exe = seen
            if (pattern and cmdline and pattern.search(cmdline)) or (exe_rule and exe == exe_rule):
                yield pid

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

    def _port_owner_pids(self, port: int, pids: list[int], cycle: Cycle) -> list[int]:
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


_shared: weakref.WeakSet[ServiceMatcher] = weakref.WeakSet()


def shared_matcher(services: tuple[ServiceConfig, ...], proc_root: str, reuse_for: float) -> ServiceMatcher:
    """The matcher the running collectors already share when the services did not change, else a
    new one. A reload that keeps some collectors and rebuilds others must not give them two views
    of a service; the set it builds starts with a fresh look at /proc."""
    for matcher in _shared:
        if matcher.services == services and matcher.proc_root == proc_root:
            matcher.reuse_for = reuse_for
            matcher.forget()
            return matcher
    matcher = ServiceMatcher(services, proc_root, reuse_for)
    _shared.add(matcher)
    return matcher


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


def _descendants(roots: set[int], pids: list[int], cycle: Cycle) -> set[int]:
    return _below(roots, _children_of(pids, cycle)) - roots


def _children_of(pids: list[int], cycle: Cycle) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid in pids:
        stat = cycle.stat(pid)
        if stat is not None:
            children.setdefault(stat.ppid, []).append(pid)
    return children


def _below(roots: Iterable[int], children: dict[int, list[int]]) -> set[int]:
    """Every process below one of `roots` in the tree (a root below another root included)."""
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _descends_from(pid: int, ancestors: set[int], cycle: Cycle) -> bool:
    current = pid
    for _ in range(MAX_ANCESTRY):
        stat = cycle.stat(current)
        if stat is None or stat.ppid <= 1:
            return False
        if stat.ppid in ancestors:
            return True
        current = stat.ppid
    return False


def _oldest(pids: Iterable[int], cycle: Cycle) -> tuple[int, int] | None:
    """(pid, start ticks) of the process that started first: a service's main process."""
    found: tuple[int, int] | None = None
    for pid in pids:
        stat = cycle.stat(pid)
        if stat is not None and (found is None or (stat.start_ticks, pid) < (found[1], found[0])):
            found = (pid, stat.start_ticks)
    return found
