"""Run an external command (nvidia-smi, py-spy) under a deadline: killed at it, always reaped.

The command gets its own process group so that whatever it forked dies with it. A process in
uninterruptible sleep (D state, e.g. nvidia-smi on a wedged GPU) cannot die until the kernel lets
it; we then hand it to one reaper thread instead of blocking the collector, so it never lingers
as a zombie and never holds the caller past its deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..base.stall import STALL

REAP_GRACE = 0.5  # seconds to wait for a killed command to be reaped before handing it off
MAX_OUTPUT = 4 * 1024 * 1024  # bytes of stdout kept; garbage output must not eat our memory

_unreaped: set[subprocess.Popen[bytes]] = set()
_unreaped_lock = threading.Lock()
_running: set[subprocess.Popen[bytes]] = set()  # killed with their group when the exporter stops


class CommandTimeout(Exception):
    def __init__(self, command: str, timeout: float) -> None:
        super().__init__(f"{command} did not finish within {timeout:g}s and was killed")
        self.command = command


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: bytes


def run_with_deadline(argv: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> Completed:
    """Run argv; raise CommandTimeout (after killing it) when it outlives `timeout`.

    FileNotFoundError / PermissionError propagate: the caller turns them into a metric.
    """
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    with _unreaped_lock:
        _running.add(process)
    outputs: list[tuple[bytes, bytes]] = []

    def communicate(seconds: float) -> bool:
        try:
            outputs.append(process.communicate(timeout=seconds))
        except subprocess.TimeoutExpired:
            return False
        return True

    try:
        # The timeout in the exporter's awake time (base/stall.py): a command is not killed as
        # hung for the time the exporter itself was not scheduled.
        if STALL.wait(communicate, timeout):
            stdout, stderr = outputs[0]
            return Completed(process.returncode, stdout[:MAX_OUTPUT], stderr[:MAX_OUTPUT])
        _kill_group(process)
        try:
            process.communicate(timeout=REAP_GRACE)
        except subprocess.TimeoutExpired:
            _reap_in_background(process)
        raise CommandTimeout(os.path.basename(argv[0]), timeout)
    finally:
        with _unreaped_lock:
            _running.discard(process)


def kill_all() -> int:
    """Kill every command still running, with its process group (the exporter is stopping).

    Returns how many were killed; their callers see them fail as they would at a deadline."""
    with _unreaped_lock:
        running = list(_running)
    for process in running:
        _kill_group(process)
    return len(running)


def unreaped_count() -> int:
    """Killed commands the kernel has not let die yet (stuck in D state)."""
    with _unreaped_lock:
        return len(_unreaped)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have exited just now
        os.killpg(process.pid, signal.SIGKILL)


def _reap_in_background(process: subprocess.Popen[bytes]) -> None:
    with _unreaped_lock:
        _unreaped.add(process)

    def reap() -> None:
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        with _unreaped_lock:
            _unreaped.discard(process)

    threading.Thread(target=reap, name=f"reap-{process.pid}", daemon=True).start()
