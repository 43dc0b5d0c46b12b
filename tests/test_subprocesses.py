"""External commands under a deadline: killed with everything they forked, reaped, no zombies."""

from __future__ import annotations

import os
import sys
import time

import pytest

from autoglm_exporter.linux.subprocesses import CommandTimeout, run_with_deadline, unreaped_count

from .conftest import wait_until


def _zombie_children() -> list[int]:
    zombies = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(name))
    return zombies


def test_output_and_exit_code_come_back() -> None:
    done = run_with_deadline([sys.executable, "-c", "import sys; print('ok'); sys.exit(3)"], timeout=10)
    assert (done.returncode, done.stdout) == (3, b"ok\n")


def test_a_command_that_never_exits_is_killed_at_its_deadline_with_its_children(tmp_path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen(['sleep', '300']); open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "while True: time.sleep(1)\n"
    )
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="did not finish within 0.5s"):
        run_with_deadline([sys.executable, "-c", script], timeout=0.5)
    assert time.monotonic() - started < 2.0
    grandchild = int(pidfile.read_text())
    wait_until(lambda: not os.path.exists(f"/proc/{grandchild}") or _state(grandchild) == "Z", timeout=5)
    assert _zombie_children() == []
    assert unreaped_count() == 0


def test_missing_binary_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError):
        run_with_deadline(["/nonexistent/nvidia-smi"], timeout=1)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
