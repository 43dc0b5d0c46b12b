"""Parsers for the few /proc files we read, with an injectable root.

Every function takes the proc root explicitly so tests can point at recorded fixture trees and a
container can read the host's /proc mounted elsewhere. A process may vanish between two reads:
callers treat FileNotFoundError / ProcessLookupError as "gone", which is normal, not an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Order of the per-mode columns on the "cpu" line of /proc/stat (man 5 proc).
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

# /proc/PID/stat state letters folded into the bounded set of thread states we export.
THREAD_STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "disk_sleep",
    "Z": "zombie",
    "T": "stopped",
    "t": "stopped",
    "I": "idle",
    "X": "dead",
    "x": "dead",
    "W": "sleeping",
    "P": "stopped",
}
THREAD_STATE_NAMES = ("running", "sleeping", "disk_sleep", "zombie", "stopped", "idle", "dead")

_TCP_LISTEN = "0A"


class ProcParseError(ValueError):
    """A /proc file did not have the shape the kernel documents."""


def read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


@dataclass(frozen=True)
class SystemStat:
    cpu_seconds: dict[str, float]
    cpus: int
    context_switches: int
    forks: int
    procs_running: int
    procs_blocked: int
    boot_time: float


def parse_stat(text: str) -> SystemStat:
    """Parse /proc/stat: the aggregate cpu line, ctxt, processes, procs_running/blocked, btime."""
    cpu_seconds: dict[str, float] = {}
    cpus = 0
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        key = parts[0]
        if key == "cpu":
            ticks = parts[1 : 1 + len(CPU_MODES)]
            cpu_seconds = {
                mode: int(tick) / CLOCK_TICKS for mode, tick in zip(CPU_MODES, ticks, strict=False)
            }
        elif key.startswith("cpu"):
            cpus += 1
        elif key in ("ctxt", "processes", "procs_running", "procs_blocked", "btime") and len(parts) > 1:
            values[key] = int(parts[1])
    missing = [k for k in ("ctxt", "processes", "procs_running", "procs_blocked") if k not in values]
    if not cpu_seconds or missing:
        raise ProcParseError(f"/proc/stat lacks {', '.join(missing) or 'the cpu line'}")
    return SystemStat(
        cpu_seconds=cpu_seconds,
        cpus=cpus,
        context_switches=values["ctxt"],
        forks=values["processes"],
        procs_running=values["procs_running"],
        procs_blocked=values["procs_blocked"],
        boot_time=float(values.get("btime", 0)),
    )


def parse_meminfo(text: str) -> dict[str, int]:
    """Parse /proc/meminfo into bytes per field (the kernel writes kB, meaning KiB)."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        value = int(parts[0])
        fields[name.strip()] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    if "MemTotal" not in fields:
        raise ProcParseError("/proc/meminfo lacks MemTotal")
    return fields


def parse_loadavg(text: str) -> tuple[float, float, float]:
    parts = text.split()
    if len(parts) < 3:
        raise ProcParseError("/proc/loadavg has fewer than 3 fields")
    return float(parts[0]), float(parts[1]), float(parts[2])


@dataclass(frozen=True)
class PidStat:
    pid: int
    comm: str
    state: str
    ppid: int
    utime_seconds: float
    stime_seconds: float
    num_threads: int
    start_ticks: int  # since boot, in clock ticks: with the pid it identifies one process instance
    rss_bytes: int
    # How it ended, as waitpid(2) reports it (field 52, Linux 3.5+): meaningful for a zombie only.
    exit_code: int | None = None


def parse_pid_stat(text: str) -> PidStat:
    """Parse /proc/PID/stat. comm may hold spaces and parentheses, so split at the LAST ')'."""
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ProcParseError("stat line has no (comm)")
    rest = text[close_paren + 2 :].split()
    if len(rest) < 22:
        raise ProcParseError("stat line is too short")
    # rest[0] is field 3 (state); field N is rest[N - 3].
    return PidStat(
        pid=int(text[:open_paren]),
        comm=text[open_paren + 1 : close_paren],
        state=rest[0],
        ppid=int(rest[1]),
        utime_seconds=int(rest[11]) / CLOCK_TICKS,
        stime_seconds=int(rest[12]) / CLOCK_TICKS,
        num_threads=int(rest[17]),
        start_ticks=int(rest[19]),
        rss_bytes=int(rest[21]) * PAGE_SIZE,
        exit_code=int(rest[49]) if len(rest) > 49 else None,
    )


@dataclass(frozen=True)
class TaskStatus:
    state: str  # the single letter
    voluntary_ctxt_switches: int
    nonvoluntary_ctxt_switches: int


def parse_task_status(text: str) -> TaskStatus:
    """Parse the State and context-switch lines of /proc/PID/task/TID/status.

    Read once per thread per cycle (64 threads -> 64 files), so it looks for its three fields
    directly instead of splitting the ~55 lines of the file.
    """
    try:
        return TaskStatus(
            _status_field(text, "State").split()[0],
            int(_status_field(text, "voluntary_ctxt_switches")),
            int(_status_field(text, "nonvoluntary_ctxt_switches")),
        )
    except (ValueError, IndexError):
        raise ProcParseError("status lacks State or ctxt_switches") from None


def _status_field(text: str, name: str) -> str:
    start = text.find(f"\n{name}:")
    if start < 0:
        if not text.startswith(f"{name}:"):
            raise ValueError(name)
        start = -1
    start += len(name) + 2
    end = text.find("\n", start)
    return text[start : end if end >= 0 else len(text)].strip()


@dataclass
class ThreadSummary:
    """What all threads of one process add up to."""

    voluntary_ctxt_switches: int = 0
    nonvoluntary_ctxt_switches: int = 0
    states: dict[str, int] = field(default_factory=dict)


def summarize_threads(proc_root: str, pid: int) -> ThreadSummary:
    """Sum context switches and count states over every thread in /proc/PID/task.

    psutil's num_ctx_switches() reads only the main thread's status; a server's work happens in
    its worker threads, so we read them all. Threads that exit while we read are skipped.
    """
    summary = ThreadSummary()
    task_dir = f"{proc_root}/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            status = parse_task_status(read_text(f"{task_dir}/{tid}/status"))
        except (FileNotFoundError, ProcessLookupError):
            continue
        summary.voluntary_ctxt_switches += status.voluntary_ctxt_switches
        summary.nonvoluntary_ctxt_switches += status.nonvoluntary_ctxt_switches
        state = THREAD_STATES.get(status.state, "sleeping")
        summary.states[state] = summary.states.get(state, 0) + 1
    return summary


def list_pids(proc_root: str) -> list[int]:
    return [int(name) for name in os.listdir(proc_root) if name.isdigit()]


def read_cmdline(proc_root: str, pid: int) -> str:
    """The command line with NULs as spaces; empty for kernel threads."""
    with open(f"{proc_root}/{pid}/cmdline", "rb") as handle:
        raw = handle.read()
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def read_process_name(proc_root: str, pid: int) -> str:
    """What the process calls itself: argv[0] (a title set with setproctitle, such as vLLM's
    `VLLM::EngineCore`), a path shortened to its file name; empty for kernel threads."""
    with open(f"{proc_root}/{pid}/cmdline", "rb") as handle:
        first = handle.read(4096).split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return os.path.basename(first) if first.startswith("/") and " " not in first else first


def read_exe(proc_root: str, pid: int) -> str | None:
    """Target of /proc/PID/exe, or None when it cannot be read (kernel thread, no permission)."""
    try:
        return os.readlink(f"{proc_root}/{pid}/exe")
    except (PermissionError, FileNotFoundError, ProcessLookupError):
        return None


def count_fds(proc_root: str, pid: int) -> int:
    return len(os.listdir(f"{proc_root}/{pid}/fd"))


def socket_inodes(proc_root: str, pid: int) -> set[int]:
    """Inodes of the sockets a process holds open (fd links read as 'socket:[INODE]')."""
    inodes: set[int] = set()
    fd_dir = f"{proc_root}/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def parse_listening_tcp(text: str) -> dict[int, int]:
    """Map socket inode -> local port for the LISTEN sockets of a /proc/net/tcp{,6} file."""
    listening: dict[int, int] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10 or parts[3] != _TCP_LISTEN:
            continue
        port = int(parts[1].rsplit(":", 1)[1], 16)
        listening[int(parts[9])] = port
    return listening


def listening_tcp(net_dir: str) -> dict[int, int]:
    """LISTEN sockets (inode -> port) of one network namespace, IPv4 and IPv6 together."""
    listening: dict[int, int] = {}
    for name in ("tcp", "tcp6"):
        try:
            listening.update(parse_listening_tcp(read_text(f"{net_dir}/{name}")))
        except FileNotFoundError:
            continue  # a kernel without IPv6 has no tcp6
    return listening
