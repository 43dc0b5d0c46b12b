"""The demo with the real vLLM in place of the look-alike engine (`make demo-vllm`).

scripts/vllm/demo.sh wires the demo's API to the real vLLM on fixed ports; here the same API runs
on free ports against the session's real vLLM and a real redis-server: the seed's request goes
through the Redis queue to the real engine, whose own counters show the tokens, and the exporter's
inference probe (what `make run` sends every 10 s) succeeds.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from autoglm_exporter.collectors.probe import ProbeCollector
from autoglm_exporter.config import ExpectConfig, ProbeTarget

from .conftest import REPO, RedisServer, parse_metrics
from .support import free_port, start_logged, stop_process, wait_http_ok
from .vllm_harness import TEST_TIMEOUT, VllmServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT)]


def generated_tokens(vllm: VllmServer) -> float:
    samples = parse_metrics(vllm.metrics())
    return sum(value for (name, _), value in samples.items() if name == "vllm:generation_tokens_total")


def test_the_demo_api_answers_through_the_real_vllm(
    vllm_server: VllmServer, redis_server: Callable[..., RedisServer], tmp_path: Path
) -> None:
    redis = redis_server()
    port = free_port()
    log = tmp_path / "api.log"
    command = [
        sys.executable, "-m", "demo", "api", "--port", str(port),
        "--engine-url", vllm_server.url,
        "--redis-url", f"redis://127.0.0.1:{redis.port}/0",
        "--queue", "autoglm:requests",
        "--log-file", str(tmp_path / "error.log"),
        "--request-timeout", "60", "--engine-timeout", "60",
    ]  # fmt: skip
    api = start_logged(command, log, cwd=REPO)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health", api, log)
        before = generated_tokens(vllm_server)

        answer = httpx.post(
            f"http://127.0.0.1:{port}/inference", json={"prompt": "Hello", "max_tokens": 8}, timeout=90
        )

        assert answer.status_code == 200, (answer.text, log.read_text())
        assert isinstance(answer.json()["text"], str)
        assert generated_tokens(vllm_server) > before  # the real engine generated the answer
        target = ProbeTarget(
            "inference",
            "inference",
            f"http://127.0.0.1:{port}/inference",
            timeout=90,
            expect=ExpectConfig(json_field="text"),
        )
        outcome = ProbeCollector((target,)).collect().facts.targets["inference"].outcome
        assert outcome.success, outcome
    finally:
        stop_process(api, signal.SIGTERM)
