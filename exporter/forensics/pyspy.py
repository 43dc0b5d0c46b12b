"""Stacks of a live Python process, read with the real `py-spy` binary under a deadline.

`capture()` runs `py-spy dump --json --pid PID` a few times a short interval apart; `profile()`
runs `py-spy record` into a flame graph SVG. Every run goes through run_with_deadline: killed at
its deadline with whatever it forked, always reaped. Never `--locals`: a frame's locals can hold
request bodies, tokens and keys, so they are neither asked for nor kept (Frame has no field for
them).

By default the dumps ask for native frames too (`--native`, x86_64 Linux only): they are what
tells a thread parked in `lock.acquire()` (`with lock:` shows no Python frame for the acquire)
from one in `time.sleep()` or `socket.recv()`. Where py-spy cannot unwind native stacks (another
architecture, a stripped binary, a deadline blown on huge libraries) the dump is taken again
without them and the rest of the capture does without.

Every failure is a CaptureError with a bounded `kind` (CAPTURE_ERROR_KINDS) and a sentence; the
permission failure (no CAP_SYS_PTRACE, Yama ptrace_scope, another user's process) carries the
hint "add SYS_PTRACE".
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..linux.subprocesses import CommandTimeout, Completed, run_with_deadline

PY_SPY = "py-spy"
PTRACE_HINT = "add SYS_PTRACE"

# The bounded reasons a capture or profile fails (a metric's `kind` label).
CAPTURE_ERROR_KINDS = (
    "permission",  # ptrace refused: no CAP_SYS_PTRACE, ptrace_scope, another user's process
    "not_python",  # the process runs no Python interpreter py-spy can read
    "gone",  # no such process (it exited, or never existed)
    "timeout",  # py-spy outlived its deadline and was killed
    "py_spy_missing",  # the py-spy binary is not there or cannot be executed
    "bad_output",  # py-spy answered something that is not its JSON
    "no_samples",  # profile: no thread ran during the recording
    "failed",  # anything else py-spy reported
)

_PERMISSION_MARKERS = (
    "permission denied",
    "operation not permitted",
    "os error 1)",
    "os error 13)",
)
_GONE_MARKERS = ("no such process", "os error 3)")
_NOT_PYTHON_MARKERS = (
    "failed to find python version",
    "failed to find a python interpreter",
    "failed to get python version",
    "doesn't look like a python",
    "not a python",
)
_MAX_MESSAGE = 400


class CaptureError(Exception):
    """py-spy could not read the process; `kind` is one of CAPTURE_ERROR_KINDS."""

    def __init__(self, kind: str, message: str, hint: str = "") -> None:
        if kind not in CAPTURE_ERROR_KINDS:
            raise ValueError(f"unknown capture error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


@dataclass(frozen=True)
class Frame:
    """One frame of a stack, innermost first in ThreadStack.frames. No locals, ever."""

    function: str
    filename: str
    line: int
    short_filename: str = ""  # py-spy's short form (relative to the sys.path entry it came from)
    native: bool = False  # a C/C++ frame from --native, not a Python one

    @property
    def location(self) -> str:
        """`file:line` as people read it (the short file name)."""
        return f"{self.short_filename or os.path.basename(self.filename)}:{self.line}"


@dataclass(frozen=True)
class ThreadStack:
    """One thread in one dump, as py-spy saw it."""

    thread_id: int  # Python's thread identifier (threading.get_ident())
    os_thread_id: int | None  # the kernel's thread id (TID), when py-spy found it
    name: str | None  # threading.Thread.name, when the thread has one
    active: bool  # False: py-spy says "idle" (the OS thread was waiting, not on a CPU)
    owns_gil: bool
    frames: tuple[Frame, ...]

    @property
    def python_frames(self) -> tuple[Frame, ...]:
        return tuple(frame for frame in self.frames if not frame.native)


@dataclass(frozen=True)
class Dump:
    """Every thread's stack at one moment."""

    time: float  # wall clock (epoch seconds) when py-spy started
    pid: int
    threads: tuple[ThreadStack, ...]
    native: bool = False  # whether native frames were asked for and given
    duration: float = 0.0  # seconds py-spy took (the process is paused while it reads)


def parse_dump(output: bytes | str, pid: int, started: float, native: bool, duration: float = 0.0) -> Dump:
    """`py-spy dump --json` output -> Dump. Anything that is not its JSON is CaptureError bad_output.

    py-spy gives a list of threads, each with thread_id, thread_name, os_thread_id, active,
    owns_gil and frames (name, filename, short_filename, line, module; module is the shared
    library for native frames and null for Python ones). Locals are dropped if present.
    """
    try:
        raw = json.loads(output)
        if not isinstance(raw, list):
            raise TypeError("not a list of threads")
        threads = tuple(_thread_from_py_spy(item) for item in raw)
    except (ValueError, TypeError, KeyError) as exc:
        text = output.decode(errors="replace") if isinstance(output, bytes) else output
        raise CaptureError(
            "bad_output", f"py-spy's dump of process {pid} is not the JSON expected ({exc}): {text[:200]!r}"
        ) from None
    return Dump(time=started, pid=pid, threads=threads, native=native, duration=duration)


def _thread_from_py_spy(item: dict[str, Any]) -> ThreadStack:
    frames = []
    for frame in item["frames"]:
        frames.append(
            Frame(
                function=str(frame["name"]),
                filename=str(frame["filename"]),
                line=int(frame.get("line") or 0),
                short_filename=str(frame.get("short_filename") or ""),
                native=frame.get("module") is not None,
            )
        )
    os_tid = item.get("os_thread_id")
    name = item.get("thread_name")
    return ThreadStack(
        thread_id=int(item["thread_id"]),
        os_thread_id=None if os_tid is None else int(os_tid),
        name=None if name is None else str(name),
        active=bool(item.get("active", True)),
        owns_gil=bool(item.get("owns_gil", False)),
        frames=tuple(frames),
    )


def resolve_py_spy(py_spy: str = PY_SPY) -> str:
    """A path for py-spy: as given when it has a slash, else from PATH, else next to our Python.

    The exporter started as /opt/venv/bin/autoglm-exporter finds the py-spy installed with it even
    when the venv is not on PATH.
    """
    if os.sep in py_spy:
        return py_spy
    found = shutil.which(py_spy)
    if found:
        return found
    beside = Path(sys.executable).parent / py_spy
    return str(beside) if beside.exists() else py_spy


def capture(
    pid: int,
    count: int = 3,
    interval: float = 0.5,
    timeout: float = 10.0,
    py_spy: str = PY_SPY,
    native: bool = True,
) -> list[Dump]:
    """`count` dumps of every thread of `pid`, started `interval` seconds apart.

    `timeout` is the deadline of each py-spy run. A dump that fails in a way that may pass is tried
    once more; when py-spy cannot give native frames (unsupported, or not within the deadline)
    the capture goes on without them. So the whole capture is bounded by about
    (count + 1) * timeout + (count - 1) * interval. Raises CaptureError when a dump still fails
    (stacks that cannot be compared are no evidence).
    """
    if pid <= 0:
        raise ValueError(f"pid must be positive, not {pid}")
    if count < 1 or interval < 0 or timeout <= 0:
        raise ValueError("count must be >= 1, interval >= 0 and timeout > 0")
    binary = resolve_py_spy(py_spy)
    dumps: list[Dump] = []
    next_start = time.monotonic()
    for _ in range(count):
        pause = next_start - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        next_start = time.monotonic() + interval
        try:
            dumps.append(dump(pid, timeout=timeout, py_spy=binary, native=native))
            continue
        except CaptureError as exc:
            if exc.kind not in ("failed", "bad_output", "timeout"):
                raise
            if native and (exc.kind == "timeout" or "native" in exc.message.lower()):
                native = False  # py-spy cannot unwind native stacks here (in time): do without
            elif exc.kind == "timeout":
                raise
        # Once more: py-spy can trip over a thread that starts or exits while it reads.
        dumps.append(dump(pid, timeout=timeout, py_spy=binary, native=native))
    return dumps


def dump(pid: int, timeout: float = 10.0, py_spy: str = PY_SPY, native: bool = False) -> Dump:
    """One `py-spy dump --json` of every thread of `pid` (never --locals)."""
    argv = [resolve_py_spy(py_spy), "dump", "--json", "--pid", str(pid)]
    if _stopped(pid):
        # py-spy cannot suspend a process that is already stopped (SIGSTOP); it does not move
        # while stopped, so read it as it is (without native frames, which need it suspended).
        argv.append("--nonblocking")
        native = False
    elif native:
        argv.append("--native")
    started, begun = time.time(), time.monotonic()
    done = _run(argv, pid, timeout)
    duration = time.monotonic() - begun
    if done.returncode != 0:
        raise classify_failure(pid, done.returncode, done.stderr or done.stdout)
    return parse_dump(done.stdout, pid, started, native, duration)


def profile(
    pid: int,
    duration: float,
    output_svg: str | os.PathLike[str],
    py_spy: str = PY_SPY,
    rate: int = 100,
    idle: bool = False,
    native: bool = False,
    nonblocking: bool = True,
    margin: float = 15.0,
) -> Path:
    """Record `pid` for `duration` seconds into a flame graph SVG; returns its path.

    `py-spy record --format flamegraph -d SECONDS -o FILE --pid PID`, under a deadline of
    duration + margin. `nonblocking` (the default) samples without pausing the process, which is
    what a production service wants; `idle` includes threads that wait (without it, a service
    where nothing runs gives CaptureError no_samples). The SVG appears at `output_svg` only
    once complete.
    """
    if pid <= 0:
        raise ValueError(f"pid must be positive, not {pid}")
    if duration <= 0 or rate <= 0:
        raise ValueError("duration and rate must be positive")
    seconds = max(1, math.ceil(duration))
    target = Path(output_svg)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=".profile-", suffix=".svg", dir=target.parent)
    os.close(handle)
    try:
        argv = [resolve_py_spy(py_spy), "record", "--format", "flamegraph", "-d", str(seconds)]
        argv += ["-r", str(rate), "-o", partial, "--pid", str(pid)]
        argv += [
            flag
            for flag, on in (("--idle", idle), ("--native", native), ("--nonblocking", nonblocking))
            if on
        ]
        done = _run(argv, pid, seconds + margin)
        output = (done.stderr + b"\n" + done.stdout).decode(errors="replace")
        if done.returncode != 0:
            if "no stack counts found" in output.lower():
                raise CaptureError(
                    "no_samples",
                    f"no thread of process {pid} ran during the {seconds}s recording: it is idle or "
                    "blocked (capture its stacks to see where it waits, or record with idle threads)",
                )
            raise classify_failure(pid, done.returncode, done.stderr or done.stdout)
        with open(partial, "rb") as svg:
            head = svg.read(4096)
        if b"<svg" not in head:
            raise CaptureError(
                "bad_output", f"py-spy record wrote no SVG for process {pid}: {output[-200:]!r}"
            )
        os.replace(partial, target)
        os.chmod(target, 0o644)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return target


def _run(argv: Sequence[str], pid: int, timeout: float) -> Completed:
    env = {**os.environ, "RUST_BACKTRACE": "0"}  # one error sentence, not a Rust backtrace
    try:
        return run_with_deadline(argv, timeout=timeout, env=env)
    except CommandTimeout:
        raise CaptureError(
            "timeout", f"py-spy did not finish reading process {pid} within {timeout:g}s and was killed"
        ) from None
    except FileNotFoundError:
        raise CaptureError(
            "py_spy_missing", f"py-spy not found ({argv[0]}): install the py-spy package or set its path"
        ) from None
    except PermissionError:
        raise CaptureError(
            "py_spy_missing", f"py-spy cannot be executed ({argv[0]}): check its mode"
        ) from None


def classify_failure(pid: int, returncode: int, stderr: bytes | str) -> CaptureError:
    """What py-spy's failure means, from its error text and whether the process still exists."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    message = _error_sentence(text) or f"py-spy exited with status {returncode}"
    lowered = text.lower()
    if any(marker in lowered for marker in _PERMISSION_MARKERS):
        return CaptureError(
            "permission",
            f"not permitted to read process {pid}: py-spy needs ptrace on it (root with "
            f"CAP_SYS_PTRACE in the service's PID namespace; {_ptrace_scope_note()}); py-spy said: {message}",
            hint=PTRACE_HINT,
        )
    state = _state(pid)
    if state in (None, "Z", "X") or any(marker in lowered for marker in _GONE_MARKERS):
        return CaptureError("gone", f"process {pid} does not exist (it exited?); py-spy said: {message}")
    if any(marker in lowered for marker in _NOT_PYTHON_MARKERS):
        return CaptureError(
            "not_python", f"process {pid} is not a Python process py-spy can read; py-spy said: {message}"
        )
    if _stopped(pid) or ("suspend" in lowered and "sigstop" in lowered):
        return CaptureError(
            "failed", f"process {pid} is stopped (SIGSTOP, or a debugger holds it); py-spy said: {message}"
        )
    return CaptureError("failed", f"py-spy failed on process {pid}: {message}")


def _error_sentence(text: str) -> str:
    """py-spy's error and its causes on one line, without a backtrace."""
    parts = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.lower().startswith("stack backtrace"):
            break
        if not line or line == "Caused by:":
            continue
        parts.append(re.sub(r"^\d+: ", "", line))  # "0: cause", "1: cause" -> "cause"
    sentence = "; ".join(dict.fromkeys(parts))  # the causes often repeat
    return sentence[:_MAX_MESSAGE]


def _ptrace_scope_note() -> str:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as handle:
            scope = handle.read().strip()
    except OSError:
        return "docker: --cap-add SYS_PTRACE, Kubernetes: capabilities add SYS_PTRACE"
    meaning = {
        "0": "classic",
        "1": "restricted: only a parent or CAP_SYS_PTRACE",
        "2": "admin-only: CAP_SYS_PTRACE required",
        "3": "no attach at all, not even root, until reboot",
    }.get(scope, "unknown")
    return (
        "docker: --cap-add SYS_PTRACE, Kubernetes: capabilities add SYS_PTRACE; "
        f"kernel.yama.ptrace_scope={scope} ({meaning})"
    )


def _stopped(pid: int) -> bool:
    """Whether any thread of pid is stopped (T) or held by a tracer (t).

    Checked over all threads: right after py-spy gives up on a stopped process, the kernel briefly
    shows the main thread running on its way back into the stop."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                    return True
        except (OSError, IndexError):
            continue
    return False


def _state(pid: int) -> str | None:
    """The process's state letter from /proc (Z: zombie, T: stopped), None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"
