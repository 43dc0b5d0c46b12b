"""Hang forensics through the exporter: a real deadlocked service, real py-spy, the verdict naming lines.

The service (tests/stuck_services.py) deadlocks two worker threads on two locks after SIGUSR1; its
API is played by a server that accepts and never answers. The exporter must notice the failing
probes, capture the stacks before anyone restarts the service, and say which lines are stuck.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from autoglm_exporter.collectors.inflight import InFlightCollector, InFlightRegistry
from autoglm_exporter.collectors.probe import ProbeCollector
from autoglm_exporter.collectors.process import ProcessCollector
from autoglm_exporter.config import ForensicsConfig, ProbeTarget, ProcessMatch, ServiceConfig
from autoglm_exporter.core.hangwatch import RETRY_COOLDOWN, HangWatch
from autoglm_exporter.diagnosis import diagnose
from autoglm_exporter.facts.forensics import ForensicsFacts, ServiceEvidence

from . import faultservers as fs
from .conftest import REPO, free_port, sample, wait_until

SERVICES = REPO / "tests" / "stuck_services.py"


def stuck_line(marker: str) -> str:
    for number, line in enumerate(SERVICES.read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# stuck: {marker}"):
            return f"stuck_services.py:{number}"
    raise AssertionError(f"no marker {marker}")


class StuckService(subprocess.Popen[bytes]):
    port: int | None = None  # where the servers among the modes listen


@pytest.fixture
def stuck_service():
    started: list[StuckService] = []

    def start(mode: str, python: str = sys.executable) -> StuckService:
        process = StuckService([python, str(SERVICES), mode], stdout=subprocess.PIPE)
        started.append(process)
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith(b"ready pid="), ready
        if b" port=" in ready:
            process.port = int(ready.rsplit(b"port=", 1)[1])
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(5)


def _config(
    tmp_path: Path, mode: str, api_url: str, trigger: int = 2, timeout: str = "0.5s", hang_after: str = "5s"
) -> Path:
    config = tmp_path / "autoglm.yml"
    config.write_text(
        f"""
global: {{interval: 0.5s, timeout: 3s, jitter: 0}}
# The machine's own load (a busy CI runner) must not become the verdict these tests expect.
collectors: {{system: {{enabled: false}}}}
services:
  - name: api
    match: {{cmdline: 'stuck_services\\.py {mode}'}}
targets:
  - {{name: inference, module: inference, url: '{api_url}/inference', service: api, timeout: {timeout}}}
redis: []
engines: []
logs: []
forensics:
  trigger_after_failures: {trigger}
  hang_after: {hang_after}
  dumps: 3
  dump_interval: 0.3s
  directory: {tmp_path / "captures"}
"""
    )
    return config


def _deadlock(stuck_service) -> subprocess.Popen[bytes]:
    service = stuck_service("deadlock")
    service.send_signal(signal.SIGUSR1)
    assert service.stdout is not None
    assert service.stdout.readline().strip() == b"triggered"
    assert service.stdout.readline().strip() == b"stuck"
    return service


def test_failing_probes_trigger_a_capture_and_the_verdict_names_the_deadlocked_lines(
    stuck_service, start_exporter, tmp_path: Path
) -> None:
    service = _deadlock(stuck_service)
    with fs.FaultServer(fs.never_answer) as api:  # the hung API: accepts, never answers
        exporter = start_exporter(f"--config.file={_config(tmp_path, 'deadlock', api.url)}")

        def blocked() -> dict | None:
            diagnosis = exporter.get("/api/diagnosis").json()
            verdict = diagnosis["verdict"]
            return diagnosis if verdict and verdict["reason"] == "threads_blocked" else None

        verdict = wait_until(blocked, timeout=30, interval=0.3)["verdict"]
        metrics = exporter.metrics()
        captures = exporter.get("/api/captures").json()["captures"]
        saved = exporter.get(f"/api/captures/{captures[0]['name']}").json()
        page = exporter.get("/").text

        # The API answers again (the operator restarted it): the stacks are history, the page resolves.
        api.handler = fs.answer(200, '{"text": "ok"}')
        wait_until(
            lambda: sample(exporter.metrics(), "autoglm_forensics_deadlock_suspected", service="api") == 0,
            timeout=10,
        )
        # The verdict clears once "healthy" held for its confirming readings.
        wait_until(lambda: exporter.get("/api/diagnosis").json()["verdict"] is None, timeout=30)
    assert f"href='/api/captures/{captures[0]['name']}'" in page  # the status page links the newest
    assert verdict["layer"] == "stall"
    assert "possible deadlock" in verdict["summary"]
    text = " ".join(verdict["evidence"])
    assert stuck_line("worker-a") in text and stuck_line("worker-b") in text
    assert any(line.startswith("symptom: probe inference") for line in verdict["evidence"])
    assert verdict["next_command"] == f"py-spy dump --pid {service.pid}"
    assert [c["reason"] for c in captures] == ["probe_failing"]
    assert saved["deadlock_suspected"] is True and len(saved["dumps"]) == 3
    assert "locals" not in json.dumps(saved)  # never asked for, never kept
    assert sample(metrics, "autoglm_forensics_captures_total", service="api", reason="probe_failing") == 1
    assert sample(metrics, "autoglm_forensics_deadlock_suspected", service="api") == 1
    assert sample(metrics, "autoglm_forensics_threads", service="api", state="blocked") >= 2
    assert (
        sample(metrics, "autoglm_diagnosis_verdict", service="api", layer="stall", reason="threads_blocked")
        == 1
    )


def test_a_deadlocked_api_is_named_whichever_python_runs_it(
    stuck_service, start_exporter, tmp_path: Path, interpreter: str
) -> None:
    # The service answers its own API; once its workers deadlock, each request waits on their lock.
    # Debian's stripped python3.11 names no lock function but PyThread_acquire_lock_timed.
    service = stuck_service("deadlocked_server", interpreter)
    url = f"http://127.0.0.1:{service.port}"
    assert httpx.post(url + "/inference", json={}, timeout=5).status_code == 200
    service.send_signal(signal.SIGUSR1)
    assert service.stdout is not None
    assert service.stdout.readline().strip() == b"triggered"
    assert service.stdout.readline().strip() == b"stuck"
    exporter = start_exporter(f"--config.file={_config(tmp_path, 'deadlocked_server', url)}")

    def blocked() -> dict | None:
        verdict = exporter.get("/api/diagnosis").json()["verdict"]
        return verdict if verdict and verdict["reason"] == "threads_blocked" else None

    verdict = wait_until(blocked, timeout=60, interval=0.3)
    metrics = exporter.metrics()
    assert verdict["layer"] == "stall" and verdict["summary"].endswith("(possible deadlock)")
    # The two threads of the cycle lead both the summary and the evidence, whatever piled up behind.
    assert verdict["summary"].startswith("threads worker-a, worker-b")
    for marker in ("worker-a", "worker-b", "handler"):
        assert stuck_line(marker) in verdict["summary"]
    assert (
        stuck_line("worker-a") in verdict["evidence"][0] and stuck_line("worker-b") in verdict["evidence"][1]
    )
    assert verdict["next_command"] == f"py-spy dump --pid {service.pid}"
    assert sample(metrics, "autoglm_forensics_deadlock_suspected", service="api") == 1
    assert sample(metrics, "autoglm_forensics_threads", service="api", state="blocked") >= 3


def test_capture_on_request_and_its_limits(stuck_service, start_exporter, tmp_path: Path) -> None:
    stuck_service("healthy")
    with fs.FaultServer(fs.answer(200, '{"text": "ok"}')) as api:
        exporter = start_exporter(f"--config.file={_config(tmp_path, 'healthy', api.url)}")
        wait_until(lambda: sample(exporter.metrics(), "autoglm_process_up", service="api") == 1)
        unknown = httpx.post(exporter.url + "/api/capture?service=nope", timeout=5)
        assert unknown.status_code == 404
        accepted = httpx.post(exporter.url + "/api/capture?service=api", timeout=5)
        assert accepted.status_code == 202, accepted.text
        captures = wait_until(lambda: exporter.get("/api/captures").json()["captures"], timeout=30)
        assert captures[0]["reason"] == "api" and captures[0]["deadlock_suspected"] is False
        assert exporter.get("/api/captures/../../etc/passwd").status_code == 404
        assert exporter.get("/api/diagnosis").json()["healthy"] is True  # a healthy capture breaks nothing


def test_capture_command_prints_where_threads_are_stuck(stuck_service, tmp_path: Path) -> None:
    _deadlock(stuck_service)
    config = _config(tmp_path, "deadlock", "http://127.0.0.1:9")
    run = subprocess.run(
        [sys.executable, "-m", "autoglm_exporter", "capture", "--service", "api", f"--config.file={config}"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "possible deadlock" in run.stdout
    assert stuck_line("worker-a") in run.stdout and stuck_line("worker-b") in run.stdout
    assert "saved: " + str(tmp_path / "captures") in run.stdout


def test_capture_command_for_a_service_that_does_not_run(tmp_path: Path) -> None:
    config = _config(tmp_path, "nothing-like-this", "http://127.0.0.1:9")
    run = subprocess.run(
        [sys.executable, "-m", "autoglm_exporter", "capture", "--service", "api", f"--config.file={config}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "service api has no running process" in run.stderr


def test_a_capture_refused_for_permission_tells_to_add_sys_ptrace() -> None:
    evidence = ServiceEvidence(
        "api", 1000.0, error_kind="permission", error="ptrace refused (add SYS_PTRACE)"
    )
    diagnosis = diagnose({"forensics": ForensicsFacts({"api": evidence})}, {}, now=1010.0)
    assert diagnosis.verdict is not None
    assert (diagnosis.verdict.layer, diagnosis.verdict.reason) == ("exporter", "capture_not_permitted")
    assert "add SYS_PTRACE" in diagnosis.verdict.summary


# --- what triggers a capture -----------------------------------------------------------------------


def test_a_probe_still_waiting_triggers_the_capture_before_it_times_out(
    stuck_service, start_exporter, tmp_path: Path
) -> None:
    service = _deadlock(stuck_service)
    with fs.FaultServer(fs.answer(200, '{"text": "ok"}')) as api:
        # A 60 s probe timeout and a trigger count never reached: only the probe in flight can do it.
        config = _config(tmp_path, "deadlock", api.url, trigger=100, timeout="60s", hang_after="1s")
        exporter = start_exporter(f"--config.file={config}")
        api.handler = fs.never_answer  # from now on the API accepts and keeps silent

        def blocked() -> dict | None:
            verdict = exporter.get("/api/diagnosis").json()["verdict"]
            return verdict if verdict and verdict["reason"] == "threads_blocked" else None

        verdict = wait_until(blocked, timeout=60, interval=0.3)
        metrics = exporter.metrics()
        captures = exporter.get("/api/captures").json()["captures"]
    assert [c["reason"] for c in captures] == ["probe_failing"]
    assert verdict["next_command"] == f"py-spy dump --pid {service.pid}"
    # The probe that showed the hang has not failed yet: it was still waiting.
    assert sample(metrics, "autoglm_probe_failures_total", target="inference", reason="read_timeout") == 0
    assert sample(metrics, "autoglm_probe_in_flight_seconds", target="inference") >= 1.0
    assert sample(metrics, "autoglm_probe_success", target="inference") == 1  # the last finished one


def test_a_probe_that_times_out_after_hang_after_triggers_the_capture_at_once(
    stuck_service, start_exporter, tmp_path: Path
) -> None:
    # The probe's timeout is hang_after: it ends before the in-flight reading (once a second) sees
    # it wait that long, and a trigger count of 100 is never reached; its timeout is the hang.
    service = stuck_service("spinner")
    service.send_signal(signal.SIGUSR1)
    assert service.stdout is not None
    assert service.stdout.readline().strip() == b"triggered"
    with fs.FaultServer(fs.never_answer) as api:
        config = _config(tmp_path, "spinner", api.url, trigger=100, timeout="2s", hang_after="2s")
        exporter = start_exporter(f"--config.file={config}")

        def spinning() -> dict | None:
            verdict = exporter.get("/api/diagnosis").json()["verdict"]
            return verdict if verdict and verdict["reason"] == "cpu_bound_loop" else None

        verdict = wait_until(spinning, timeout=60, interval=0.3)
        captures = exporter.get("/api/captures").json()["captures"]
    evidence = " ".join(verdict["evidence"])
    loop = int(stuck_line("spinner").rsplit(":", 1)[1])
    assert verdict["layer"] == "stall"
    assert any(f"stuck_services.py:{line}" in evidence for line in (loop - 1, loop))  # the loop's lines
    assert [c["reason"] for c in captures] == ["probe_failing"]
    # Caught from one probe: its timeout, or (when the in-flight reading fell on its last instant)
    # its wait; never a count of timeouts in a row.
    why = re.findall(r'msg="service hangs: capturing its stacks" .* why="([^"]*)"', exporter.log())
    assert why and re.fullmatch(r"probe inference (timed out after|unanswered for) 2\.\ds", why[0]), why


class Cycle:
    """The collectors the trigger reads, run in this process against real processes and servers."""

    def __init__(self, tmp_path: Path, target: ProbeTarget, port: int | None = None) -> None:
        self.pidfile = tmp_path / "api.pid"
        service = ServiceConfig("api", ProcessMatch(pidfile=str(self.pidfile)), port=port)
        self.process = ProcessCollector((service,))
        registry = InFlightRegistry()
        self.probe = ProbeCollector((target,), registry)
        self.in_flight = InFlightCollector((target,), registry)

    def service_is(self, process: subprocess.Popen[bytes]) -> None:
        self.pidfile.write_text(f"{process.pid}\n")

    def facts(self) -> dict:
        """One cycle's facts, the probe's after it finished (nothing left in flight)."""
        return {
            "process": self.process.collect().facts,
            "probe": self.probe.collect().facts,
            "inflight": self.in_flight.collect().facts,
        }


def _watch(tmp_path: Path, clock=time.monotonic, **settings) -> HangWatch:
    settings = {"dumps": 2, "dump_interval": 0.2, "directory": str(tmp_path / "captures"), **settings}
    return HangWatch(ForensicsConfig(**settings), clock=clock)


def _finished(watch: HangWatch, after: float = 0.0) -> ServiceEvidence:
    """The evidence of the service's next capture that finished after `after` (time.time())."""

    def done() -> ServiceEvidence | None:
        evidence = watch.facts().services.get("api")
        return evidence if evidence is not None and evidence.at > after else None

    return wait_until(done, timeout=60, interval=0.1)


def _inference(url: str, timeout: float = 2.0) -> ProbeTarget:
    return ProbeTarget("inference", "inference", url + "/inference", service="api", timeout=timeout)


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (None, "connect_refused"),  # nothing listens there: a wrong port, or the process is gone
        (fs.answer(500, '{"error": "boom"}'), "http_status"),
        (fs.answer(200, "<html>not json</html>"), "bad_body"),
        (fs.reset_mid_body, "reset"),
    ],
    ids=["refused", "http-500", "bad-body", "reset"],
)
def test_failures_stacks_cannot_explain_never_trigger_a_capture(
    stuck_service, tmp_path: Path, handler, reason: str
) -> None:
    watch = _watch(tmp_path, trigger_after_failures=1, hang_after=0.001)
    with fs.FaultServer(handler) if handler else contextlib.nullcontext() as server:
        url = server.url if server else f"http://127.0.0.1:{free_port()}"
        cycle = Cycle(tmp_path, _inference(url))
        cycle.service_is(stuck_service("healthy"))
        for _ in range(3):
            facts = cycle.facts()
            assert facts["probe"].targets["inference"].outcome.reason == reason
            assert watch.observe(facts) == []
    assert watch.store.list() == []


def test_a_hang_on_a_port_another_process_holds_is_not_the_service_s_to_explain(
    stuck_service, tmp_path: Path
) -> None:
    watch = _watch(tmp_path, trigger_after_failures=1, hang_after=0.001)
    with fs.FaultServer(fs.never_answer) as intruder:  # holds the service's port and keeps silent
        cycle = Cycle(tmp_path, _inference(intruder.url, timeout=0.3), port=intruder.port)
        cycle.service_is(stuck_service("healthy"))
        facts = cycle.facts()
    assert facts["probe"].targets["inference"].outcome.reason == "read_timeout"
    assert not facts["process"].services["api"].expected_port_listening
    assert watch.observe(facts) == []


def test_timeouts_count_for_the_current_process_only(stuck_service, tmp_path: Path) -> None:
    watch = _watch(tmp_path, trigger_after_failures=2, hang_after=60.0)
    with fs.FaultServer(fs.never_answer) as api:
        cycle = Cycle(tmp_path, _inference(api.url, timeout=0.3))
        old = stuck_service("healthy")
        cycle.service_is(old)
        assert watch.observe(cycle.facts()) == []  # one timeout of the old process
        old.kill()
        new = stuck_service("healthy")
        cycle.service_is(new)  # restarted: a fresh, healthy process
        assert watch.observe(cycle.facts()) == []  # its first timeout; the old one's does not count
        assert watch.observe(cycle.facts()) == ["api"]  # its second in a row
    assert _finished(watch).pid == new.pid


def test_a_timeout_after_hang_after_is_a_hang_at_once_a_shorter_one_counts_in_a_row(
    stuck_service, tmp_path: Path
) -> None:
    watch = _watch(tmp_path, trigger_after_failures=5, hang_after=0.5)
    with fs.FaultServer(fs.never_answer) as api:
        short = Cycle(tmp_path, _inference(api.url, timeout=0.3))
        short.service_is(stuck_service("healthy"))
        for _ in range(2):
            assert watch.observe(short.facts()) == []  # 0.3 s is no hang yet: two in a row are not five
        facts = Cycle(tmp_path, _inference(api.url, timeout=0.5)).facts()  # waited hang_after
        assert facts["inflight"].targets == {}  # over before any in-flight reading could see it
        assert watch.observe(facts) == ["api"]
        assert watch.observe(facts) == []  # one capture at a time, then the cooldown


def test_an_empty_capture_is_retried_soon_one_that_found_the_cause_waits_the_cooldown(
    stuck_service, tmp_path: Path
) -> None:
    now = [1000.0]
    watch = _watch(tmp_path, clock=lambda: now[0], trigger_after_failures=1, cooldown=600.0)
    with fs.FaultServer(fs.never_answer) as api:
        cycle = Cycle(tmp_path, _inference(api.url, timeout=0.3))
        cycle.service_is(stuck_service("healthy"))  # its threads only wait for work: nothing to see
        assert watch.observe(cycle.facts()) == ["api"]
        empty = _finished(watch)
        assert empty.analysis is not None
        assert empty.analysis.counts()["blocked"] == empty.analysis.counts()["busy"] == 0
        now[0] += RETRY_COOLDOWN - 1
        assert watch.observe(cycle.facts()) == []
        now[0] += 2
        assert watch.observe(cycle.facts()) == ["api"]  # retried long before the 600 s cooldown
        retried = _finished(watch, after=empty.at)

    with fs.FaultServer(fs.never_answer) as api:
        cycle = Cycle(tmp_path, _inference(api.url, timeout=0.3))
        cycle.service_is(_deadlock(stuck_service))  # a new process: captured at once
        assert watch.observe(cycle.facts()) == ["api"]
        found = _finished(watch, after=retried.at)
        assert found.analysis is not None and found.analysis.deadlock_suspected
        now[0] += RETRY_COOLDOWN + 1
        assert watch.observe(cycle.facts()) == []  # the cause is known: no capture for a while
        now[0] += 600.0
        assert watch.observe(cycle.facts()) == ["api"]
        _finished(watch, after=found.at)
