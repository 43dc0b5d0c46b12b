"""Finding a service's processes: by command line, executable, pidfile or listening port.

Shared by every collector that needs a service's pids (process, container, environment), so a
service means the same processes everywhere. Scanning /proc is the costly part of a cycle: command
lines are cached per pid, listening sockets come from sock_diag, and the "which pid holds this
socket" fd scan runs only when the listening socket changes.
"""

from __future__ import annotations

import os
import re
import time

from ..config import ServiceConfig
from . import procfs, sockdiag

CMDLINE_CACHE_SECONDS = 60.0  # a process may rename itself (setproctitle) soon after start


class ProcfsUnreadable(OSError):
    """The proc root itself cannot be listed."""


class Cycle:
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


def _descendants(roots: set[int], pids: list[int], cycle: Cycle) -> set[int]:
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


class ProcessFinder:
    def __init__(self, services: tuple[ServiceConfig, ...], proc_root: str = "/proc") -> None:
        self.services = services
        self.proc_root = proc_root
        self._patterns = {s.name: re.compile(s.match.cmdline) for s in services if s.match.cmdline}
        self._cmdlines: dict[int, tuple[float, str, str | None]] = {}  # pid -> (read at, cmdline, exe)
        self._port_owners: dict[
            int, tuple[int, list[tuple[int, int]]]
        ] = {}  # port -> (inode, [(pid, start)])

    def scan(self) -> tuple[Cycle, list[int], dict[str, list[int]]]:
        """One look at /proc: the cycle's cache, every pid but ours, and each service's pids (sorted)."""
        try:
            pids = procfs.list_pids(self.proc_root)
        except OSError as exc:
            raise ProcfsUnreadable(exc.errno, f"cannot list {self.proc_root}: {exc.strerror}") from exc
        own_pid = os.getpid()
        pids = [pid for pid in pids if pid != own_pid]
        cycle = Cycle(self.proc_root)
        matched = {service.name: sorted(self._match(service, pids, cycle)) for service in self.services}
        self._forget_gone(pids)
        return cycle, pids, matched

    def _match(self, service: ServiceConfig, pids: list[int], cycle: Cycle) -> set[int]:
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
            matched.update(self.port_owner_pids(rule.port, pids, cycle))
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

    def port_owner_pids(self, port: int, pids: list[int], cycle: Cycle) -> list[int]:
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


def oldest(pids: list[int], cycle: Cycle) -> tuple[int, int] | None:
    """(pid, start ticks) of the process that started first: a service's main process."""
    found: tuple[int, int] | None = None
    for pid in pids:
        stat = cycle.stat(pid)
        if stat is not None and (found is None or (stat.start_ticks, pid) < (found[1], found[0])):
            found = (pid, stat.start_ticks)
    return found
