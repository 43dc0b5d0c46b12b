"""The exporter's own stalls (base/stall.py), measured on a real process frozen with SIGSTOP (as a
starved machine, a CPU quota or a frozen VM leave it): what it measures, and that deadlines and
in-flight waits leave that time out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

FREEZE = 2.0  # seconds the child is held stopped

# Run in the child: set up, print "ready", wait (the parent freezes it meanwhile), print the results.
PRELUDE = """
import json, threading, time
from autoglm_exporter.base.stall import STALL as clock  # the process's own, as the daemon starts it
clock.start()
"""


def _frozen(code: str) -> dict:
    """Run `code` (after PRELUDE) in a child; freeze it FREEZE s right after it prints "ready";
    return the JSON it prints last."""
    child = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + code],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(FREEZE)
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_a_frozen_process_measures_how_long_it_was_stalled() -> None:
    found = _frozen(
        """
print("ready", flush=True)
time.sleep(3.5)
print(json.dumps({"stalled": clock.stalled()}))
"""
    )
    # The ticker was due at most one tick after the freeze began and woke after it ended.
    assert found["stalled"] >= FREEZE - 0.3


def test_a_watchdog_deadline_moves_on_by_a_stall_of_the_exporter() -> None:
    """Due 1 s after it was set, the process frozen 2 s meanwhile: it fires 1 s of awake time
    later, not at the first instant after the freeze (every collector's deadline fired at once)."""
    found = _frozen(
        """
from autoglm_exporter.base.deadline import Watchdog
fired = threading.Event()
watchdog = Watchdog()
started = time.monotonic()
watchdog.watch(started + 1.0, fired.set)
print("ready", flush=True)
assert fired.wait(60)
print(json.dumps({"after": time.monotonic() - started, "stalled": clock.stalled()}))
"""
    )
    assert found["stalled"] >= FREEZE - 0.3
    assert found["after"] >= 1.0 + found["stalled"] - 0.1


def test_a_probe_in_flight_says_how_much_of_its_wait_the_exporter_was_stalled() -> None:
    found = _frozen(
        """
from autoglm_exporter.collectors.inflight import InFlightRegistry
from autoglm_exporter.config import ProbeTarget
registry = InFlightRegistry()
registry.started(ProbeTarget(name="generate", url="http://127.0.0.1:9/v1/chat/completions"))
print("ready", flush=True)
time.sleep(3.5)
probe = registry.snapshot()["generate"]
print(json.dumps({"waited": probe.waited, "stalled": probe.stalled, "watched": probe.watched}))
"""
    )
    assert found["waited"] >= 3.5
    assert found["stalled"] >= FREEZE - 0.3
    assert found["watched"] == pytest.approx(found["waited"] - found["stalled"])


def test_a_deadline_worker_waits_its_timeout_in_awake_time() -> None:
    """A call that returns after 1.5 s, a 1 s deadline, the process frozen 2 s during the wait:
    the call had only ~0.3 s of its deadline, the wait goes on and the call's result comes back."""
    found = _frozen(
        f"FREEZE = {FREEZE!r}\n"
        """
from autoglm_exporter.base.deadline import DeadlineWorker, DeadlinePassed
worker = DeadlineWorker("slow")
result = {}
def wait():
    started = time.monotonic()
    try:
        result["value"] = worker.run(lambda: (time.sleep(0.6 + FREEZE), "answer")[1], timeout=1.0)
    except DeadlinePassed as exc:
        result["value"] = str(exc)
    result["after"] = time.monotonic() - started
waiter = threading.Thread(target=wait)
waiter.start()
print("ready", flush=True)
waiter.join(60)
print(json.dumps({**result, "stalled": clock.stalled()}))
"""
    )
    assert found["value"] == "answer"


def test_a_command_is_not_killed_for_the_time_the_exporter_was_stalled() -> None:
    """nvidia-smi, py-spy: `sleep` runs 2.6 s (not frozen: its own session) with a 1 s deadline
    while the exporter is frozen 2 s of it; it had 0.6 s of the exporter's awake time: not killed."""
    found = _frozen(
        f"FREEZE = {FREEZE!r}\n"
        """
from autoglm_exporter.linux import subprocesses
result = {}
def run():
    try:
        result["code"] = subprocesses.run_with_deadline(["sleep", str(0.6 + FREEZE)], timeout=1.0).returncode
    except subprocesses.CommandTimeout as exc:
        result["code"] = str(exc)
runner = threading.Thread(target=run)
runner.start()
print("ready", flush=True)
runner.join(60)
print(json.dumps(result))
"""
    )
    assert found["code"] == 0
