"""The /proc side of the GPU joins: which configured service each GPU process belongs to, the
CUDA_VISIBLE_DEVICES its processes started with, and the CUDA runtime it loaded.

No GPU exporter does these, and none of it is about reading the GPUs, so it lives apart from the
readers. Which processes are a service's comes from the shared Membership (linux/processes.py:
every rule, pidfile and port included, as for the process collector); a GPU process belongs to
the service of its own pid or of its nearest ancestor that is a member (an engine's workers are
children of the matched server). `ProcJoin` reads /proc/PID/environ and asks cuda.py for the
runtime, remembering both per process and bounding the reads per cycle. `gpus_used_by` says which
GPUs a service may use, CUDA_VISIBLE_DEVICES included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ...config import ServiceConfig
from ...linux.processes import Membership
from . import cuda
from .reading import DeviceReading

MAX_PIDS_PER_SERVICE = 64  # environments read per service and cycle
MAX_VISIBLE_VALUES = 4  # distinct CUDA_VISIBLE_DEVICES values kept per service
MAX_RUNTIME_READS = 4  # /proc/PID/maps read per cycle (a big service maps thousands of files)
RUNTIME_RETRY_SECONDS = 60.0  # a process without a CUDA runtime yet may load one later


@dataclass
class _Seen:
    """What was read about one process (pid and start time), for as long as it lives."""

    visible: str | None = None  # CUDA_VISIBLE_DEVICES: it started with it, so it never changes
    runtime: cuda.Runtime | None = None
    runtime_read_at: float | None = None


@dataclass(frozen=True)
class ServiceJoin:
    """One cycle's join of the GPU processes with the configured services."""

    owner: dict[int, str]  # GPU pid -> service
    pids: dict[str, list[int]]  # service -> its pids
    visible: dict[str, list[str]]  # service -> distinct CUDA_VISIBLE_DEVICES values
    runtimes: dict[str, cuda.Runtime]  # service -> its CUDA runtime


NO_JOIN = ServiceJoin({}, {}, {}, {})


class ProcJoin:
    """The services' GPU processes, environments and CUDA runtimes, remembered per process."""

    def __init__(self, proc_root: str, services: tuple[ServiceConfig, ...]) -> None:
        self.proc_root = proc_root
        self.services = services
        self._seen: dict[tuple[int, int], _Seen] = {}  # (pid, start ticks) -> what was read
        self._runtime_reads = 0

    def join(self, membership: Membership, gpu_pids: list[int]) -> ServiceJoin:
        owner: dict[int, str] = {}
        for pid in gpu_pids:
            found = membership.owner(pid)
            if found is not None:
                owner[pid] = found
        self._forget_gone(membership)
        self._runtime_reads = MAX_RUNTIME_READS
        pids: dict[str, list[int]] = {}
        visible: dict[str, list[str]] = {}
        runtimes: dict[str, cuda.Runtime] = {}
        for service in self.services:
            members = list(membership.services[service.name])
            on_gpu = sorted(pid for pid, name in owner.items() if name == service.name and pid not in members)
            pids[service.name] = sorted(members + on_gpu)
            # Environments: GPU processes first (they are what CUDA_VISIBLE_DEVICES steered).
            gpu_first = sorted(pids[service.name], key=lambda pid: pid not in owner)
            visible[service.name] = self._visible_values(gpu_first, membership)
            # The runtime: the members first (one of them imports torch), then its GPU processes.
            runtime = self._runtime(members + on_gpu, membership)
            if runtime is not None:
                runtimes[service.name] = runtime
        return ServiceJoin(owner, pids, visible, runtimes)

    def _seen_for(self, pid: int, membership: Membership) -> _Seen | None:
        stat = membership.cycle.stat(pid)
        if stat is None:
            return None
        return self._seen.setdefault((pid, stat.start_ticks), _Seen())

    def _forget_gone(self, membership: Membership) -> None:
        alive = set(membership.pids)
        for key in [key for key in self._seen if key[0] not in alive]:
            del self._seen[key]

    def _visible_values(self, pids: list[int], membership: Membership) -> list[str]:
        values: dict[str, None] = {}
        for pid in pids[:MAX_PIDS_PER_SERVICE]:
            seen = self._seen_for(pid, membership)
            if seen is None:
                continue
            if seen.visible is None:
                seen.visible = _read_visible(self.proc_root, pid)
            if seen.visible is not None:
                values.setdefault(seen.visible, None)
        return list(values)[:MAX_VISIBLE_VALUES]

    def _runtime(self, pids: list[int], membership: Membership) -> cuda.Runtime | None:
        now = time.monotonic()
        for pid in pids:
            seen = self._seen_for(pid, membership)
            if seen is None:
                continue
            if seen.runtime is not None:
                return seen.runtime
            recently = seen.runtime_read_at is not None and now - seen.runtime_read_at < RUNTIME_RETRY_SECONDS
            if recently or self._runtime_reads <= 0:
                continue
            self._runtime_reads -= 1
            seen.runtime_read_at = now
            try:
                seen.runtime = cuda.find_runtime(self.proc_root, pid)
            except OSError:
                seen.runtime = None
            if seen.runtime is not None:
                return seen.runtime
        return None


def _read_visible(proc_root: str, pid: int) -> str | None:
    """CUDA_VISIBLE_DEVICES the process started with: "unset", "unreadable", or None when gone."""
    try:
        with open(f"{proc_root}/{pid}/environ", "rb") as handle:
            raw = handle.read(1024 * 1024)
    except PermissionError:
        return "unreadable"
    except OSError:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(b"CUDA_VISIBLE_DEVICES="):
            return item.split(b"=", 1)[1].decode("utf-8", "replace")[:64] or "empty"
    return "unset"


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
