"""A process squatting on a service's port is named, never taken for the service (issue 18).

Real processes listen on 127.0.0.1: the squatter is a Python listener whose command line the
service's rules do not match; the service's own processes carry a unique tag in theirs.
"""

from __future__ import annotations

import time
import uuid

import psutil

from autoglm_exporter.base.health import CollectorHealth
from autoglm_exporter.collectors.process import ProcessCollector
from autoglm_exporter.config import ProcessMatch, ServiceConfig
from autoglm_exporter.diagnosis import diagnose

from .conftest import free_port, registry_of
from .verdict_facts import probes, target

# One line: the command line quoted in the verdict shows the arguments after it.
LISTENER = (
    "import socket,sys,time;s=socket.create_server(('127.0.0.1',int(sys.argv[1])));"
    "print('listening',flush=True);time.sleep(60)"
)
SLEEPER = "import time; print('up', flush=True); time.sleep(60)"
# The service's own process, which hands its port to a child (as a server's workers hold it).
PARENT_OF_LISTENER = (
    "import subprocess, sys, time\n"
    f"child = subprocess.Popen([sys.executable, '-c', {LISTENER!r}, sys.argv[1]], stdout=sys.stdout)\n"
    "time.sleep(60)\n"
)
SECRET = "sk-proj-" + "Q7x" * 12
HEALTH = {name: CollectorHealth(runs=1, success=True) for name in ("process", "probe")}


def _tag() -> str:
    return f"svc-{uuid.uuid4().hex[:10]}"


def _squatter(child_processes, port: int):
    squatter = child_processes(LISTENER, str(port), "--api-key", SECRET)
    assert squatter.stdout.readline().strip() == b"listening"
    return squatter


def _answered_by_the_squatter(port: int):
    """The service's probe: the squatter answers it with HTTP 501."""
    url = f"http://127.0.0.1:{port}/inference"
    return probes(target(ok=False, reason="http_status", url=url, status=501, connected=True))


def test_a_port_rule_never_adopts_a_squatter_the_cmdline_rule_contradicts(child_processes) -> None:
    """The built-in defaults: a service matched by command line OR port."""
    tag, port = _tag(), free_port()
    squatter = _squatter(child_processes, port)
    collector = ProcessCollector((ServiceConfig("api", ProcessMatch(cmdline=tag, port=port), port=port),))
    result = collector.collect()
    facts = result.facts.services["api"]
    assert not facts.up and facts.pids == []
    [(pid, command)] = facts.port_taken_by
    assert pid == squatter.pid and "import socket" in command and command.endswith("--api-key ***")
    assert SECRET not in command
    value = registry_of(result).get_sample_value
    assert value("autoglm_process_up", {"service": "api"}) == 0
    assert value("autoglm_process_expected_port_taken", {"service": "api", "port": str(port)}) == 1
    assert value("autoglm_process_expected_port_listening", {"service": "api", "port": str(port)}) == 0

    verdict = diagnose(
        {"process": result.facts, "probe": _answered_by_the_squatter(port)}, HEALTH, now=time.time()
    ).verdict
    assert (verdict.layer, verdict.reason) == ("service", "port_taken")
    assert f"port {port} is held by another process: pid {squatter.pid} (" in verdict.summary
    assert any(f"pid {squatter.pid} (" in line and "import socket" in line for line in verdict.evidence)
    assert not any(SECRET in line for line in (verdict.summary, *verdict.evidence))


def test_matched_by_cmdline_only_the_squatter_is_named_not_a_missing_process(child_processes) -> None:
    tag, port = _tag(), free_port()
    squatter = _squatter(child_processes, port)
    collector = ProcessCollector((ServiceConfig("api", ProcessMatch(cmdline=tag), port=port),))
    process = collector.collect().facts
    verdict = diagnose(
        {"process": process, "probe": _answered_by_the_squatter(port)}, HEALTH, now=time.time()
    ).verdict
    assert (verdict.layer, verdict.reason) == ("service", "port_taken")
    assert verdict.summary.startswith(f"no process of it runs and port {port} is held by another process")
    assert f"pid {squatter.pid}" in verdict.summary
    assert "no running process matches the rules of service api" in verdict.evidence

    # The service starts beside it, unable to listen: still the squatter, now with the service's pid.
    service = child_processes(SLEEPER, tag)
    assert service.stdout.readline().strip() == b"up"
    process = collector.collect().facts
    verdict = diagnose(
        {"process": process, "probe": _answered_by_the_squatter(port)}, HEALTH, now=time.time()
    ).verdict
    assert (verdict.layer, verdict.reason) == ("service", "port_taken")
    assert verdict.summary.startswith(f"running (pid {service.pid}) but port {port} is held")
    assert f"pid {squatter.pid}" in verdict.summary


def test_the_services_own_child_holding_the_port_is_the_service(child_processes) -> None:
    tag, port = _tag(), free_port()
    parent = child_processes(PARENT_OF_LISTENER, str(port), tag)
    assert parent.stdout.readline().strip() == b"listening"
    worker = next(p for p in psutil.Process(parent.pid).children() if p.cmdline()[-1] == str(port))
    try:
        service = ServiceConfig("api", ProcessMatch(cmdline=tag, port=port), port=port)
        facts = ProcessCollector((service,)).collect().facts.services["api"]
        # The parent by its command line, its child by the port: no contradiction within one tree.
        assert facts.pids == sorted([parent.pid, worker.pid])
        assert facts.expected_port_listening and facts.port_taken_by == []
    finally:
        worker.kill()
