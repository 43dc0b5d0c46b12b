"""`autoglm-exporter doctor`: the chain printed for a human, exit codes for scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import free_port

LISTENER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("listening", flush=True)
time.sleep(60)
"""


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoglm_exporter", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _config(tmp_path: Path, services: str) -> str:
    path = tmp_path / "autoglm.yml"
    path.write_text(f"services:\n{services}")
    return f"--config.file={path}"


def test_defaults_on_a_machine_without_the_service_name_the_missing_process() -> None:
    run = _doctor("--no-color")
    assert run.returncode == 1, run.stderr
    assert "✘ service open-autoglm: no process found" in run.stdout
    assert "verdict: service / process_missing: service open-autoglm" in run.stdout
    assert "next: ps aux | grep -i open-autoglm; ss -tlnp 'sport = :8080'" in run.stdout
    assert "✔ system:" in run.stdout


def test_json_output_for_scripts() -> None:
    run = _doctor("--json")
    report = json.loads(run.stdout)
    assert run.returncode == 1
    assert report["healthy"] is False
    assert report["verdict"]["layer"] == "service" and report["verdict"]["reason"] == "process_missing"
    assert {link["layer"] for link in report["links"]} >= {"service", "resources"}


def test_healthy_when_the_service_runs_and_listens(child_processes, tmp_path: Path) -> None:
    port = free_port()
    child = child_processes(LISTENER, str(port))
    assert child.stdout.readline().strip() == b"listening"
    run = _doctor("--no-color", _config(tmp_path, f"  - name: api\n    match: {{port: {port}}}\n"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"✔ service api: running (pid {child.pid})" in run.stdout
    assert "verdict: healthy" in run.stdout


def test_running_but_not_listening_is_named(child_processes, tmp_path: Path) -> None:
    port = free_port()
    child = child_processes("import time; print('up', flush=True); time.sleep(60)", "doctor-sleeper-x7")
    assert child.stdout.readline().strip() == b"up"
    run = _doctor(
        "--no-color",
        _config(tmp_path, f"  - name: api\n    match: {{cmdline: doctor-sleeper-x7}}\n    port: {port}\n"),
    )
    assert run.returncode == 1
    assert (
        f"verdict: service / port_not_listening: service api: running (pid {child.pid}) but not listening"
        in (run.stdout)
    )
    assert f"next: ss -tlnp 'sport = :{port}'" in run.stdout


def test_bad_config_exits_2(tmp_path: Path) -> None:
    run = _doctor(_config(tmp_path, "  - name: api\n"))
    assert run.returncode == 2
    assert "services[0].match: needs at least one of cmdline, exe, pidfile, port" in run.stderr
