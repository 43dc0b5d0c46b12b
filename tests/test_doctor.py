"""`autoglm-exporter doctor`: the chain printed for a human, exit codes for scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import free_port

# A minimal inference service: answers the seed's POST /inference with JSON.
INFERENCE_SERVICE = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"text": "Hi"}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening", flush=True)
server.serve_forever()
"""
# Only what the test names: no default probes, Redis, engine or log.
ONLY = "targets: []\nredis: []\nengines: []\nlogs: []\n"


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoglm_exporter", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _config(tmp_path: Path, services: str, rest: str = ONLY) -> str:
    path = tmp_path / "autoglm.yml"
    path.write_text(f"services:\n{services}{rest}")
    return f"--config.file={path}"


def test_defaults_on_a_machine_without_the_service_name_the_dead_process() -> None:
    run = _doctor("--no-color")
    assert run.returncode == 1, run.stderr
    assert "✘ service open-autoglm: no process found" in run.stdout
    assert (
        "verdict: network / process_dead: probe inference: connection refused: "
        "the open-autoglm process is not running" in run.stdout
    )
    assert "next: ps aux | grep -i open-autoglm" in run.stdout
    assert "✔ system:" in run.stdout


def test_json_output_for_scripts() -> None:
    run = _doctor("--json")
    report = json.loads(run.stdout)
    assert run.returncode == 1
    assert report["healthy"] is False
    assert report["verdict"]["layer"] == "network" and report["verdict"]["reason"] == "process_dead"
    assert {link["layer"] for link in report["links"]} >= {"network", "service", "dependencies", "resources"}


def test_healthy_when_the_service_runs_listens_and_answers(child_processes, tmp_path: Path) -> None:
    port = free_port()
    child = child_processes(INFERENCE_SERVICE, str(port))
    assert child.stdout.readline().strip() == b"listening"
    targets = f"targets:\n  - {{name: api, module: inference, url: 'http://127.0.0.1:{port}/inference', service: api}}\n"
    config = _config(
        tmp_path, f"  - name: api\n    match: {{port: {port}}}\n", ONLY.replace("targets: []\n", targets)
    )
    run = _doctor("--no-color", config)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"✔ service api: running (pid {child.pid})" in run.stdout
    assert "✔ probe api: inference http://127.0.0.1:" in run.stdout
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
