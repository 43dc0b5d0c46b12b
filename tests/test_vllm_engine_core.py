"""The real vLLM's engine core stopped while its API server answers: the verdict names the core.

vLLM (its CPU build, tests/vllm_harness.py) serves from an API server and computes in a child
process that renames itself `VLLM::EngineCore`. SIGSTOP that child and `/health` stays 200 while
every generation hangs. With the default schedule (10 s readings, `hang_after` 5 s) the exporter
must name the engine core with its pid and state T and take the engine core's stacks. The core is
continued afterwards (the session's other tests share the server).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from .conftest import sample, wait_until
from .vllm_harness import TEST_TIMEOUT, VllmServer

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

# Readings at the default 10 s interval: a hung probe (5 s), then two process readings, with room
# for a busy 2-core machine. The verdict is waited on, never slept for.
WITHIN = 90.0


def _config(tmp_path: Path, vllm: VllmServer) -> Path:
    """The built-in defaults for vLLM (the same rules, probes and schedule), on the harness's port."""
    config = tmp_path / "autoglm.yml"
    config.write_text(
        f"""
# The machine's own load (a busy CI runner) must not become the verdict these tests expect.
collectors: {{system: {{enabled: false}}}}
services:
  - name: vllm
    match: {{cmdline: 'vllm\\.entrypoints|(^|/)vllm serve', port: {vllm.port}}}
    port: {vllm.port}
targets:
  - {{name: vllm-generate, module: openai_chat, url: '{vllm.url}/v1/chat/completions', layer: dependencies,
     service: vllm}}
  - {{name: vllm-health, module: http, url: '{vllm.url}/health', layer: dependencies, service: vllm, timeout: 5s}}
redis: []
engines: [{{name: vllm, service: vllm, metrics_url: '{vllm.url}/metrics'}}]
logs: []
forensics: {{directory: {tmp_path / "captures"}}}
"""
    )
    return config


def test_a_stopped_engine_core_is_named_with_its_pid_and_state_and_its_stacks_taken(
    vllm_server: VllmServer, start_exporter, tmp_path: Path
) -> None:
    core = vllm_server.engine_core_pid()
    assert core is not None, f"no VLLM::EngineCore below the API server (pid {vllm_server.pid})"
    exporter = start_exporter("--config.file", str(_config(tmp_path, vllm_server)))

    def diagnosis() -> dict:
        return exporter.get("/api/diagnosis", timeout=10).json()

    def reason() -> str | None:
        return (diagnosis()["verdict"] or {}).get("reason")

    wait_until(
        lambda: (
            diagnosis()["healthy"]
            and sample(exporter.metrics(), "autoglm_probe_success", target="vllm-generate") == 1
        ),
        timeout=120,
    )
    assert sample(exporter.metrics(), "autoglm_process_worker_pid", service="vllm") == core

    os.kill(core, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        wait_until(lambda: reason() == "worker_stuck", timeout=WITHIN)
        named_after = time.monotonic() - stopped_at
        verdict = diagnosis()["verdict"]
        assert f"worker process VLLM::EngineCore (pid {core}, state T) is stopped" in verdict["summary"]
        assert any(line.startswith(f"pid {core} VLLM::EngineCore: state T") for line in verdict["evidence"])
        metrics = exporter.metrics()
        assert sample(metrics, "autoglm_process_worker_state", service="vllm", state="stopped") == 1
        assert sample(metrics, "autoglm_process_worker_pid", service="vllm") == core
        # The API server still says it is healthy: no proof of life.
        assert httpx.get(f"{vllm_server.url}/health", timeout=10).status_code == 200

        captures = tmp_path / "captures"
        wait_until(lambda: any(captures.glob("*.json")), timeout=WITHIN)
        saved = json.loads(next(captures.glob("*.json")).read_text())
        assert saved["pid"] == core and all(dump["pid"] == core for dump in saved["dumps"])
        assert reason() == "worker_stuck"
        print(f"engine core {core} stopped: named stall/worker_stuck after {named_after:.1f} s")
    finally:
        os.kill(core, signal.SIGCONT)
    wait_until(lambda: vllm_server.chat(timeout=30).status_code == 200, timeout=120)
    wait_until(lambda: reason() is None, timeout=WITHIN)
