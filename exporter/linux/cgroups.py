"""A process's cgroup limits and pressure, v2 and v1, plus its capabilities and network namespace.

Where the numbers come from (kernel docs: admin-guide/cgroup-v2 and cgroup-v1/{cpu,memory}):

    what                 v2 (unified)                       v1
    CPU quota            cpu.max "QUOTA PERIOD" | "max P"   cpu.cfs_quota_us (-1: none) / cpu.cfs_period_us
    periods, throttled   cpu.stat nr_periods, nr_throttled  cpu.stat nr_periods, nr_throttled
    throttled time       cpu.stat throttled_usec (µs)       cpu.stat throttled_time (ns)
    memory limit         memory.max ("max": none)           memory.limit_in_bytes (huge: none)
    memory usage         memory.current                     memory.usage_in_bytes
    OOM kills            memory.events oom_kill             memory.oom_control oom_kill (4.13+)
    page cache           memory.stat inactive_file          memory.stat total_inactive_file

The process's cgroup path comes from /proc/PID/cgroup ("0::/path" for v2, "N:controllers:/path"
for v1); the directory is found under the cgroup mounts listed in our own mountinfo (the mount's
root is stripped: a container without a cgroup namespace mounts "/docker/ID" at /sys/fs/cgroup/..).
On a hybrid host (v1 controllers plus an empty unified hierarchy) each controller is read from
the hierarchy that actually has it.

Limits are hierarchical: a service in a sub-cgroup is bounded by its ancestors too. So the CPU and
memory numbers are read from the cgroup holding the TIGHTEST limit on the way up to the mount
(throttling is counted where the quota is enforced, pressure is usage against that limit); with no
limit anywhere they come from the process's own cgroup.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

from . import procfs

DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup"

# v1 writes "no limit" as the largest page-aligned long (9223372036854771712 with 4 KiB pages,
# less with bigger pages); no real limit comes near 4 EiB.
V1_UNLIMITED_FROM = 1 << 62

# Capability bit numbers, from include/uapi/linux/capability.h (index = bit).
CAPABILITY_NAMES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
    "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
    "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)  # fmt: skip
CAP_NET_ADMIN = 12
CAP_SYS_PTRACE = 19

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class CgroupError(Exception):
    """The process's cgroup could not be found or read (a bounded, human-readable reason)."""


# --- /proc/PID/cgroup and mountinfo ----------------------------------------------------------


@dataclass(frozen=True)
class CgroupEntry:
    """One line of /proc/PID/cgroup."""

    hierarchy: int  # 0 for the unified (v2) hierarchy
    controllers: tuple[str, ...]  # empty for v2; ("cpu", "cpuacct"), ("name=systemd",) for v1
    path: str

    @property
    def unified(self) -> bool:
        return self.hierarchy == 0 and not self.controllers


def parse_proc_cgroup(text: str) -> list[CgroupEntry]:
    """Parse /proc/PID/cgroup: "hierarchy-ID:controller-list:cgroup-path" per line."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":", 2)  # the path itself may hold ':'
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].startswith("/"):
            raise CgroupError(f"unexpected /proc/PID/cgroup line {line!r}")
        controllers = tuple(name for name in parts[1].split(",") if name)
        entries.append(CgroupEntry(int(parts[0]), controllers, parts[2]))
    return entries


@dataclass(frozen=True)
class CgroupMount:
    """A cgroup filesystem mount from mountinfo."""

    mountpoint: str
    root: str  # the cgroup directory mounted there ("/" unless a namespace or bind mount)
    version: int  # 1 (fstype cgroup) or 2 (cgroup2)
    options: frozenset[str]  # super options: for v1 they name the controllers


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts of a /proc/PID/mountinfo (man 5 proc_pid_mountinfo)."""
    mounts = []
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        if not sep:
            continue
        fields, tail = before.split(), after.split()
        if len(fields) < 6 or len(tail) < 2 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        options = frozenset(tail[2].split(",")) if len(tail) > 2 else frozenset()
        mounts.append(
            CgroupMount(
                mountpoint=_unescape(fields[4]),
                root=_unescape(fields[3]),
                version=2 if tail[0] == "cgroup2" else 1,
                options=options,
            )
        )
    return mounts


def read_mounts(proc_root: str = "/proc") -> list[CgroupMount]:
    """The cgroup mounts WE see (our own mountinfo); empty when it cannot be read."""
    try:
        return parse_mountinfo(procfs.read_text(f"{proc_root}/self/mountinfo"))
    except OSError:
        return []


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


# --- where the process's cgroup directories are ----------------------------------------------


@dataclass(frozen=True)
class ControllerDir:
    directory: str  # the process's cgroup directory for this controller
    mount_dir: str  # the top of the hierarchy it lives in (ancestors are walked up to here)
    version: int


@dataclass(frozen=True)
class CgroupLocation:
    version: int  # 2 when cpu and memory are both unified, 1 when either is in a v1 hierarchy
    path: str  # the cgroup path as /proc/PID/cgroup shows it (the memory controller's for v1)
    cpu: ControllerDir | None
    memory: ControllerDir | None


def locate(
    entries: list[CgroupEntry], mounts: list[CgroupMount], cgroup_root: str = DEFAULT_CGROUP_ROOT
) -> CgroupLocation:
    """Find the cpu and memory directories of a process under `cgroup_root`."""
    usable = _mounts_under(mounts, cgroup_root)
    found: dict[str, ControllerDir | None] = {}
    paths: dict[str, str] = {}
    for controller in ("cpu", "memory"):
        found[controller] = None
        for entry in entries:
            if entry.unified or controller not in entry.controllers:
                continue
            for mount in usable:
                if mount.version == 1 and controller in mount.options:
                    directory = _directory(mount, entry.path)
                    if directory is not None:
                        found[controller] = ControllerDir(directory, mount.mountpoint, 1)
                        paths[controller] = entry.path
                        break
            if found[controller]:
                break
        if found[controller] is None:
            unified = next((entry for entry in entries if entry.unified), None)
            v2_mount = next((m for m in usable if m.version == 2), None)
            if unified and v2_mount and _enabled(v2_mount, controller):
                directory = _directory(v2_mount, unified.path)
                if directory is not None:
                    found[controller] = ControllerDir(directory, v2_mount.mountpoint, 2)
                    paths[controller] = unified.path
    cpu, memory = found["cpu"], found["memory"]
    if cpu is None and memory is None:
        described = ", ".join(f"{e.hierarchy}:{','.join(e.controllers)}:{e.path}" for e in entries)
        raise CgroupError(f"no cpu or memory cgroup of ({described or 'no entries'}) under {cgroup_root}")
    versions = {d.version for d in (cpu, memory) if d is not None}
    path = paths.get("memory") or paths["cpu"]
    return CgroupLocation(1 if 1 in versions else 2, path, cpu, memory)


def _mounts_under(mounts: list[CgroupMount], cgroup_root: str) -> list[CgroupMount]:
    """Mounts at or below cgroup_root; re-based from /sys/fs/cgroup when the root was moved.

    A recorded mountinfo (tests) or one from a host says /sys/fs/cgroup while the tree we are
    told to read lies elsewhere; with no mountinfo at all we guess the standard layout.
    """
    root = cgroup_root.rstrip("/") or "/"
    under = [m for m in mounts if _is_under(m.mountpoint, root)]
    if under:
        return under
    if root != DEFAULT_CGROUP_ROOT:
        rebased = [
            CgroupMount(root + m.mountpoint[len(DEFAULT_CGROUP_ROOT) :], m.root, m.version, m.options)
            for m in mounts
            if _is_under(m.mountpoint, DEFAULT_CGROUP_ROOT)
        ]
        if rebased:
            return rebased
    return _standard_layout(root)


def _standard_layout(root: str) -> list[CgroupMount]:
    if os.path.exists(f"{root}/cgroup.controllers"):
        return [CgroupMount(root, "/", 2, frozenset())]
    guessed = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    for name in names:
        path = f"{root}/{name}"
        if os.path.isdir(path) and not os.path.islink(path):
            version = 2 if name == "unified" else 1
            guessed.append(CgroupMount(path, "/", version, frozenset(name.split(","))))
    return guessed


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _enabled(mount: CgroupMount, controller: str) -> bool:
    """Whether a v2 hierarchy offers the controller (a hybrid host's unified mount offers none)."""
    try:
        offered = procfs.read_text(f"{mount.mountpoint}/cgroup.controllers").split()
    except OSError:
        return True  # cannot tell: try to read its files
    return controller in offered


def _directory(mount: CgroupMount, cgroup_path: str) -> str | None:
    """The directory of cgroup_path in this mount, or None when the mount does not show it."""
    if ".." in cgroup_path.split("/"):
        return None  # the kernel writes "/../x" for a cgroup outside our cgroup namespace
    path = posixpath.normpath(cgroup_path)
    root = posixpath.normpath(mount.root)
    if root != "/":
        if not _is_under(path, root):
            return None
        path = path[len(root) :] or "/"
    return mount.mountpoint.rstrip("/") + (path if path != "/" else "")


# --- reading the files ----------------------------------------------------------------------


def parse_flat_keyed(text: str) -> dict[str, int]:
    """A flat-keyed file ("key value" lines): cpu.stat, memory.events, memory.stat, oom_control."""
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                values[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return values


def parse_cpu_max(text: str) -> tuple[int | None, int]:
    """v2 cpu.max: "QUOTA PERIOD" in µs; QUOTA "max" (None) means no limit."""
    parts = text.split()
    if not parts or len(parts) > 2:
        raise CgroupError(f"unexpected cpu.max {text.strip()!r}")
    period = int(parts[1]) if len(parts) == 2 else 100_000
    return (None if parts[0] == "max" else int(parts[0])), period


def parse_memory_max(text: str) -> int | None:
    """v2 memory.max (and memory.high): bytes, or "max" (None) for no limit."""
    value = text.strip()
    return None if value == "max" else int(value)


def parse_v1_memory_limit(text: str) -> int | None:
    """v1 memory.limit_in_bytes: bytes, or a value near 2**63 (None) for no limit."""
    value = int(text.strip())
    return None if value >= V1_UNLIMITED_FROM else value


def parse_v1_cpu_quota(quota_text: str, period_text: str) -> tuple[int | None, int]:
    """v1 cpu.cfs_quota_us (-1: no limit) and cpu.cfs_period_us, both µs."""
    quota = int(quota_text.strip())
    return (None if quota < 0 else quota), int(period_text.strip())


@dataclass(frozen=True)
class CgroupStats:
    """What a process's cgroup says about its limits and pressure; None: unlimited or not known."""

    version: int
    path: str
    cpu_dir: str | None  # where the CPU numbers were read: the cgroup holding the tightest quota
    memory_dir: str | None  # likewise for memory
    cpu_quota_cores: float | None  # quota / period; None: no quota
    cpu_periods: int | None  # enforcement periods that elapsed (0 without a quota)
    cpu_throttled_periods: int | None
    cpu_throttled_seconds: float | None
    memory_limit_bytes: int | None  # None: no limit
    memory_usage_bytes: int | None
    memory_working_set_bytes: int | None  # usage less inactive page cache (what the kernel can't drop)
    oom_kills: int | None


def read_stats(location: CgroupLocation) -> CgroupStats:
    """Read the limits and counters of a located cgroup; CgroupError when it is gone."""
    cpu = location.cpu
    memory = location.memory
    for controller in (cpu, memory):
        if controller is not None and not os.path.isdir(controller.directory):
            raise CgroupError(f"cgroup directory {controller.directory} does not exist")
    cores, cpu_dir, periods, throttled, throttled_seconds = None, None, None, None, None
    if cpu is not None:
        cores, cpu_dir = _tightest(cpu, _cpu_quota_cores)
        stat = _flat(cpu_dir, "cpu.stat")
        periods, throttled = stat.get("nr_periods"), stat.get("nr_throttled")
        if "throttled_usec" in stat:
            throttled_seconds = stat["throttled_usec"] / 1e6
        elif "throttled_time" in stat:
            throttled_seconds = stat["throttled_time"] / 1e9
    limit, memory_dir, usage, working_set, oom_kills = None, None, None, None, None
    if memory is not None:
        limit_value, memory_dir = _tightest(memory, _memory_limit)
        limit = int(limit_value) if limit_value is not None else None
        v2 = memory.version == 2
        usage = _integer(memory_dir, "memory.current" if v2 else "memory.usage_in_bytes")
        events = _flat(memory_dir, "memory.events" if v2 else "memory.oom_control")
        oom_kills = events.get("oom_kill")
        inactive = _flat(memory_dir, "memory.stat").get("inactive_file" if v2 else "total_inactive_file")
        if usage is not None:
            working_set = max(usage - (inactive or 0), 0)
    return CgroupStats(
        version=location.version,
        path=location.path,
        cpu_dir=cpu_dir,
        memory_dir=memory_dir,
        cpu_quota_cores=cores,
        cpu_periods=periods,
        cpu_throttled_periods=throttled,
        cpu_throttled_seconds=throttled_seconds,
        memory_limit_bytes=limit,
        memory_usage_bytes=usage,
        memory_working_set_bytes=working_set,
        oom_kills=oom_kills,
    )


def read_process(
    proc_root: str,
    pid: int,
    cgroup_root: str = DEFAULT_CGROUP_ROOT,
    mounts: list[CgroupMount] | None = None,
) -> CgroupStats:
    """The cgroup numbers of one process. FileNotFoundError when the process is gone."""
    entries = parse_proc_cgroup(procfs.read_text(f"{proc_root}/{pid}/cgroup"))
    if mounts is None:
        mounts = read_mounts(proc_root)
    return read_stats(locate(entries, mounts, cgroup_root))


# Reads one level's limit: (directory, cgroup version) -> limit, None for none or unreadable.
_LimitReader = Callable[[str, int], "float | None"]


def _tightest(controller: ControllerDir, limit_of: _LimitReader) -> tuple[float | None, str]:
    """The smallest limit from the process's cgroup up to the hierarchy's top, and where it is."""
    best: float | None = None
    where = controller.directory
    directory = controller.directory
    while True:
        limit = limit_of(directory, controller.version)
        if limit is not None and (best is None or limit < best):
            best, where = limit, directory
        if directory == controller.mount_dir or len(directory) <= len(controller.mount_dir):
            break
        directory = os.path.dirname(directory)
    return best, where


def _cpu_quota_cores(directory: str, version: int) -> float | None:
    try:
        if version == 2:
            quota, period = parse_cpu_max(procfs.read_text(f"{directory}/cpu.max"))
        else:
            quota, period = parse_v1_cpu_quota(
                procfs.read_text(f"{directory}/cpu.cfs_quota_us"),
                procfs.read_text(f"{directory}/cpu.cfs_period_us"),
            )
    except (OSError, ValueError):
        return None  # no such file at this level (the v2 root has no cpu.max)
    return quota / period if quota is not None and period > 0 else None


def _memory_limit(directory: str, version: int) -> float | None:
    try:
        if version == 2:
            return parse_memory_max(procfs.read_text(f"{directory}/memory.max"))
        return parse_v1_memory_limit(procfs.read_text(f"{directory}/memory.limit_in_bytes"))
    except (OSError, ValueError):
        return None


def _flat(directory: str, name: str) -> dict[str, int]:
    try:
        return parse_flat_keyed(procfs.read_text(f"{directory}/{name}"))
    except OSError:
        return {}


def _integer(directory: str, name: str) -> int | None:
    try:
        return int(procfs.read_text(f"{directory}/{name}").strip())
    except (OSError, ValueError):
        return None


# --- capabilities and namespaces ---------------------------------------------------------------


def parse_effective_capabilities(status_text: str) -> int:
    """The CapEff bit mask (hex) of a /proc/PID/status."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    raise CgroupError("status has no CapEff line")


def capability_names(mask: int) -> tuple[str, ...]:
    """The names of the bits set in a capability mask, in bit order (unknown bits as cap_N)."""
    names = []
    for bit in range(mask.bit_length()):
        if mask >> bit & 1:
            names.append(CAPABILITY_NAMES[bit] if bit < len(CAPABILITY_NAMES) else f"cap_{bit}")
    return tuple(names)


def has_capability(mask: int, bit: int) -> bool:
    return bool(mask >> bit & 1)


def read_effective_capabilities(proc_root: str, pid: int) -> int:
    return parse_effective_capabilities(procfs.read_text(f"{proc_root}/{pid}/status"))


def net_namespace(proc_root: str, pid: int | str) -> str | None:
    """The process's network namespace ("net:[4026531840]"), None when we may not look."""
    try:
        return os.readlink(f"{proc_root}/{pid}/ns/net")
    except OSError:
        return None


def shares_host_network(proc_root: str, pid: int, host_namespace: str | None = None) -> bool | None:
    """Whether the process is in the network namespace of pid 1 of proc_root (the host's, when
    the host's /proc is what we read); None when either namespace cannot be read."""
    host = host_namespace if host_namespace is not None else net_namespace(proc_root, 1)
    own = net_namespace(proc_root, pid)
    if host is None or own is None:
        return None
    return own == host
