"""`autoglm-exporter doctor`: the chain printed for a human, exit codes for scripts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import free_port, wait_until

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


def test_without_a_running_exporter_doctor_says_it_is_a_one_shot_reading() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    run = _doctor("--no-color", f"--exporter.url={nobody}")
    assert run.returncode == 1
    assert (
        f"This is a one-shot reading: it cannot say since when, nor what happened before. "
        f"No running exporter to ask at {nobody}: nothing answers" in run.stdout
    )
    report = json.loads(_doctor("--json", f"--exporter.url={nobody}").stdout)
    assert report["one_shot"] is True and report["since"] is None
    assert (
        report["running_exporter"]["url"] == nobody
        and "nothing answers" in report["running_exporter"]["error"]
    )


def test_doctor_shows_since_when_and_the_timeline_of_a_running_exporter(
    start_exporter, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "running.yml"
    config.write_text(
        "global: {interval: 0.5s, timeout: 3s, jitter: 0}\n"
        "collectors: {system: {enabled: false}}\n"
        f"services:\n  - {{name: api, match: {{port: {port}}}, port: {port}}}\n"
        f"targets:\n  - {{name: api, module: tcp, url: '127.0.0.1:{port}', service: api, timeout: 1s}}\n"
        "redis: []\nengines: []\nlogs: []\n"
    )
    exporter = start_exporter(f"--config.file={config}")  # nothing listens: broken from its start
    wait_until(lambda: exporter.get("/api/diagnosis").json()["verdict"], timeout=15)
    # user:password in the URL is sent as basic auth and never printed.
    url = exporter.url.replace("://", "://someone:secret-pw@")
    run = _doctor("--no-color", f"--config.file={config}", f"--exporter.url={url}")
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"The running exporter at {exporter.url} says:" in run.stdout
    assert (
        "  api: network / process_dead: connection refused: the api process is not running, broken since before the exporter started"
        in run.stdout
    )
    assert "    before start link probe api: network / process_dead: " in run.stdout
    assert re.search(r"    \d\d:\d\d:\d\d verdict api: network / process_dead: ", run.stdout)
    assert "secret-pw" not in run.stdout + run.stderr
    report = json.loads(_doctor("--json", f"--config.file={config}", f"--exporter.url={exporter.url}").stdout)
    running = report["running_exporter"]
    assert running["error"] is None and running["chains"][0]["since"] is None
    assert any(change["kind"] == "verdict" for change in running["history"])


@pytest.mark.parametrize(
    "address", ["redis://:Hunter2Secret@127.0.0.1:{port}", "default:Hunter2Secret@127.0.0.1:{port}"]
)
@pytest.mark.parametrize("output", ["--no-color", "--json"])
def test_a_password_written_in_a_redis_address_never_reaches_doctor_output(
    tmp_path: Path, address: str, output: str
) -> None:
    config = tmp_path / "autoglm.yml"
    where = address.format(port=free_port())  # nothing listens there: Redis is down
    config.write_text(f"targets: []\nengines: []\nlogs: []\nredis: [{{name: queue, address: '{where}'}}]\n")
    run = _doctor(f"--config.file={config}", f"--exporter.url=http://127.0.0.1:{free_port()}", output)
    # 1: the address is taken and Redis is down; 2: the config load refuses a password in an address
    assert run.returncode in (1, 2) and "Traceback" not in run.stderr, run.stderr
    assert "Hunter2Secret" not in run.stdout + run.stderr
