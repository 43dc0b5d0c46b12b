"""The engine collector against real HTTP servers on 127.0.0.1 serving recorded-format metrics."""

from __future__ import annotations

import socket
import string
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from autoglm_exporter.collectors.engine import FAILURE_REASONS, EngineCollector
from autoglm_exporter.config import EngineConfig
from autoglm_exporter.facts.engine import EngineFacts

from . import faultservers as fs
from .conftest import FIXTURES, assert_promtool_clean, free_port, registry_of, require_binary

ENGINE_FIXTURES = FIXTURES / "engine"


def fixture(name: str) -> bytes:
    return (ENGINE_FIXTURES / name).read_bytes()


def stall_body(waiting: float, generation: float) -> bytes:
    template = string.Template((ENGINE_FIXTURES / "vllm_stall.txt.template").read_text())
    return template.substitute(waiting=waiting, generation=generation).encode()


@dataclass
class MetricsServer:
    """What the fake engine answers; the test changes it between collects."""

    server: ThreadingHTTPServer
    status: int = 200
    body: bytes = b""
    trickle: float = 0.0  # seconds between lines of the body: a server that answers too slowly
    requests: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/metrics"

    def serve(self, body: bytes, status: int = 200) -> None:
        self.body, self.status = body, status


@pytest.fixture
def metrics_server() -> Iterator[Callable[[], MetricsServer]]:
    servers: list[MetricsServer] = []

    def start() -> MetricsServer:
        holder: list[MetricsServer] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                state = holder[0]
                state.requests.append(self.path)
                self.send_response(state.status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(state.body)))
                self.end_headers()
                try:
                    if not state.trickle:
                        self.wfile.write(state.body)
                        return
                    for line in state.body.splitlines(keepends=True)[:100]:  # bounded: 100 lines at most
                        self.wfile.write(line)
                        self.wfile.flush()
                        time.sleep(state.trickle)
                except OSError:
                    pass  # the collector gave up and closed the connection

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        holder.append(MetricsServer(server))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(holder[0])
        return holder[0]

    yield start
    for state in servers:
        state.server.shutdown()
        state.server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def _engine(url: str, name: str = "vllm", **kwargs) -> EngineConfig:
    kwargs.setdefault("timeout", 0.5)
    return EngineConfig(name, metrics_url=url, **kwargs)


def _registry(collector: EngineCollector) -> tuple[CollectorRegistry, EngineFacts]:
    result = collector.collect()
    return registry_of(result), result.facts


def _value(registry: CollectorRegistry, metric: str, engine: str = "vllm") -> float | None:
    return registry.get_sample_value(f"autoglm_engine_{metric}", {"engine": engine})


def _failures(registry: CollectorRegistry, engine: str = "vllm") -> dict[str, float | None]:
    return {
        reason: registry.get_sample_value(
            "autoglm_engine_failures_total", {"engine": engine, "reason": reason}
        )
        for reason in FAILURE_REASONS
    }


def test_a_healthy_vllm_is_mapped_and_summed_over_its_engine_cores(metrics_server) -> None:
    server = metrics_server()
    server.serve(fixture("vllm_healthy.txt"))
    registry, facts = _registry(EngineCollector((_engine(server.url, service="vllm"),)))
    assert _value(registry, "up") == 1
    assert _value(registry, "requests_waiting") == 3
    assert _value(registry, "requests_running") == 8
    assert _value(registry, "kv_cache_usage_ratio") == 0.5  # the fuller cache, a 0-1 ratio
    assert _value(registry, "generation_tokens_total") == 1500
    assert _value(registry, "prompt_tokens_total") == 6000
    assert _value(registry, "stalled") == 0
    assert _failures(registry) == dict.fromkeys(FAILURE_REASONS, 0)
    engine = facts.engines["vllm"]
    assert (engine.kind, engine.service, engine.up, engine.failure, engine.error) == (
        "vllm",
        "vllm",
        True,
        None,
        None,
    )
    assert (engine.waiting, engine.running, engine.kv_cache_usage) == (3, 8, 0.5)
    assert engine.generation_tokens == 1500 and engine.prompt_tokens == 6000
    assert engine.tokens_since_last is None and not engine.stalled and engine.stalled_since is None
    assert server.requests == ["/metrics"]


def test_the_deprecated_cache_name_is_used_when_the_new_one_is_absent(metrics_server) -> None:
    server = metrics_server()
    server.serve(fixture("vllm_deprecated_cache_name.txt"))
    registry, facts = _registry(EngineCollector((_engine(server.url),)))
    assert _value(registry, "kv_cache_usage_ratio") == 0.42
    assert facts.engines["vllm"].kv_cache_usage == 0.42
    assert _value(registry, "requests_running") == 4 and _value(registry, "requests_waiting") == 0


def test_sglang_names_are_mapped(metrics_server) -> None:
    server = metrics_server()
    server.serve(fixture("sglang.txt"))
    registry, facts = _registry(EngineCollector((_engine(server.url, "sglang", kind="sglang"),)))
    assert _value(registry, "up", "sglang") == 1
    assert _value(registry, "requests_waiting", "sglang") == 7
    assert _value(registry, "requests_running", "sglang") == 6
    assert _value(registry, "kv_cache_usage_ratio", "sglang") == 0.28
    assert _value(registry, "generation_tokens_total", "sglang") == 7557572
    assert _value(registry, "prompt_tokens_total", "sglang") == 8128902
    assert facts.engines["sglang"].kind == "sglang"


def test_sglang_names_mean_nothing_to_a_vllm_engine(metrics_server) -> None:
    server = metrics_server()
    server.serve(fixture("sglang.txt"))
    registry, facts = _registry(EngineCollector((_engine(server.url),)))
    assert _value(registry, "up") == 1  # it answered; but nothing of it is a vLLM series
    assert _value(registry, "requests_waiting") is None
    assert facts.engines["vllm"].error == "none of the vllm metrics are in the body"


def test_a_field_the_engine_does_not_expose_is_absent_not_zero(metrics_server) -> None:
    server = metrics_server()
    server.serve(fixture("vllm_partial.txt"))
    registry, facts = _registry(EngineCollector((_engine(server.url),)))
    assert _value(registry, "requests_running") == 1
    assert _value(registry, "requests_waiting") == 0
    for absent in ("kv_cache_usage_ratio", "generation_tokens_total", "prompt_tokens_total"):
        assert _value(registry, absent) is None, absent
    engine = facts.engines["vllm"]
    assert engine.kv_cache_usage is None and engine.generation_tokens is None
    assert _value(registry, "stalled") == 0


class Clock:
    """The collector's clock, moved by the test: readings an interval apart without waiting."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_waiting_requests_with_flat_tokens_are_a_stall_only_over_a_window(metrics_server) -> None:
    server = metrics_server()
    clock = Clock()
    collector = EngineCollector((_engine(server.url),), interval=10.0, clock=clock)
    server.serve(stall_body(waiting=3, generation=1000))
    first = collector.collect().facts.engines["vllm"]
    assert not first.stalled and first.tokens_since_last is None  # no verdict on one reading

    clock.now += 10
    registry, facts = _registry(collector)
    second = facts.engines["vllm"]
    assert second.tokens_since_last == 0 and second.flat_readings == 1
    assert not second.stalled and _value(registry, "stalled") == 0  # one flat reading is not a stall
    flat_since = clock.now
    assert second.stalled_since == flat_since

    clock.now += 10
    assert not collector.collect().facts.engines["vllm"].stalled  # two: not yet the window
    clock.now += 10
    registry, facts = _registry(collector)
    third = facts.engines["vllm"]
    assert third.stalled and third.flat_readings == 3 and _value(registry, "stalled") == 1
    assert third.stalled_since == flat_since  # since the first flat reading of the row

    server.serve(stall_body(waiting=3, generation=1012))
    clock.now += 10
    registry, facts = _registry(collector)
    moving = facts.engines["vllm"]
    assert not moving.stalled and moving.stalled_since is None and moving.tokens_since_last == 12
    assert moving.flat_readings == 0 and _value(registry, "stalled") == 0


def test_a_slow_engine_that_still_generates_never_blips_stalled(metrics_server) -> None:
    """Requests wait all along; a token comes every other reading: slow, not stalled, ever."""
    server = metrics_server()
    clock = Clock()
    collector = EngineCollector((_engine(server.url),), interval=10.0, clock=clock)
    tokens = 1000
    for reading in range(30):
        tokens += reading % 2  # flat at every other reading
        server.serve(stall_body(waiting=5, generation=tokens))
        registry, facts = _registry(collector)
        assert not facts.engines["vllm"].stalled and _value(registry, "stalled") == 0, reading
        clock.now += 10


def test_readings_taken_again_seconds_apart_do_not_make_a_window(metrics_server) -> None:
    server = metrics_server()
    clock = Clock()
    collector = EngineCollector((_engine(server.url),), interval=10.0, clock=clock)
    server.serve(stall_body(waiting=3, generation=1000))
    collector.collect()
    for _ in range(5):  # flat, but read again 2 s apart (a verdict confirming a new state)
        clock.now += 2
        engine = collector.collect().facts.engines["vllm"]
        assert not engine.stalled
    assert engine.flat_readings == 5
    clock.now += 10  # now the row spans its intervals
    assert collector.collect().facts.engines["vllm"].stalled


def test_an_idle_engine_or_a_restarted_counter_is_not_a_stall(metrics_server) -> None:
    server = metrics_server()
    collector = EngineCollector((_engine(server.url),))
    server.serve(stall_body(waiting=0, generation=500))
    collector.collect()
    idle = collector.collect().facts.engines["vllm"]
    assert idle.tokens_since_last == 0 and not idle.stalled  # nothing waits: flat tokens are fine

    server.serve(stall_body(waiting=2, generation=10))  # the engine restarted: its counter went down
    restarted = collector.collect().facts.engines["vllm"]
    assert restarted.tokens_since_last is None and restarted.flat_readings == 0
    assert collector.collect().facts.engines["vllm"].flat_readings == 1  # flat from the new counter on


def test_a_garbage_body_is_bad_body_and_down(metrics_server) -> None:
    server = metrics_server()
    server.serve(fixture("garbage.html"))
    registry, facts = _registry(EngineCollector((_engine(server.url),)))
    engine = facts.engines["vllm"]
    assert not engine.up and engine.failure == "bad_body"
    assert engine.error.startswith("not Prometheus text format")
    assert _value(registry, "up") == 0
    for absent in ("requests_waiting", "requests_running", "kv_cache_usage_ratio", "stalled"):
        assert _value(registry, absent) is None, absent
    assert _failures(registry) == {**dict.fromkeys(FAILURE_REASONS, 0), "bad_body": 1}


def test_a_body_over_the_size_limit_is_bad_body(metrics_server) -> None:
    server = metrics_server()
    line = b"# " + b"x" * 1022 + b"\n"
    server.serve(line * (9 * 1024))  # 9 MiB of comments: valid text, but too much of it
    registry, facts = _registry(EngineCollector((_engine(server.url, timeout=5.0),)))
    assert facts.engines["vllm"].failure == "bad_body"
    assert "larger than" in facts.engines["vllm"].error
    assert _value(registry, "up") == 0


def test_an_http_error_status_is_http_status(metrics_server) -> None:
    server = metrics_server()
    server.serve(b"Internal Server Error", status=500)
    registry, facts = _registry(EngineCollector((_engine(server.url),)))
    assert facts.engines["vllm"].failure == "http_status"
    assert "500" in facts.engines["vllm"].error
    assert _value(registry, "up") == 0
    assert _failures(registry)["http_status"] == 1


def test_a_refused_port_is_connect_refused() -> None:
    registry, facts = _registry(EngineCollector((_engine(f"http://127.0.0.1:{free_port()}/metrics"),)))
    assert facts.engines["vllm"].failure == "connect_refused"
    assert _value(registry, "up") == 0
    assert _failures(registry) == {**dict.fromkeys(FAILURE_REASONS, 0), "connect_refused": 1}


def test_a_server_that_never_answers_is_timeout_within_the_timeout(silent_port) -> None:
    collector = EngineCollector((_engine(f"http://127.0.0.1:{silent_port}/metrics", timeout=0.5),))
    started = time.monotonic()
    registry, facts = _registry(collector)
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 1.5
    assert facts.engines["vllm"].failure == "timeout"
    assert _value(registry, "up") == 0
    assert _failures(registry)["timeout"] == 1


def test_a_body_that_trickles_in_is_timeout_within_about_the_timeout(metrics_server) -> None:
    server = metrics_server()
    server.serve(fixture("vllm_healthy.txt"))
    server.trickle = 0.2  # each read returns in time, the whole body would take about 12 s
    collector = EngineCollector((_engine(server.url, timeout=0.5),))
    started = time.monotonic()
    registry, facts = _registry(collector)
    assert time.monotonic() - started < 1.5
    assert facts.engines["vllm"].failure == "timeout"
    assert "body not complete" in facts.engines["vllm"].error
    assert _value(registry, "up") == 0


def _head_a_byte_at_a_time(conn: socket.socket, server: fs.FaultServer) -> None:
    """Each byte of the answer's head 0.2 s after the last: every read returns in time, the head
    would take about 20 s."""
    fs.read_request(conn, server)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Pad: " + b"a" * 60 + b"\r\n\r\n"
    for byte in head:
        if server.stopped.wait(0.2):
            return
        conn.sendall(bytes([byte]))


def test_a_head_that_trickles_in_is_timeout_within_about_the_timeout() -> None:
    with fs.FaultServer(_head_a_byte_at_a_time) as server:
        collector = EngineCollector((_engine(f"{server.url}/metrics", timeout=0.5),))
        started = time.monotonic()
        registry, facts = _registry(collector)
        assert time.monotonic() - started < 5  # the whole head: about 20 s
    assert facts.engines["vllm"].failure == "timeout"
    assert "no answer within 0.5s" in facts.engines["vllm"].error
    assert _value(registry, "up") == 0


def test_an_engine_that_comes_back_is_up_and_keeps_its_failure_counts(metrics_server) -> None:
    server = metrics_server()
    collector = EngineCollector((_engine(server.url),))
    server.serve(b"busy", status=503)
    collector.collect()
    server.serve(fixture("vllm_healthy.txt"))
    registry, _ = _registry(collector)
    assert _value(registry, "up") == 1
    assert _failures(registry)["http_status"] == 1


def test_every_series_is_there_from_the_first_scrape_and_promtool_is_clean(metrics_server) -> None:
    server = metrics_server()
    server.serve(fixture("vllm_healthy.txt"))
    sglang = metrics_server()
    sglang.serve(fixture("sglang.txt"))
    collector = EngineCollector(
        (
            _engine(server.url),
            _engine(sglang.url, "sglang", kind="sglang"),
            _engine(f"http://127.0.0.1:{free_port()}/metrics", "gone"),
        )
    )
    registry, _ = _registry(collector)
    for name in ("vllm", "sglang", "gone"):
        assert _value(registry, "up", name) is not None
        assert None not in _failures(registry, name).values()
    text = generate_latest(registry)
    for spec in EngineCollector.metrics:
        assert f"# HELP {spec.exposed_name} ".encode() in text
    assert_promtool_clean(text)


def test_fixtures_are_valid_exposition_for_promtool() -> None:
    """The recorded-format fixtures themselves must be what a real engine could serve."""
    promtool = require_binary("promtool")
    for path in sorted(Path(ENGINE_FIXTURES).glob("*.txt")):
        checked = subprocess.run(
            [promtool, "check", "metrics"],
            input=path.read_bytes(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        # Engines' own names break lint rules (colons: exit 3); a parse error is exit 1.
        assert checked.returncode in (0, 3), (path, checked)
        assert b"error while linting" not in checked.stderr + checked.stdout, (path, checked)


def _vllm_032(waiting: float, awake: int = 1, level: str = "") -> bytes:
    """The page recorded from the real vLLM 0.32, with its queue and sleep state set."""
    page = (FIXTURES / "golden" / "vllm-0.32.0.metrics").read_text()
    page = page.replace(
        'vllm:num_requests_waiting{engine="0",model_name="tiny-llama"} 0.0',
        f'vllm:num_requests_waiting{{engine="0",model_name="tiny-llama"}} {waiting}',
    )
    for state in ("awake", "weights_offloaded", "discard_all"):
        value = float(awake) if state == "awake" else float(state == level)
        series = f'vllm:engine_sleep_state{{engine="0",model_name="tiny-llama",sleep_state="{state}"}}'
        page = page.replace(f"{series} {1.0 if state == 'awake' else 0.0}", f"{series} {value}")
    return page.encode()


def test_a_sleeping_vllm_is_said_and_its_waiting_requests_are_never_a_stall(metrics_server) -> None:
    """vLLM 0.32's sleep mode holds requests on purpose: the sleep state, not a stall."""
    server = metrics_server()
    clock = Clock()
    collector = EngineCollector((_engine(server.url),), interval=10.0, clock=clock)
    server.serve(_vllm_032(waiting=0))
    registry, facts = _registry(collector)
    assert facts.engines["vllm"].sleeping is False and _value(registry, "sleeping") == 0

    server.serve(_vllm_032(waiting=3, awake=0))  # level 0: scheduling paused
    for _ in range(5):  # flat tokens with requests waiting, over more than the stall window
        clock.now += 10
        registry, facts = _registry(collector)
        asleep = facts.engines["vllm"]
        assert asleep.sleeping and asleep.sleep_level == 0 and asleep.waiting == 3
        assert not asleep.stalled and asleep.flat_readings == 0 and _value(registry, "stalled") == 0
        assert _value(registry, "sleeping") == 1
    server.serve(_vllm_032(waiting=3, awake=0, level="discard_all"))
    assert collector.collect().facts.engines["vllm"].sleep_level == 2

    # Awake again with requests waiting and flat tokens: a stall is judged again, from a new row.
    server.serve(_vllm_032(waiting=3))
    clock.now += 10
    awake = collector.collect().facts.engines["vllm"]
    assert awake.sleeping is False and awake.flat_readings == 1


def test_an_engine_that_does_not_say_whether_it_sleeps_has_no_sleep_series(metrics_server) -> None:
    server = metrics_server()
    server.serve(fixture("vllm_healthy.txt"))  # written in 0.11's names: no engine_sleep_state
    registry, facts = _registry(EngineCollector((_engine(server.url),)))
    assert facts.engines["vllm"].sleeping is None and _value(registry, "sleeping") is None
