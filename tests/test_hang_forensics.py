"""Hang forensics through the exporter: a real deadlocked service, real py-spy, the verdict naming lines.

The service (tests/stuck_services.py) deadlocks two worker threads on two locks after SIGUSR1; its
API is played by a server that accepts and never answers. The exporter must notice the failing
probes, capture the stacks before anyone restarts the service, and say which lines are stuck.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from autoglm_exporter.diagnosis import diagnose
from autoglm_exporter.forensics.hangwatch import ForensicsFacts, ServiceEvidence

from . import faultservers as fs
from .conftest import REPO, sample, wait_until

SERVICES = REPO / "tests" / "stuck_services.py"


def stuck_line(marker: str) -> str:
    for number, line in enumerate(SERVICES.read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# stuck: {marker}"):
            return f"stuck_services.py:{number}"
    raise AssertionError(f"no marker {marker}")


@pytest.fixture
def stuck_service():
    started: list[subprocess.Popen[bytes]] = []

    def start(mode: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, str(SERVICES), mode], stdout=subprocess.PIPE)
        started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"ready pid=")
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(5)


def _config(tmp_path: Path, mode: str, api_url: str, trigger: int = 2) -> Path:
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
  - {{name: inference, module: inference, url: '{api_url}/inference', service: api, timeout: 0.5s}}
redis: []
engines: []
logs: []
forensics:
  trigger_after_failures: {trigger}
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
        assert exporter.get("/api/diagnosis").json()["verdict"] is None
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
    assert sample(metrics, "autoglm_diagnosis_verdict", layer="stall", reason="threads_blocked") == 1


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
