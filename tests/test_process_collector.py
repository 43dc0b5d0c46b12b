"""The process collector against real processes on this machine."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import psutil

from autoglm_exporter.collectors.process import ProcessCollector
from autoglm_exporter.config import ProcessMatch, ServiceConfig

from .conftest import free_port, wait_until

# Worker threads switch thousands of times while the main thread sleeps in one long wait:
# a count that reads only the main thread (psutil's) misses nearly all of it.
BUSY_WORKERS = """
import sys, threading, time
finished = threading.Barrier(5)
def work():
    for _ in range(3000):
        time.sleep(0.0002)
    finished.wait()
    time.sleep(60)  # stay alive: an exited thread's counts leave /proc with it
for _ in range(4):
    threading.Thread(target=work, daemon=True).start()
finished.wait()
print("done", flush=True)
time.sleep(60)
"""

LISTENER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("listening", flush=True)
time.sleep(60)
"""

SLEEPER = "import time; print('up', flush=True); time.sleep(60)"

PARENT_WITH_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def _tag() -> str:
    return f"svc-{uuid.uuid4().hex[:10]}"


def _service_facts(services: tuple[ServiceConfig, ...], collector: ProcessCollector | None = None):
    collector = collector or ProcessCollector(services)
    return collector.collect().facts.services


def test_context_switches_cover_all_threads_not_just_the_main_one(child_processes) -> None:
    tag = _tag()
    child = child_processes(BUSY_WORKERS, tag)
    assert child.stdout.readline().strip() == b"done"
    facts = _service_facts((ServiceConfig("busy", ProcessMatch(cmdline=tag)),))["busy"]
    main_thread_only = psutil.Process(child.pid).num_ctx_switches()
    ours = facts.voluntary_ctxt_switches + facts.involuntary_ctxt_switches
    assert ours >= 4 * 3000  # every worker sleep is a voluntary switch
    assert ours > 10 * (main_thread_only.voluntary + main_thread_only.involuntary)


def test_a_service_with_no_process_is_down_with_zeroes() -> None:
    collector = ProcessCollector((ServiceConfig("ghost", ProcessMatch(cmdline=_tag()), port=1),))
    result = collector.collect()
    values = {(s.name, tuple(s.labels.values())): s.value for f in result.families for s in f.samples}
    assert values[("autoglm_process_up", ("ghost",))] == 0
    assert values[("autoglm_process_processes", ("ghost",))] == 0
    assert values[("autoglm_process_thread_states", ("ghost", "running"))] == 0
    assert values[("autoglm_process_expected_port_listening", ("ghost", "1"))] == 0


def test_match_by_port_finds_the_listener_and_its_port(child_processes) -> None:
    port = free_port()
    child = child_processes(LISTENER, str(port))
    assert child.stdout.readline().strip() == b"listening"
    services = (
        ServiceConfig("api", ProcessMatch(port=port), port=port),
        ServiceConfig("wrong-port", ProcessMatch(pidfile="/nonexistent"), port=port),
    )
    facts = _service_facts(services)
    assert facts["api"].pids == [child.pid]
    assert facts["api"].listening_ports == [port]
    assert facts["api"].expected_port_listening


def test_expected_port_not_listened_while_process_runs(child_processes) -> None:
    tag, port = _tag(), free_port()
    child = child_processes(SLEEPER, tag)
    assert child.stdout.readline().strip() == b"up"
    facts = _service_facts((ServiceConfig("api", ProcessMatch(cmdline=tag), port=port),))["api"]
    assert facts.up and facts.pids == [child.pid]
    assert not facts.expected_port_listening


def test_match_by_pidfile_and_by_exe(child_processes, tmp_path: Path) -> None:
    tag = _tag()
    child = child_processes(SLEEPER, tag)
    assert child.stdout.readline().strip() == b"up"
    pidfile = tmp_path / "svc.pid"
    pidfile.write_text(f"{child.pid}\n")
    sleep = subprocess.Popen([shutil.which("sleep") or "/bin/sleep", "60"])
    try:
        exe = os.readlink(f"/proc/{sleep.pid}/exe")
        facts = _service_facts(
            (
                ServiceConfig("by-pidfile", ProcessMatch(pidfile=str(pidfile))),
                ServiceConfig("by-exe", ProcessMatch(exe=exe)),
            )
        )
        assert facts["by-pidfile"].pids == [child.pid]
        assert sleep.pid in facts["by-exe"].pids
    finally:
        sleep.kill()
        sleep.wait(5)


def test_children_are_included_only_when_asked(child_processes) -> None:
    tag = _tag()
    parent = child_processes(PARENT_WITH_CHILD, tag)
    grandchild = int(parent.stdout.readline())
    try:
        alone = _service_facts((ServiceConfig("api", ProcessMatch(cmdline=tag)),))["api"]
        family = _service_facts((ServiceConfig("api", ProcessMatch(cmdline=tag), include_children=True),))[
            "api"
        ]
        assert alone.pids == [parent.pid]
        assert family.pids == sorted([parent.pid, grandchild])
    finally:
        os.kill(grandchild, signal.SIGKILL)


def test_restart_is_counted_when_the_process_is_replaced(child_processes) -> None:
    tag = _tag()
    services = (ServiceConfig("api", ProcessMatch(cmdline=tag)),)
    collector = ProcessCollector(services)
    first = child_processes(SLEEPER, tag)
    assert first.stdout.readline().strip() == b"up"
    assert _service_facts(services, collector)["api"].restarts == 0
    first.kill()
    first.wait(5)
    down = _service_facts(services, collector)["api"]
    assert not down.up and down.restarts == 0
    second = child_processes(SLEEPER, tag)
    assert second.stdout.readline().strip() == b"up"
    back = _service_facts(services, collector)["api"]
    assert back.up and back.pids == [second.pid]
    assert back.restarts == 1


def test_processes_exiting_during_collection_never_fail_it(child_processes) -> None:
    """Short-lived matching processes come and go while we read /proc: no error, ever."""
    tag = _tag()
    spawner = child_processes(
        "import subprocess, sys, time\n"
        "for _ in range(400):\n"
        f"    subprocess.Popen(['sh', '-c', 'sleep 0.02', '{tag}'])\n"
        "    time.sleep(0.005)\n",
        tag,
    )
    collector = ProcessCollector((ServiceConfig("flappy", ProcessMatch(cmdline=tag), include_children=True),))
    runs = 0
    while spawner.poll() is None and runs < 300:
        collector.collect()  # must not raise
        runs += 1
    assert runs > 5
    wait_until(lambda: spawner.poll() is not None, timeout=30)


def test_another_process_holding_the_expected_port_is_named(child_processes) -> None:
    tag, port = _tag(), free_port()
    service = child_processes(SLEEPER, tag)
    assert service.stdout.readline().strip() == b"up"
    squatter = child_processes(LISTENER, str(port))
    assert squatter.stdout.readline().strip() == b"listening"
    collector = ProcessCollector((ServiceConfig("api", ProcessMatch(cmdline=tag), port=port),))
    result = collector.collect()
    facts = result.facts.services["api"]
    assert facts.pids == [service.pid] and not facts.expected_port_listening
    assert [pid for pid, _ in facts.port_taken_by] == [squatter.pid]
    values = {(s.name, tuple(s.labels.values())): s.value for f in result.families for s in f.samples}
    assert values[("autoglm_process_expected_port_taken", ("api", str(port)))] == 1
