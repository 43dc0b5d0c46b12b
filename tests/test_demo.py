"""The demo services (`python -m demo engine|api|webhook`) as real processes, with a real redis-server.

What a user of the demo sees: answers, Redis queue depth, vLLM metrics, log lines, stacks; and
that the exporter's own collectors (engine, probe), log pattern and stack analysis read the demo
the way they read the real services.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from autoglm_exporter.collectors.engine import EngineCollector
from autoglm_exporter.collectors.logs import BUILTIN_PATTERNS, LogsCollector
from autoglm_exporter.collectors.probe import ProbeCollector
from autoglm_exporter.config import EngineConfig, ExpectConfig, LogConfig, ProbeTarget
from autoglm_exporter.forensics.analysis import analyse
from autoglm_exporter.forensics.pyspy import capture
from demo.trace import STAGES

from . import faultservers
from .conftest import REPO, RedisServer, free_port, parse_metrics, registry_of, sample, wait_until

QUEUE = "autoglm:requests"
MODEL = "demo-model"
PY_SPY = str(Path(sys.executable).parent / "py-spy")


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int
    stderr_path: Path
    stdout_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> float:
        """Signal the process and return how long it took to exit."""
        started = time.monotonic()
        self.process.send_signal(sig)
        self.process.wait(timeout)
        return time.monotonic() - started


@dataclass
class Demo:
    redis: RedisServer
    engine: Service
    api: Service
    log_path: Path
    open_sockets: list[socket.socket] = field(default_factory=list)

    def infer(self, timeout: float = 5.0, **body: object) -> httpx.Response:
        body.setdefault("prompt", "Hello")
        body.setdefault("max_tokens", 8)
        return httpx.post(self.api.url + "/inference", json=body, timeout=timeout)

    def fire(self, count: int, max_tokens: int = 4) -> None:
        """Send `count` /inference requests without waiting for their answers."""
        payload = json.dumps({"prompt": "Hello", "max_tokens": max_tokens}).encode()
        request = (
            f"POST /inference HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.api.port), timeout=2)
            sock.sendall(request)
            self.open_sockets.append(sock)

    def queue_depth(self) -> int:
        return int(self.redis.client().llen(QUEUE))

    def engine_metrics(self) -> dict:
        response = httpx.get(self.engine.url + "/metrics", timeout=2)
        assert response.status_code == 200, response.text
        return parse_metrics(response.text)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def set_fault(url: str, fault: str, token: str | None = None, **extra: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(url + "/admin/fault", json={"fault": fault, **extra}, headers=headers, timeout=2)


def waiting(metrics: dict) -> float | None:
    return sample(metrics, "vllm:num_requests_waiting", model_name=MODEL)


def generated(metrics: dict) -> float | None:
    return sample(metrics, "vllm:generation_tokens_total", model_name=MODEL)


@pytest.fixture
def start_demo(tmp_path: Path, redis_server: Callable[..., RedisServer]) -> Iterator[Callable[..., object]]:
    """Start demo services as real processes (cwd: the repository); all are killed after the test."""
    started: list[Service] = []
    demos: list[Demo] = []
    env = {k: v for k, v in os.environ.items() if k != "DEMO_ADMIN_TOKEN"}

    def service(
        role: str, *args: str, extra_env: dict[str, str] | None = None, health: str = "/health"
    ) -> Service:
        port = free_port()
        stderr_path = tmp_path / f"{role}-{port}.stderr"
        stdout_path = tmp_path / f"{role}-{port}.stdout"
        command = [sys.executable, "-m", "demo", role, "--host", "127.0.0.1", "--port", str(port), *args]
        with open(stderr_path, "wb") as err, open(stdout_path, "wb") as out:
            process = subprocess.Popen(
                command, cwd=REPO, stdout=out, stderr=err, env={**env, **(extra_env or {})}
            )
        started.append(svc := Service(process, port, stderr_path, stdout_path))

        def up() -> bool:
            assert process.poll() is None, f"demo {role} exited early:\n{svc.stderr()}"
            return httpx.get(svc.url + health, timeout=1).status_code == 200

        wait_until(up, timeout=10)
        return svc

    def demo(*api_args: str, engine_args: tuple[str, ...] = ()) -> Demo:
        redis = redis_server()
        engine = service("engine", *engine_args)
        log_path = tmp_path / f"api-{len(demos)}.log"
        api = service(
            "api",
            "--engine-url", engine.url,
            "--redis-url", f"redis://127.0.0.1:{redis.port}/0",
            "--queue", QUEUE,
            "--log-file", str(log_path),
            "--workers", "2",
            "--request-timeout", "5",
            *api_args,
        )  # fmt: skip
        demos.append(stack := Demo(redis, engine, api, log_path))
        return stack

    demo.service = service  # type: ignore[attr-defined]
    yield demo
    for stack in demos:
        for sock in stack.open_sockets:
            sock.close()
    for svc in started:
        if svc.process.poll() is None:
            svc.process.kill()
        svc.process.wait(5)


def test_an_inference_goes_through_the_redis_queue_and_the_engine(start_demo) -> None:
    demo = start_demo()
    before = generated(demo.engine_metrics())

    answer = demo.infer(max_tokens=8)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"text", "request_id"}
    assert len(body["text"].split()) == 8 and re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    assert generated(demo.engine_metrics()) == before + 8  # the engine generated them, through a worker
    assert demo.queue_depth() == 0  # the job was taken off the queue
    health = httpx.get(demo.api.url + "/health", timeout=2)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    startup = demo.log().splitlines()[0]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO demo\.api: demo api listening on ", startup)


BAD_REQUESTS = [
    (b"{not json", 400),
    (b'{"max_tokens": 5}', 400),
    (b'{"prompt": "hi", "max_tokens": "many"}', 400),
    (b'{"prompt": "", "max_tokens": 5}', 400),
    (b'["prompt"]', 400),
    (b'{"prompt": "' + b"x" * 70_000 + b'"}', 413),
]


def test_bad_requests_get_a_json_error_and_queue_nothing(start_demo) -> None:
    demo = start_demo()
    for body, status in BAD_REQUESTS:
        answer = httpx.post(demo.api.url + "/inference", content=body, timeout=5)
        assert (answer.status_code, bool(answer.json()["error"])) == (status, True), body[:40]
    assert demo.queue_depth() == 0
    assert demo.log().count(" WARNING demo.api: POST /inference 4") == len(BAD_REQUESTS)
    assert demo.infer().status_code == 200  # the service is fine afterwards


def test_the_engine_speaks_openai_and_vllm_metrics(start_demo) -> None:
    engine = start_demo.service("engine")
    models = httpx.get(engine.url + "/v1/models", timeout=2).json()
    assert models["object"] == "list" and models["data"][0]["id"] == MODEL

    chat = {"model": MODEL, "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 3}
    plain = httpx.post(engine.url + "/v1/chat/completions", json=chat, timeout=5).json()
    assert len(plain["choices"][0]["message"]["content"].split()) == 3
    assert plain["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}

    events = []
    with httpx.stream(
        "POST", engine.url + "/v1/chat/completions", json={**chat, "stream": True}, timeout=5
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    deltas = [json.loads(event)["choices"][0]["delta"].get("content", "") for event in events[:-1]]
    assert len("".join(deltas).split()) == 3

    wrong = httpx.post(engine.url + "/v1/chat/completions", json={**chat, "model": "other"}, timeout=5)
    assert wrong.status_code == 404

    text = httpx.get(engine.url + "/metrics", timeout=2).text
    assert "# TYPE vllm:generation_tokens_total counter" in text
    metrics = parse_metrics(text)
    assert generated(metrics) == 6 and sample(metrics, "vllm:prompt_tokens_total", model_name=MODEL) == 6
    assert waiting(metrics) == 0 and sample(metrics, "vllm:kv_cache_usage_perc", model_name=MODEL) == 0


def test_engine_stall_fills_the_redis_queue_while_health_stays_200(start_demo) -> None:
    demo = start_demo()
    demo.infer()  # the workers know the model now
    assert set_fault(demo.engine.url, "stall").json()["fault"] == "stall"

    demo.fire(5)  # two workers take one job each and wait on the engine; three stay queued
    wait_until(lambda: waiting(demo.engine_metrics()) == 2 and demo.queue_depth() == 3, timeout=5)
    assert demo.redis.client().type(QUEUE) == "list"
    flat = generated(demo.engine_metrics())
    time.sleep(0.3)
    assert generated(demo.engine_metrics()) == flat  # nothing is generated
    assert httpx.get(demo.engine.url + "/health", timeout=2).status_code == 200  # vLLM's /health lies

    demo.fire(2)
    wait_until(lambda: demo.queue_depth() == 5, timeout=5)

    # The exporter's engine collector reads the demo as it reads vLLM: waiting, flat tokens, stalled.
    # Stalled once flat over its window: three readings spanning two of its (0.2 s) intervals.
    collector = EngineCollector(
        (EngineConfig("demo", metrics_url=demo.engine.url + "/metrics", timeout=2.0),), interval=0.2
    )
    collector.collect()
    wait_until(lambda: collector.collect().facts.engines["demo"].stalled, timeout=5)
    facts = collector.collect().facts.engines["demo"]
    assert (facts.up, facts.waiting, facts.running, facts.tokens_since_last, facts.stalled) == (
        True,
        2.0,
        0.0,
        0.0,
        True,
    )

    set_fault(demo.engine.url, "none")
    wait_until(lambda: demo.queue_depth() == 0 and waiting(demo.engine_metrics()) == 0, timeout=5)
    wait_until(lambda: generated(demo.engine_metrics()) >= flat + 7 * 4, timeout=5)
    assert demo.infer().status_code == 200


def test_api_hang_accepts_but_never_answers_while_admin_does(start_demo) -> None:
    demo = start_demo()
    assert set_fault(demo.api.url, "hang").status_code == 200

    with pytest.raises(httpx.ReadTimeout):
        demo.infer(timeout=1.0)
    state = httpx.get(demo.api.url + "/admin/fault", timeout=1).json()
    assert (state["fault"], state["restart_required"]) == ("hang", False)

    set_fault(demo.api.url, "none")
    assert demo.infer().status_code == 200

    set_fault(demo.api.url, "hang")
    demo.fire(1)
    assert demo.api.stop() < 2.0 and demo.api.process.returncode == 0  # SIGTERM ends it although hung


def test_api_error_and_slow_faults(start_demo) -> None:
    demo = start_demo()
    set_fault(demo.api.url, "error")
    failed = demo.infer()
    assert failed.status_code == 500 and "error" in failed.json()
    assert re.search(r" ERROR demo\.api: POST /inference 500 request [0-9a-f]{32}: ", demo.log())

    slow = set_fault(demo.api.url, "slow", seconds=0.5).json()
    assert (slow["fault"], slow["seconds"]) == ("slow", 0.5)
    started = time.monotonic()
    assert demo.infer().status_code == 200
    assert time.monotonic() - started >= 0.5


def test_flaky_fails_exactly_every_other_request(start_demo) -> None:
    demo = start_demo()
    assert set_fault(demo.api.url, "flaky").json()["fault"] == "flaky"
    statuses = [demo.infer().status_code for _ in range(8)]
    assert sorted(statuses) == [200] * 4 + [500] * 4
    assert all(a != b for a, b in zip(statuses, statuses[1:], strict=False)), statuses
    assert "(injected fault: flaky)" in demo.log()
    set_fault(demo.api.url, "none")
    assert [demo.infer().status_code for _ in range(3)] == [200] * 3


def _histogram(metrics: dict, name: str) -> tuple[float, float, dict[str, float]]:
    """(count, sum, {le: cumulative count}) of one of the engine's histograms."""
    buckets = {
        dict(labels)["le"]: value
        for (sample_name, labels), value in metrics.items()
        if sample_name == f"{name}_bucket" and dict(labels)["model_name"] == MODEL
    }
    count = sample(metrics, f"{name}_count", model_name=MODEL)
    total = sample(metrics, f"{name}_sum", model_name=MODEL)
    assert count is not None and total is not None, name
    return count, total, buckets


def test_the_engine_exports_vllms_latency_histograms(start_demo) -> None:
    """The dashboards' percentiles of vLLM 0.11's histograms, with the slow fault in the queue time."""
    engine = start_demo.service("engine", "--token-delay", "0.01")
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "one two"}], "max_tokens": 5}
    assert httpx.post(engine.url + "/v1/chat/completions", json=chat, timeout=5).status_code == 200
    set_fault(engine.url, "slow", seconds=0.3)
    assert httpx.post(engine.url + "/v1/chat/completions", json=chat, timeout=5).status_code == 200
    metrics = parse_metrics(httpx.get(engine.url + "/metrics", timeout=2).text)

    count, total, buckets = _histogram(metrics, "vllm:time_to_first_token_seconds")
    assert count == 2 and total >= 0.3 + 0.02  # the slow request waited before its first token
    assert buckets["+Inf"] == 2 and list(buckets.values()) == sorted(buckets.values())
    count, total, _ = _histogram(metrics, "vllm:inter_token_latency_seconds")
    assert count == 8 and total >= 8 * 0.01  # four gaps between five tokens, twice
    count, total, buckets = _histogram(metrics, "vllm:request_queue_time_seconds")
    assert count == 2 and 0.3 <= total < 2 and buckets["0.25"] == 1  # one waited 0.3 s, one not
    count, total, _ = _histogram(metrics, "vllm:e2e_request_latency_seconds")
    assert count == 2 and total >= 0.3 + 2 * 5 * 0.01


def test_engine_faults_as_the_api_sees_them(start_demo) -> None:
    demo = start_demo()
    set_fault(demo.engine.url, "error")
    assert demo.infer().status_code == 502
    assert "the engine answered HTTP 500" in demo.log()

    set_fault(demo.engine.url, "slow", seconds=0.4)
    started = time.monotonic()
    assert demo.infer().status_code == 200
    assert time.monotonic() - started >= 0.4

    set_fault(demo.engine.url, "down")
    for path in ("/health", "/metrics"):
        assert httpx.get(demo.engine.url + path, timeout=2).status_code == 503
    assert demo.infer().status_code == 502
    assert httpx.get(demo.engine.url + "/admin/fault", timeout=2).json()["fault"] == "down"

    set_fault(demo.engine.url, "none")
    assert demo.infer().status_code == 200

    set_fault(demo.engine.url, "stall")
    demo.fire(1)
    wait_until(lambda: waiting(demo.engine_metrics()) == 1, timeout=5)
    assert (
        demo.engine.stop() < 2.0 and demo.engine.process.returncode == 0
    )  # SIGTERM ends it although stalled


def test_admin_rejects_unknown_faults_and_bad_seconds(start_demo) -> None:
    engine = start_demo.service("engine")
    unknown = set_fault(engine.url, "meltdown")
    assert unknown.status_code == 400
    assert unknown.json()["valid"] == ["none", "stall", "slow", "error", "down"]
    assert set_fault(engine.url, "slow", seconds=-1).status_code == 400
    assert set_fault(engine.url, "slow", seconds="ten").status_code == 400
    bad = httpx.post(engine.url + "/admin/fault", content=b"{", timeout=2)
    assert bad.status_code == 400
    assert httpx.get(engine.url + "/admin/fault", timeout=2).json()["fault"] == "none"


def test_deadlock_hangs_the_api_for_good_and_py_spy_sees_the_lock_waits(start_demo) -> None:
    demo = start_demo()
    struck = set_fault(demo.api.url, "deadlock").json()
    assert (struck["fault"], struck["restart_required"]) == ("deadlock", True)

    with pytest.raises(httpx.ReadTimeout):
        demo.infer(timeout=1.0)
    assert httpx.get(demo.api.url + "/health", timeout=1).status_code == 200  # shallow health
    cleared = set_fault(demo.api.url, "none")
    assert cleared.status_code == 409 and cleared.json()["restart_required"] is True

    dumped = subprocess.run(
        [PY_SPY, "dump", "--native", "--pid", str(demo.api.process.pid)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert dumped.returncode == 0, dumped.stderr
    for thread in ("janitor", "stats-reporter"):
        stack = dumped.stdout.split(f'"{thread}"', 1)[1].split("Thread ", 1)[0]
        assert "acquire" in stack and "demo/deadlock.py" in stack, dumped.stdout

    # The exporter's own stack analysis calls it a deadlock.
    analysis = analyse(capture(demo.api.process.pid, count=2, interval=0.2, py_spy=PY_SPY))
    assert analysis.deadlock_suspected, analysis.summary
    blocked = {t.name for t in analysis.in_state("blocked")}
    assert {"janitor", "stats-reporter"} <= blocked

    assert demo.api.stop() < 2.0 and demo.api.process.returncode == 0


def test_oom_writes_a_line_the_exporter_counts_as_cuda_oom(start_demo) -> None:
    demo = start_demo()
    for count in (1, 2):
        answer = set_fault(demo.api.url, "oom").json()
        assert (answer["fault"], answer["oom_lines_written"]) == ("none", count)  # an event, not a state
    oom = re.compile(BUILTIN_PATTERNS["cuda_oom"], re.IGNORECASE)
    lines = [line for line in demo.log().splitlines() if oom.search(line)]
    assert len(lines) == 2
    assert re.match(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR demo\.api: torch\.OutOfMemoryError: CUDA out", lines[0]
    )
    assert demo.infer().status_code == 200  # nothing else changes


def test_redis_down_is_503_and_an_error_line(start_demo) -> None:
    demo = start_demo()
    assert demo.infer().status_code == 200
    demo.redis.kill()

    started = time.monotonic()
    answer = demo.infer()
    assert answer.status_code == 503 and "redis unreachable" in answer.json()["error"]
    assert time.monotonic() - started < 4
    assert re.search(
        r" ERROR demo\.api: POST /inference 503 request [0-9a-f]{32}: redis unreachable", demo.log()
    )
    wait_until(lambda: "workers cannot reach redis" in demo.log(), timeout=5)


def test_the_exporters_probes_succeed_against_the_demo(start_demo) -> None:
    demo = start_demo()
    targets = (
        ProbeTarget(
            "api", "inference", demo.api.url + "/inference", timeout=5, expect=ExpectConfig(json_field="text")
        ),
        ProbeTarget(
            "engine", "openai_chat", demo.engine.url + "/v1/chat/completions", timeout=5, stream=True
        ),
    )
    facts = ProbeCollector(targets).collect().facts.targets
    assert facts["api"].outcome.success, facts["api"].outcome
    assert facts["engine"].outcome.success and facts["engine"].outcome.ttft is not None, facts[
        "engine"
    ].outcome

    set_fault(demo.engine.url, "stall")
    stalled = ProbeCollector(
        (ProbeTarget("api", "inference", demo.api.url + "/inference", timeout=1, connect_timeout=1),)
    ).collect()
    assert stalled.facts.targets["api"].outcome.reason == "read_timeout"


def test_admin_token_is_required_when_set_and_never_logged(start_demo) -> None:
    token = "s3cret-demo-token"
    engine = start_demo.service("engine", extra_env={"DEMO_ADMIN_TOKEN": token})
    assert httpx.get(engine.url + "/admin/fault", timeout=2).status_code == 401
    assert set_fault(engine.url, "stall").status_code == 401
    assert set_fault(engine.url, "stall", token="wrong").status_code == 401
    assert set_fault(engine.url, "stall", token=token).status_code == 200
    assert httpx.get(engine.url + "/health", timeout=2).status_code == 200  # only /admin/ is guarded
    engine.stop()
    assert token not in engine.stderr()
    assert "admin token required" in engine.stderr()


def test_webhook_receiver_keeps_and_prints_notifications(start_demo) -> None:
    webhook = start_demo.service("webhook")
    notification = {
        "version": "4",
        "groupKey": '{}:{alertname="AutoglmInferenceDown"}',
        "status": "firing",
        "receiver": "demo",
        "groupLabels": {"alertname": "AutoglmInferenceDown"},
        "commonLabels": {"alertname": "AutoglmInferenceDown", "severity": "critical"},
        "commonAnnotations": {"summary": "The inference service does not answer."},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "AutoglmInferenceDown", "severity": "critical", "target": "api"},
                "annotations": {"summary": "The inference service does not answer.", "runbook_url": "x"},
                "startsAt": "2025-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
            }
        ],
    }
    assert httpx.post(webhook.url + "/", json=notification, timeout=2).status_code == 200
    assert httpx.post(webhook.url + "/", content=b"{", timeout=2).status_code == 400

    kept = httpx.get(webhook.url + "/", timeout=2).json()
    assert len(kept) == 1
    assert (kept[0]["status"], kept[0]["alertname"], kept[0]["summary"]) == (
        "firing",
        "AutoglmInferenceDown",
        "The inference service does not answer.",
    )
    assert kept[0]["alerts"][0]["labels"]["target"] == "api"
    webhook.stop()
    printed = [json.loads(line) for line in webhook.stdout_path.read_text().splitlines()]
    assert [(p["status"], p["alertname"]) for p in printed] == [("firing", "AutoglmInferenceDown")]


# --- the request trace (--trace-file) -----------------------------------------------------------------

TOKEN_DELAY = 0.02  # the engine's seconds per token in the trace tests
TRACE_TOKENS = 10  # so that generating takes at least 0.2 s


def trace_points(path: Path) -> dict[str, list[dict]]:
    """The trace file's points by request, in file order; every line must be a point."""
    points: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        point = json.loads(line)
        assert set(point) <= {"ts", "stage", "request_id", "status"} and point["stage"] in STAGES, line
        assert isinstance(point["ts"], float) and abs(point["ts"] - time.time()) < 60, line
        points.setdefault(point["request_id"], []).append(point)
    return points


def stages_of(points: list[dict]) -> list[str]:
    return [point["stage"] for point in points]


def trace_collector(path: Path) -> LogsCollector:
    """The exporter's logs collector on the trace file, past its first run (which skips history)."""
    collector = LogsCollector((LogConfig("trace", str(path), service="open-autoglm", trace=True),))
    collector.collect()
    return collector


def stage_histogram(collector: LogsCollector, stage: str) -> dict[str, float | None]:
    registry = registry_of(collector.collect())
    labels = {"log": "trace", "stage": stage}
    values: dict[str, float | None] = {
        le: registry.get_sample_value("autoglm_trace_stage_duration_seconds_bucket", {**labels, "le": le})
        for le in ("0.1", "1.0", "+Inf")
    }
    values["count"] = registry.get_sample_value("autoglm_trace_stage_duration_seconds_count", labels)
    values["sum"] = registry.get_sample_value("autoglm_trace_stage_duration_seconds_sum", labels)
    values["invalid"] = registry.get_sample_value("autoglm_trace_invalid_lines_total", {"log": "trace"})
    return values


def test_trace_file_gives_the_exporter_stage_durations(start_demo, tmp_path: Path) -> None:
    trace = tmp_path / "traces" / "api-trace.log"  # its directory is created, like the log file's
    demo = start_demo(
        "--trace-file", str(trace), "--workers", "1", engine_args=("--token-delay", str(TOKEN_DELAY))
    )
    assert trace.exists() and trace.read_text() == ""  # opened at start, nothing traced yet
    collector = trace_collector(trace)

    answers = [demo.infer(max_tokens=TRACE_TOKENS) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    points = trace_points(trace)  # written before each answer: complete already
    assert list(points) == [answer.json()["request_id"] for answer in answers]
    for request in points.values():
        assert stages_of(request) == ["received", "queued", "dequeued", "generated", "done"]
        assert [p["ts"] for p in request] == sorted(p["ts"] for p in request)
        assert request[-1]["status"] == 200
        by_stage = {p["stage"]: p["ts"] for p in request}
        assert by_stage["generated"] - by_stage["dequeued"] >= TOKEN_DELAY * TRACE_TOKENS

    # Three at once for the one worker: the second and third wait in the Redis list while the
    # first and second generate, which is what `dequeued` measures.
    demo.fire(3, max_tokens=TRACE_TOKENS)
    wait_until(lambda: trace.read_text().count('"stage": "done"') == 6, timeout=10)
    assert len(trace_points(trace)) == 6

    histograms = {stage: stage_histogram(collector, stage) for stage in STAGES}
    assert histograms["received"]["count"] is None  # the first point only starts the clock
    assert histograms["error"]["count"] is None
    for stage in ("queued", "dequeued", "generated", "done"):
        assert histograms[stage]["count"] == histograms[stage]["+Inf"] == 6, (stage, histograms[stage])
        assert histograms[stage]["invalid"] == 0
    generation = TOKEN_DELAY * TRACE_TOKENS
    assert histograms["generated"]["0.1"] == 0 and histograms["generated"]["sum"] >= 6 * generation
    # Waiting behind one and two generations: at least one job waited longer than 0.1 s.
    assert histograms["dequeued"]["0.1"] <= 5 and histograms["dequeued"]["sum"] >= 1.5 * generation
    for stage in ("queued", "done"):  # the api's own work and Redis' round trips are quick
        assert histograms[stage]["1.0"] == 6, (stage, histograms[stage])


def test_failed_requests_end_their_trace_with_error(start_demo, tmp_path: Path) -> None:
    trace = tmp_path / "trace.log"
    demo = start_demo("--trace-file", str(trace))
    collector = trace_collector(trace)

    set_fault(demo.engine.url, "error")
    engine_failed = demo.infer()
    set_fault(demo.engine.url, "none")
    set_fault(demo.api.url, "error")
    api_failed = demo.infer()
    set_fault(demo.api.url, "none")
    assert demo.infer(max_tokens=2).status_code == 200
    demo.redis.kill()
    redis_failed = demo.infer()
    refused = httpx.post(demo.api.url + "/inference", json={"max_tokens": 2}, timeout=5)

    assert (engine_failed.status_code, api_failed.status_code) == (502, 500)
    assert (redis_failed.status_code, refused.status_code) == (503, 400)
    points = trace_points(trace)
    assert len(points) == 4  # a bad request (400) is not traced
    expected = [
        (engine_failed, ["received", "queued", "dequeued", "error"], 502),
        (api_failed, ["received", "error"], 500),
        (redis_failed, ["received", "queued", "error"], 503),
    ]
    for answer, stages, status in expected:
        request = points[answer.json()["request_id"]]
        assert (stages_of(request), request[-1]["status"]) == (stages, status)

    histograms = {stage: stage_histogram(collector, stage) for stage in STAGES}
    assert histograms["error"]["count"] == 3 and histograms["done"]["count"] == 1
    assert histograms["generated"]["count"] == 1  # only the request that succeeded
    assert histograms["queued"]["count"] == 3 and histograms["dequeued"]["count"] == 2
    assert histograms["error"]["invalid"] == 0


def test_api_without_a_usable_trace_file_refuses_to_start(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    started = subprocess.run(
        [sys.executable, "-m", "demo", "api", "--port", "0", "--trace-file", str(blocker / "trace.log")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert started.returncode == 2, started.stderr
    assert f"cannot open the trace file {blocker / 'trace.log'}" in started.stderr


# --- robustness: a sick engine, odd requests, odd notifications, clearing faults ------------------------


def not_http(conn: socket.socket, server: faultservers.FaultServer) -> None:
    """An engine that reads the request and answers bytes that are not HTTP."""
    faultservers.read_request(conn, server)
    conn.sendall(b"garbage\r\n\r\n")


def test_an_engine_answering_garbage_is_a_502_and_the_workers_survive_it(start_demo, redis_server) -> None:
    redis = redis_server()
    with faultservers.FaultServer(not_http) as engine:
        api = start_demo.service(
            "api",
            "--engine-url", engine.url,
            "--redis-url", f"redis://127.0.0.1:{redis.port}/0",
            "--queue", QUEUE,
            "--workers", "2",
            "--request-timeout", "5",
        )  # fmt: skip
        inference = {"prompt": "Hello", "max_tokens": 4}
        for _ in range(4):  # twice as many as workers: a worker that died would leave a 504 behind
            started = time.monotonic()
            answer = httpx.post(api.url + "/inference", json=inference, timeout=10)
            assert answer.status_code == 502, answer.text
            assert "the engine's answer to GET /v1/models is not HTTP" in answer.json()["error"]
            assert time.monotonic() - started < 2

        engine.handler = faultservers.answer(
            200, "[" * 100_000
        )  # json.loads raises RecursionError: no EngineError
        failed = httpx.post(api.url + "/inference", json=inference, timeout=10)
        assert (failed.status_code, failed.json()["error"]) == (502, "the worker failed: RecursionError")

        engine.handler = faultservers.openai(
            MODEL
        )  # the engine is fixed: the same workers get its answers now
        answer = httpx.post(api.url + "/inference", json=inference, timeout=10)
        assert (answer.status_code, answer.json()["text"]) == (200, "Hi")


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def test_a_get_with_a_body_never_has_its_body_read_as_the_next_request(start_demo) -> None:
    engine = start_demo.service("engine")
    bodies = {"Content-Length: 5": b"hello", "Transfer-Encoding: chunked": b"5\r\nhello\r\n0\r\n\r\n"}
    for header, body in bodies.items():
        with socket.create_connection(("127.0.0.1", engine.port), timeout=5) as sock:
            sock.sendall(
                f"GET /health HTTP/1.1\r\nHost: demo\r\n{header}\r\n\r\n".encode()
                + body
                + b"GET /v1/models HTTP/1.1\r\nHost: demo\r\n\r\n"
            )
            received = read_until_closed(sock)
        # The GET is answered, then the connection closes rather than parse "helloGET /v1/models".
        assert re.findall(rb"^HTTP/1\.1 (\d{3}) ", received, re.MULTILINE) == [b"200"], (header, received)
    assert httpx.get(engine.url + "/v1/models", timeout=2).status_code == 200


def test_webhook_refuses_alerts_that_are_not_a_list_of_objects(start_demo) -> None:
    webhook = start_demo.service("webhook")
    for alerts in (5, "firing", None, {"labels": {}}, [5], [{"labels": {}}, "x"]):
        answer = httpx.post(webhook.url + "/", json={"status": "firing", "alerts": alerts}, timeout=2)
        assert (answer.status_code, answer.json()) == (400, {"error": "alerts must be a list of objects"})
    assert httpx.get(webhook.url + "/", timeout=2).json() == []  # none of them was kept
    assert httpx.post(webhook.url + "/", json={"status": "resolved"}, timeout=2).status_code == 200


def test_clearing_the_slow_fault_releases_the_requests_it_delays(start_demo, tmp_path: Path) -> None:
    trace = tmp_path / "trace.log"
    demo = start_demo("--trace-file", str(trace))
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}
    with ThreadPoolExecutor(2) as pool:
        set_fault(demo.engine.url, "slow", seconds=30)
        engine_answer = pool.submit(
            httpx.post, demo.engine.url + "/v1/chat/completions", json=chat, timeout=5
        )
        wait_until(lambda: waiting(demo.engine_metrics()) == 1, timeout=5)  # counted, then delayed
        time.sleep(0.2)
        set_fault(demo.engine.url, "none")
        cleared = time.monotonic()
        assert engine_answer.result().status_code == 200
        assert time.monotonic() - cleared < 2

        set_fault(demo.api.url, "slow", seconds=30)
        api_answer = pool.submit(demo.infer, timeout=5)
        wait_until(lambda: '"received"' in trace.read_text(), timeout=5)  # the delay comes next
        time.sleep(0.2)
        set_fault(demo.api.url, "none")
        cleared = time.monotonic()
        assert api_answer.result().status_code == 200
        assert time.monotonic() - cleared < 2
