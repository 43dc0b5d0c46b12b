"""The whole chain through the real exporter: each fault a user meets, and the verdict it gets.

One exporter process watches a service (a server in this test process, matched by its port), a
real redis-server, a vLLM-like metrics endpoint and an error log. The test breaks one link at a
time and reads /api/diagnosis and /metrics, as a user's dashboard or alert would. A new verdict
must hold for two readings of the collector that sees it, so each check waits (bounded) for two
collection intervals plus two probe timeouts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from . import faultservers as fs
from .conftest import REPO, require_binary, sample, wait_until

INTERVAL = 0.5
PROBE_TIMEOUT = 1.0
WITHIN = 2 * (INTERVAL + PROBE_TIMEOUT) + 2.0  # two readings, each up to the probe's deadline, CI slack

HEALTHY_ANSWER = fs.answer(200, '{"text": "Hello"}')


@pytest.fixture
def chain(tmp_path: Path, start_exporter, redis_server):
    api = fs.FaultServer(HEALTHY_ANSWER)
    engine_state = {"waiting": 0.0, "running": 1.0, "kv": 0.3, "tokens": 100.0}
    engine = fs.FaultServer(fs.vllm_metrics(engine_state))
    redis = redis_server()
    log = tmp_path / "error.log"
    log.write_text("old history: CUDA out of memory (before the exporter started)\n")
    config = tmp_path / "autoglm.yml"
    config.write_text(
        f"""
global: {{interval: {INTERVAL}s, timeout: 3s, jitter: 0}}
# The machine's own load (a busy CI runner) must not become the verdict these tests expect.
collectors: {{system: {{enabled: false}}}}
services:
  - name: api
    match: {{port: {api.port}}}
targets:
  - name: inference
    module: inference
    url: {api.url}/inference
    service: api
    timeout: {PROBE_TIMEOUT}s
    connect_timeout: 0.5s
    expect: {{json_field: text}}
redis:
  - name: queue
    address: 127.0.0.1:{redis.port}
    timeout: 0.5s
    queues: [{{key: autoglm:requests, type: list}}]
engines:
  - name: vllm
    metrics_url: {engine.url}/metrics
    timeout: 1s
logs:
  - name: error
    path: {log}
    service: api
"""
    )
    exporter = start_exporter(f"--config.file={config}")
    chain = Chain(exporter, api, engine, engine_state, redis, log)
    try:
        chain.expect(None)  # healthy first
        yield chain
    finally:
        api.stop()
        engine.stop()


class Chain:
    def __init__(self, exporter, api, engine, engine_state, redis, log: Path) -> None:
        self.exporter, self.api, self.engine, self.engine_state = exporter, api, engine, engine_state
        self.redis, self.log = redis, log

    def diagnosis(self) -> dict:
        return self.exporter.get("/api/diagnosis").json()

    def expect(self, verdict: tuple[str, str] | None) -> dict:
        """Wait (bounded) until the verdict is `verdict`; returns the diagnosis."""

        def current() -> dict | None:
            diagnosis = self.diagnosis()
            got = diagnosis["verdict"] and (diagnosis["verdict"]["layer"], diagnosis["verdict"]["reason"])
            return diagnosis if got == verdict or (verdict is None and diagnosis["healthy"]) else None

        try:
            return wait_until(current, timeout=WITHIN, interval=0.1)
        except AssertionError:
            raise AssertionError(
                f"expected {verdict}, diagnosis is {json.dumps(self.diagnosis(), indent=1)}"
            ) from None

    def metrics(self) -> dict:
        return self.exporter.metrics()


@pytest.mark.parametrize(
    ("handler", "verdict", "reason"),
    [
        (fs.never_answer, ("client", "not_answering"), "read_timeout"),
        (fs.slow_body, ("client", "not_answering"), "read_timeout"),
        (fs.answer(500, '{"error": "internal"}'), ("client", "http_error"), "http_status"),
        (fs.answer(200, "<html>not json</html>"), ("client", "bad_answer"), "bad_body"),
        (fs.reset_mid_body, ("client", "reset"), "reset"),
    ],
    ids=["never-answers", "slow-body", "http-500", "malformed-json", "reset-mid-body"],
)
def test_service_faults_get_their_verdict_and_metrics(chain, handler, verdict, reason) -> None:
    chain.api.handler = handler
    diagnosis = chain.expect(verdict)
    assert diagnosis["verdict"]["next_command"].startswith("curl -sv")
    metrics = chain.metrics()
    assert sample(metrics, "autoglm_probe_success", target="inference") == 0
    assert sample(metrics, "autoglm_probe_failures_total", target="inference", reason=reason) >= 1
    assert (
        sample(metrics, "autoglm_diagnosis_verdict", service="api", layer=verdict[0], reason=verdict[1]) == 1
    )
    assert sample(metrics, "autoglm_diagnosis_healthy") == 0
    assert sample(metrics, "autoglm_diagnosis_users_hurt", service="api") == 1
    chain.api.handler = HEALTHY_ANSWER
    healed = chain.expect(None)  # and it heals
    assert healed["since_text"].startswith("healthy since ")
    assert [(c["kind"], c["reason"]) for c in healed["history"] if c["kind"] == "verdict"][-2:] == [
        ("verdict", verdict[1]),
        ("verdict", None),
    ]


def test_refused_port_with_no_process_is_a_dead_process(chain) -> None:
    chain.api.stop()  # nothing listens any more, and no process matches the service's port
    diagnosis = chain.expect(("network", "process_dead"))
    assert diagnosis["verdict"]["next_command"] == "ps aux | grep -i api"
    assert sample(chain.metrics(), "autoglm_process_up", service="api") == 0


def test_a_dead_service_says_since_when_on_every_surface_and_in_the_timeline(chain) -> None:
    before = time.time()
    chain.api.stop()
    diagnosis = chain.expect(("network", "process_dead"))
    since = diagnosis["since"]
    assert before - 0.5 <= since <= time.time()  # when a collector first saw it, not when it was believed
    assert re.fullmatch(r"broken since \d\d:\d\d:\d\d \(\d+ s\)", diagnosis["since_text"])
    metrics = chain.metrics()
    assert sample(metrics, "autoglm_diagnosis_verdict_since_timestamp_seconds", service="api") == since
    assert sample(metrics, "autoglm_diagnosis_users_hurt", service="api") == 1
    timeline = [(c["kind"], c["name"], c["reason"]) for c in diagnosis["history"]]
    assert ("link", "probe inference", "process_dead") in timeline
    assert [t for t in timeline if t[0] == "verdict"] == [("verdict", "api", "process_dead")]
    page = chain.exporter.get("/").text
    assert diagnosis["since_text"].split(" (")[0] in page  # "broken since 14:05:12"
    assert "<h3>Timeline (newest first)</h3>" in page


def test_redis_killed_then_paused(chain) -> None:
    chain.redis.client().execute_command("CLIENT", "PAUSE", "8000", "ALL")
    diagnosis = chain.expect(("dependencies", "redis_down"))
    assert "(timeout)" in diagnosis["verdict"]["summary"]
    chain.redis.client().execute_command("CLIENT", "UNPAUSE")
    chain.expect(None)
    chain.redis.kill()
    diagnosis = chain.expect(("dependencies", "redis_down"))
    assert "(connect_refused)" in diagnosis["verdict"]["summary"]
    assert diagnosis["verdict"]["next_command"] == f"redis-cli -h 127.0.0.1 -p {chain.redis.port} ping"
    assert sample(chain.metrics(), "autoglm_redis_up", redis="queue") == 0


def test_engine_stall_is_named(chain) -> None:
    chain.engine_state["waiting"] = 4.0  # requests wait, tokens stay flat at 100
    diagnosis = chain.expect(("stall", "engine_stalled"))
    assert "4 requests wait" in diagnosis["verdict"]["summary"]
    assert sample(chain.metrics(), "autoglm_engine_stalled", engine="vllm") == 1
    chain.engine_state["tokens"] += 50
    chain.engine_state["waiting"] = 0.0
    chain.expect(None)


def test_queue_backlog_growing(chain) -> None:
    client = chain.redis.client()
    client.rpush("autoglm:requests", *range(3))

    def grow() -> dict | None:
        client.rpush("autoglm:requests", "more", "more")
        diagnosis = chain.diagnosis()
        return (
            diagnosis
            if diagnosis["verdict"] and diagnosis["verdict"]["reason"] == "queue_backlog_growing"
            else None
        )

    diagnosis = wait_until(grow, timeout=WITHIN, interval=0.2)
    assert diagnosis["verdict"]["layer"] == "stall"
    assert (
        sample(
            chain.metrics(), "autoglm_redis_queue_depth", redis="queue", queue="autoglm:requests", type="list"
        )
        >= 3
    )


def test_cuda_oom_in_the_log_explains_failing_requests_and_survives_rotation(chain) -> None:
    with chain.log.open("a") as log:
        log.write("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    chain.api.handler = fs.answer(500, '{"error": "internal"}')

    def explained() -> dict | None:
        # The log error alone is already the verdict; once the probe fails too, it is its symptom.
        verdict = chain.expect(("service", "log_errors"))["verdict"]
        return (
            verdict
            if any(line.startswith("symptom: probe inference") for line in verdict["evidence"])
            else None
        )

    verdict = wait_until(explained, timeout=WITHIN)
    assert "cuda_oom" in verdict["summary"]
    assert (
        sample(chain.metrics(), "autoglm_log_errors_total", log="error", pattern="cuda_oom") == 1
    )  # not history
    os.rename(chain.log, chain.log.with_suffix(".log.1"))  # logrotate
    chain.log.write_text("RuntimeError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled system error\n")
    wait_until(
        lambda: sample(chain.metrics(), "autoglm_log_errors_total", log="error", pattern="nccl_error") == 1,
        timeout=WITHIN,
    )


def test_hostile_log_line_is_shown_escaped_on_the_status_page(chain, tmp_path: Path) -> None:
    hostile = "CUDA out of memory <script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
    with chain.log.open("a") as log:
        log.write(hostile + "\n")
    chain.api.handler = fs.answer(500, "{}")
    chain.expect(("service", "log_errors"))
    page = chain.exporter.get("/").text
    assert "<script>document.title" not in page and "&lt;script&gt;document.title=&#x27;pwned&#x27;" in page
    chromium = require_binary("chromium")
    artifacts = Path(os.environ.get("AUTOGLM_TEST_ARTIFACTS", REPO / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "status-page.png"
    browser = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,1000",
    ]  # fmt: skip
    dom = subprocess.run(
        [*browser, "--dump-dom", chain.exporter.url + "/"], capture_output=True, text=True, timeout=60
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<title>autoglm-exporter status</title>" in dom.stdout  # the script did not run
    assert "<script>" not in dom.stdout and "<img" not in dom.stdout
    assert "CUDA out of memory &lt;script&gt;" in dom.stdout  # shown, as text
    shot = subprocess.run(
        [*browser, f"--screenshot={screenshot}", chain.exporter.url + "/"], capture_output=True, timeout=60
    )
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000
    # The screenshot stays in artifacts/ for a human to look at.
