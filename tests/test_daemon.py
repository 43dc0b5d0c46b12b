"""The exporter as a user runs it: a real process, real HTTP, signals, reload, flags, promtool."""

from __future__ import annotations

import gzip
import json
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import httpx
import pytest

from autoglm_exporter.web.server import accepts_gzip

from .conftest import ExporterProcess, free_port, require_binary, sample, wait_until

SERVICE_CONFIG = """
global: {{interval: 200ms, timeout: 2s, jitter: 0}}
services:
  - name: {name}
    match: {{port: {port}}}
"""


def test_serves_metrics_on_defaults_and_promtool_finds_nothing_to_lint(start_exporter) -> None:
    exporter = start_exporter()
    response = exporter.get()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    page = exporter.metrics()
    assert sample(page, "autoglm_process_up", service="open-autoglm") == 0
    assert sample(page, "autoglm_process_up", service="vllm") == 0
    assert sample(page, "autoglm_exporter_collector_success", collector="system") == 1
    assert (
        sample(page, "autoglm_exporter_build_info", version="0.1.0", python_version=sys.version.split()[0])
        == 1
    )
    promtool = require_binary("promtool")
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=response.content, capture_output=True, timeout=30
    )
    assert lint.returncode == 0 and lint.stdout == b"" and lint.stderr == b"", lint.stdout + lint.stderr


def test_openmetrics_and_gzip_by_negotiation(start_exporter) -> None:
    exporter = start_exporter()
    response = exporter.get(headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.text.rstrip().endswith("# EOF")
    with httpx.stream(
        "GET", exporter.url + "/metrics", headers={"Accept-Encoding": "gzip"}, timeout=5
    ) as raw:
        assert raw.headers["content-encoding"] == "gzip"
        body = gzip.decompress(b"".join(raw.iter_raw()))
    assert b"autoglm_system_context_switches_total" in body


def test_landing_health_and_unknown_paths(start_exporter) -> None:
    exporter = start_exporter()
    landing = exporter.get("/")
    assert landing.status_code == 200 and "href='/metrics'" in landing.text and "id='verdict'" in landing.text
    assert exporter.get("/-/healthy").status_code == 200
    assert exporter.get("/nope").status_code == 404
    assert httpx.post(exporter.url + "/metrics", timeout=5).status_code == 405


def test_sigterm_stops_cleanly_within_two_seconds(start_exporter) -> None:
    exporter = start_exporter()
    started = time.monotonic()
    assert exporter.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 2.0
    assert "msg=stopping" in exporter.log()


def test_sigint_stops_cleanly(start_exporter) -> None:
    exporter = start_exporter()
    started = time.monotonic()
    assert exporter.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 2.0


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "autoglm.yml"
    path.write_text(text)
    return path


def test_sighup_with_a_broken_file_keeps_the_old_config(start_exporter, tmp_path: Path) -> None:
    config = _config(tmp_path, SERVICE_CONFIG.format(name="first", port=free_port()))
    exporter = start_exporter(f"--config.file={config}")
    assert sample(exporter.metrics(), "autoglm_exporter_config_last_reload_successful") == 1
    config.write_text("services: [ {name: broken\n")
    exporter.process.send_signal(signal.SIGHUP)
    wait_until(lambda: sample(exporter.metrics(), "autoglm_exporter_config_last_reload_successful") == 0)
    assert sample(exporter.metrics(), "autoglm_process_up", service="first") == 0  # old config still runs
    assert "config reload failed" in exporter.log()
    config.write_text(SERVICE_CONFIG.format(name="second", port=free_port()))
    response = httpx.post(exporter.url + "/-/reload", timeout=5)
    assert response.status_code == 200
    page = wait_until(
        lambda: (m := exporter.metrics()) and sample(m, "autoglm_process_up", service="second") == 0 and m
    )
    assert sample(page, "autoglm_exporter_config_last_reload_successful") == 1
    assert sample(page, "autoglm_process_up", service="first") is None  # vanished with its config


def test_reload_endpoint_reports_the_errors(start_exporter, tmp_path: Path) -> None:
    config = _config(tmp_path, SERVICE_CONFIG.format(name="api", port=free_port()))
    exporter = start_exporter(f"--config.file={config}")
    config.write_text("global: {interval: never}\n")
    response = httpx.post(exporter.url + "/-/reload", timeout=5)
    assert response.status_code == 500
    assert "global.interval: must be a duration" in response.text


def test_reload_errors_never_show_a_secret(start_exporter, tmp_path: Path) -> None:
    config = _config(tmp_path, SERVICE_CONFIG.format(name="api", port=free_port()))
    exporter = start_exporter(f"--config.file={config}")
    config.write_text('global: {interval: "PGPASSWORD=hunter2 --api-key=k3y-123"}\n')
    response = httpx.post(exporter.url + "/-/reload", timeout=5)
    assert response.status_code == 500 and "global.interval" in response.text
    wait_until(lambda: "config reload failed" in exporter.log())
    for shown in (response.text, exporter.log()):
        assert "hunter2" not in shown and "k3y-123" not in shown


def test_log_level_changes_at_run_time(start_exporter, tmp_path: Path) -> None:
    exporter = start_exporter()
    assert exporter.get("/-/log-level").text.strip() == "info"
    assert " level=debug " not in exporter.log()
    assert httpx.post(exporter.url + "/-/log-level?level=debug", timeout=5).status_code == 200
    assert exporter.get("/-/log-level").text.strip() == "debug"
    changed = wait_until(
        lambda: [line for line in exporter.log().splitlines() if "log level changed" in line]
    )
    # The new level is a field; the line's own severity is fixed (not "debug").
    assert "level=warn" in changed[0] and "new_level=debug previous_level=info" in changed[0]
    exporter.get("/metrics")
    wait_until(lambda: " level=debug " in exporter.log())  # debug lines now appear
    refused = httpx.post(exporter.url + "/-/log-level", content=b"PGPASSWORD=hunter2", timeout=5)
    assert refused.status_code == 400 and "PGPASSWORD=***" in refused.text and "hunter2" not in refused.text


def test_the_capture_api_is_absent_when_forensics_is_disabled(start_exporter, tmp_path: Path) -> None:
    enabled = start_exporter()
    response = httpx.post(enabled.url + "/api/capture?service=open-autoglm", timeout=5)
    assert response.status_code == 409  # enabled: known service, nothing running to capture
    config = _config(tmp_path, "forensics: {enabled: false}\n")
    disabled = start_exporter(f"--config.file={config}")
    response = httpx.post(disabled.url + "/api/capture?service=open-autoglm", timeout=5)
    assert response.status_code == 404 and "forensics.enabled: false" in response.json()["message"]


def test_json_log_format(start_exporter) -> None:
    exporter = start_exporter("--log.format=json")
    first = json.loads(exporter.log().splitlines()[0])
    assert first["level"] == "info" and "msg" in first


def test_flags_can_come_from_environment_variables(start_exporter) -> None:
    port = free_port()
    exporter = start_exporter(
        env={
            "AUTOGLM_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "AUTOGLM_EXPORTER_COLLECTOR_SYSTEM": "false",
        }
    )
    assert exporter.port == port
    page = exporter.metrics()
    assert sample(page, "autoglm_exporter_collector_success", collector="system") is None
    assert sample(page, "autoglm_system_context_switches_total") is None
    assert sample(page, "autoglm_exporter_collector_success", collector="process") == 1


def test_collector_flags_and_telemetry_path(start_exporter) -> None:
    exporter = start_exporter("--no-collector.process", "--web.telemetry-path=/probe-metrics")
    page = exporter.get("/probe-metrics")
    assert page.status_code == 200 and "autoglm_system_cpus" in page.text
    assert "autoglm_process_up" not in page.text
    assert exporter.get("/metrics").status_code == 404


def test_bad_config_at_start_exits_2(tmp_path: Path) -> None:
    config = _config(tmp_path, "global: {interval: 0}\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoglm_exporter",
            f"--config.file={config}",
            "--web.listen-address=127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "global.interval: must be > 0" in run.stderr


def test_version_command() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "autoglm_exporter", "version"], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0 and run.stdout.startswith("autoglm-exporter 0.1.0")


# --- TLS and basic auth -----------------------------------------------------------------------


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            require_binary("openssl"),
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def test_tls_and_basic_auth_with_a_real_client(start_exporter, tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=10)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {cert.name}\n  key_file: {key.name}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    trust = ssl.create_default_context(cafile=str(cert))
    exporter = start_exporter(
        f"--web.config.file={web}", scheme="https", verify=trust, auth=("prometheus", "s3cret-pass")
    )
    good = exporter.get(verify=trust, auth=("prometheus", "s3cret-pass"))
    assert good.status_code == 200 and "autoglm_system_cpus" in good.text
    assert exporter.get(verify=trust, auth=("prometheus", "wrong")).status_code == 401
    assert exporter.get(verify=trust, auth=("nobody", "s3cret-pass")).status_code == 401
    anonymous = exporter.get(verify=trust)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP against the TLS port gets no answer
        httpx.get(exporter.url.replace("https", "http") + "/metrics", timeout=5).raise_for_status()
    assert hashed not in exporter.log() and "s3cret-pass" not in exporter.log()


def test_bad_web_config_exits_2(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  alice: plaintext\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoglm_exporter",
            f"--web.config.file={web}",
            "--web.listen-address=127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "basic_auth_users.alice" in run.stderr and "plaintext" not in run.stderr


# --- a real Prometheus scrapes it ---------------------------------------------------------------


def test_a_real_prometheus_scrapes_the_exporter(start_exporter, tmp_path: Path) -> None:
    prometheus = require_binary("prometheus")
    exporter: ExporterProcess = start_exporter()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: autoglm\n    static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]\n"
    )
    promtool = require_binary("promtool")
    subprocess.run([promtool, "check", "config", str(config)], check=True, capture_output=True, timeout=30)
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def query(expr: str) -> list:
            response = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}, timeout=5)
            return response.json()["data"]["result"] if response.status_code == 200 else []

        up = wait_until(lambda: query('up{job="autoglm"} == 1'), timeout=30, interval=0.5)
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{exporter.port}"
        services = wait_until(lambda: query("autoglm_process_up"), timeout=10, interval=0.5)
        assert {s["metric"]["service"] for s in services} == {"open-autoglm", "vllm"}
        assert query("rate(autoglm_system_context_switches_total[5s])") is not None
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("", False),
        ("*", True),
        ("gzip;q=bogus", False),
    ],
)
def test_accept_encoding_is_honoured(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected
