"""The /proc side of the GPU joins: which configured service each GPU process belongs to, the
CUDA_VISIBLE_DEVICES its processes started with, and the CUDA runtime it loaded.

No GPU exporter does these, and none of it is about reading the GPUs, so it lives apart from the
readers. `ProcJoin` matches each pid against the services' cmdline regex or exe, climbs to the
nearest matched ancestor for GPU processes (an engine's workers are children of the matched
server), reads /proc/PID/environ and asks cuda.py for the runtime, caching per pid and
bounding the reads per cycle. Pidfile and port rules are the process collector's business and are
not used here. `gpus_used_by` says which GPUs a service may use, CUDA_VISIBLE_DEVICES included.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass

from ...config import ServiceConfig
from ...linux import procfs
from . import cuda
from .reading import DeviceReading

log = logging.getLogger(__name__)

PROC_CACHE_SECONDS = 60.0  # a process may rename itself (setproctitle) soon after it starts
MAX_PIDS_PER_SERVICE = 64  # environments read per service and cycle
MAX_RUNTIME_READS = 4  # /proc/PID/maps read per cycle (a big service maps thousands of files)
MAX_ANCESTRY = 32


@dataclass
class _PidInfo:
    """What was read about one pid, kept PROC_CACHE_SECONDS."""

    read_at: float
    service: str | None  # the service its own cmdline/exe matches
    ppid: int | None = None  # read only when needed (ancestry)
    owner: str | None = None  # the service it or its nearest matched ancestor belongs to
    owner_known: bool = False
    visible: str | None = None  # CUDA_VISIBLE_DEVICES, read only for service processes
    runtime: cuda.Runtime | None = None
    runtime_read_at: float | None = None


@dataclass(frozen=True)
class ServiceJoin:
    """One cycle's join of the GPU processes with the configured services."""

    owner: dict[int, str]  # GPU pid -> service
    pids: dict[str, list[int]]  # service -> its pids
    visible: dict[str, list[str]]  # service -> distinct CUDA_VISIBLE_DEVICES values
    runtimes: dict[str, cuda.Runtime]  # service -> its CUDA runtime


class ProcJoin:
    """Which service a pid belongs to, its environment and its CUDA runtime, cached per pid."""

    def __init__(self, proc_root: str, services: tuple[ServiceConfig, ...]) -> None:
        self.proc_root = proc_root
        self.services = services
        self._rules = [
            (s.name, re.compile(s.match.cmdline) if s.match.cmdline else None, s.match.exe) for s in services
        ]
        self._need_exe = any(s.match.exe for s in services)
        self._pids: dict[int, _PidInfo] = {}
        self._listing_failed = False

    def join(self, gpu_pids: list[int]) -> ServiceJoin:
        if not self.services:
            return ServiceJoin({}, {}, {}, {})
        now = time.monotonic()
        try:
            pids = procfs.list_pids(self.proc_root)
        except OSError as exc:
            if not self._listing_failed:
                log.warning("cannot list processes for the GPU joins", extra={"error": str(exc)})
                self._listing_failed = True
            pids = []
        own = os.getpid()
        alive = set(pids)
        for pid in [p for p in self._pids if p not in alive]:
            del self._pids[pid]
        direct: dict[str, list[int]] = {s.name: [] for s in self.services}
        for pid in pids:
            if pid == own:
                continue
            entry = self._info(pid, now)
            if entry is not None and entry.service is not None:
                direct[entry.service].append(pid)
        owner: dict[int, str] = {}
        attributed: dict[str, list[int]] = {s.name: [] for s in self.services}
        for pid in gpu_pids:
            service = self._owner(pid, now)
            if service is not None:
                owner[pid] = service
                attributed[service].append(pid)
        members: dict[str, list[int]] = {}
        visible: dict[str, list[str]] = {}
        runtimes: dict[str, cuda.Runtime] = {}
        reads = [MAX_RUNTIME_READS]
        for name, matched in direct.items():
            matched_set = set(matched)
            on_gpu = [pid for pid in attributed[name] if pid not in matched_set]
            members[name] = sorted(matched + on_gpu)
            # Environments: GPU processes first (they are what CUDA_VISIBLE_DEVICES steered).
            gpu_first = [pid for pid in members[name] if pid in owner] + [
                pid for pid in members[name] if pid not in owner
            ]
            values: dict[str, None] = {}
            for pid in gpu_first[:MAX_PIDS_PER_SERVICE]:
                value = self._visible(pid)
                if value is not None:
                    values.setdefault(value, None)
            visible[name] = list(values)[:4]
            # The runtime: the processes the service's own rule matched first (one of them imports
            # torch), then its GPU processes.
            runtime = self._runtime(matched + on_gpu, now, reads)
            if runtime is not None:
                runtimes[name] = runtime
        return ServiceJoin(owner, members, visible, runtimes)

    def _info(self, pid: int, now: float) -> _PidInfo | None:
        entry = self._pids.get(pid)
        if entry is not None and now - entry.read_at < PROC_CACHE_SECONDS:
            return entry
        try:
            cmdline = procfs.read_cmdline(self.proc_root, pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            self._pids.pop(pid, None)
            return None
        exe = procfs.read_exe(self.proc_root, pid) if self._need_exe else None
        service = None
        for name, pattern, rule_exe in self._rules:
            if (pattern is not None and cmdline and pattern.search(cmdline)) or (
                rule_exe and exe == rule_exe
            ):
                service = name
                break
        if entry is not None and entry.service == service:
            entry.read_at = now  # same process (most likely): keep what was read about it
            entry.owner_known = False  # but look at its ancestry again (a parent may have died)
            return entry
        entry = _PidInfo(now, service)
        self._pids[pid] = entry
        return entry

    def _owner(self, pid: int, now: float) -> str | None:
        """The service of the process or of its nearest matched ancestor, remembered per pid."""
        first = self._info(pid, now)
        if first is None:
            return None
        if not first.owner_known:
            first.owner = self._walk(pid, now)
            first.owner_known = True
        return first.owner

    def _walk(self, pid: int, now: float) -> str | None:
        current: int | None = pid
        for _ in range(MAX_ANCESTRY):
            if current is None or current <= 1:
                return None
            entry = self._info(current, now)
            if entry is None:
                return None
            if entry.service is not None:
                return entry.service
            if entry.ppid is None:
                try:
                    stat = procfs.parse_pid_stat(procfs.read_text(f"{self.proc_root}/{current}/stat"))
                except (OSError, procfs.ProcParseError):
                    return None
                entry.ppid = stat.ppid
            current = entry.ppid
        return None

    def _visible(self, pid: int) -> str | None:
        entry = self._pids.get(pid)
        if entry is not None and entry.visible is not None:
            return entry.visible
        try:
            with open(f"{self.proc_root}/{pid}/environ", "rb") as handle:
                raw = handle.read(1024 * 1024)
        except PermissionError:
            value = "unreadable"
        except OSError:
            return None
        else:
            value = "unset"
            for item in raw.split(b"\0"):
                if item.startswith(b"CUDA_VISIBLE_DEVICES="):
                    value = item.split(b"=", 1)[1].decode("utf-8", "replace")[:64] or "empty"
                    break
        if entry is not None:
            entry.visible = value
        return value

    def _runtime(self, pids: list[int], now: float, reads: list[int]) -> cuda.Runtime | None:
        for pid in pids:
            entry = self._pids.get(pid)
            if entry is None:
                continue
            if entry.runtime is not None:
                return entry.runtime
            if entry.runtime_read_at is not None and now - entry.runtime_read_at < PROC_CACHE_SECONDS:
                continue
            if reads[0] <= 0:
                continue
            reads[0] -= 1
            entry.runtime_read_at = now
            try:
                entry.runtime = cuda.find_runtime(self.proc_root, pid)
            except OSError:
                entry.runtime = None
            if entry.runtime is not None:
                return entry.runtime
        return None


def gpus_used_by(
    devices: tuple[DeviceReading, ...], on_gpus: tuple[int, ...], cuda_visible_devices: tuple[str, ...]
) -> list[DeviceReading]:
    """The GPUs a service uses: where its processes run (`on_gpus`), else what its
    CUDA_VISIBLE_DEVICES values name, else all.

    Indexes are matched as given (CUDA's order is NVML's only with CUDA_DEVICE_ORDER=PCI_BUS_ID),
    UUIDs (GPU-..., MIG-...) by prefix.
    """
    if on_gpus:
        return [d for d in devices if d.index in on_gpus]
    named: set[str] = set()
    for value in cuda_visible_devices:
        if value not in ("unset", "unreadable"):
            named |= {part.strip() for part in value.split(",") if part.strip()}
    if not named:
        return list(devices)
    chosen = [
        d
        for d in devices
        if str(d.index) in named
        or any(d.uuid.startswith(n) and n.startswith(("GPU-", "MIG-")) for n in named)
    ]
    return chosen  # an empty list: it names GPUs this machine does not have (the facts show the value)
