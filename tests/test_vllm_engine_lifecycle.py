"""The real vLLM's engine core asleep on purpose, then killed: the verdict says which, soon.

A vLLM of its own (tests/vllm_harness.py), with its development endpoints on
(VLLM_SERVER_DEV_MODE=1: POST /sleep and /wake_up; the CPU build pauses scheduling at sleep level 0).
Asleep, its requests wait and its tokens stay flat, which is no stall: the engine says it sleeps
(vllm:engine_sleep_state), and the verdict is `dependencies/engine_sleeping`, never engine_stalled or
worker_stuck. Killed (SIGKILL to VLLM::EngineCore), its API server answers 500, closes its port
seconds later and exits about a minute after that: the verdict names the dead engine core with its pid
at the default schedule (10 s readings) well before the API server exits, and keeps it after.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import sample, wait_until
from .vllm_harness import TEST_TIMEOUT, VllmServer, start_vllm

# Its own vLLM (development endpoints): with the real-engine tests, in a worker group of its own.
pytestmark = [pytest.mark.timeout(TEST_TIMEOUT), pytest.mark.real_engine, pytest.mark.xdist_group("vllm-dev")]

# The default schedule: a process reading every 10 s, and the one taken again 2 s after a new state.
# Room for a busy 2-core machine; the verdict is waited on, never slept for.
WITHIN = 60.0


@pytest.fixture(scope="module")
def dev_vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], VllmServer]]:
    """A vLLM with its development endpoints, started again when a test killed the last one."""
    servers: list[VllmServer] = []

    def running() -> VllmServer:
        if not servers or servers[-1].process.poll() is not None:
            if servers:
                servers[-1].stop()
            log = tmp_path_factory.mktemp("dev-vllm") / "vllm.log"
            servers.append(start_vllm(log, env={"VLLM_SERVER_DEV_MODE": "1"}))
        return servers[-1]

    yield running
    if servers:
        servers[-1].stop()


def _config(tmp_path: Path, vllm: VllmServer) -> Path:
    config = tmp_path / "autoglm.yml"
    config.write_text(
        f"""
# The machine's own load (a busy CI runner) must not become the verdict these tests expect.
collectors: {{system: {{enabled: false}}}}
services:
  - name: vllm
    match: {{cmdline: 'vllm\\.entrypoints\\.openai\\.api_server .*--port {vllm.port}( |$)', port: {vllm.port}}}
    port: {vllm.port}
targets:
  - {{name: generate, module: openai_chat, url: '{vllm.url}/v1/chat/completions', service: vllm,
     model: {vllm.model}}}
redis: []
engines: [{{name: vllm, service: vllm, metrics_url: '{vllm.url}/metrics'}}]
logs: []
forensics: {{directory: {tmp_path / "captures"}}}
"""
    )
    return config


def _healthy(exporter, vllm: VllmServer) -> None:
    wait_until(
        lambda: (
            exporter.get("/api/diagnosis", timeout=10).json()["healthy"]
            and sample(exporter.metrics(), "autoglm_probe_success", target="generate") == 1
        ),
        timeout=180,
    )


def _reason(exporter) -> str:
    verdict = exporter.get("/api/diagnosis", timeout=10).json()["verdict"] or {}
    return f"{verdict.get('layer')}/{verdict.get('reason')}"


def test_a_sleeping_engine_is_asleep_on_purpose_not_stalled(dev_vllm, start_exporter, tmp_path: Path) -> None:
    vllm = dev_vllm()
    exporter = start_exporter("--config.file", str(_config(tmp_path, vllm)))
    _healthy(exporter, vllm)
    assert sample(exporter.metrics(), "autoglm_engine_sleeping", engine="vllm") == 0

    assert httpx.post(f"{vllm.url}/sleep", params={"level": 0}, timeout=60).status_code == 200
    seen: list[str] = []
    try:
        # The prober's own generation waits on it: sleep level 0 takes requests but runs none.
        wait_until(
            lambda: sample(exporter.metrics(), "autoglm_engine_sleeping", engine="vllm") == 1, timeout=60
        )

        def named() -> bool:
            seen.append(_reason(exporter))
            return seen[-1] == "dependencies/engine_sleeping"

        wait_until(named, timeout=WITHIN + 30, interval=0.5)
        verdict = exporter.get("/api/diagnosis", timeout=10).json()["verdict"]
        assert "was put to sleep (level 0: scheduling paused)" in verdict["summary"]
        metrics = exporter.metrics()
        assert sample(metrics, "autoglm_engine_stalled", engine="vllm") == 0
        assert not {"stall/engine_stalled", "stall/worker_stuck"} & set(seen), seen
    finally:
        assert httpx.post(f"{vllm.url}/wake_up", timeout=60).status_code == 200
    wait_until(lambda: exporter.get("/api/diagnosis", timeout=10).json()["healthy"], timeout=WITHIN + 60)


def test_a_killed_engine_core_is_named_with_its_pid_before_its_api_server_exits(
    dev_vllm, start_exporter, tmp_path: Path
) -> None:
    vllm = dev_vllm()
    core = vllm.engine_core_pid()
    assert core is not None, f"no VLLM::EngineCore below the API server (pid {vllm.pid})"
    exporter = start_exporter("--config.file", str(_config(tmp_path, vllm)))
    _healthy(exporter, vllm)
    wait_until(lambda: sample(exporter.metrics(), "autoglm_process_worker_pid", service="vllm") == core)

    os.kill(core, signal.SIGKILL)
    killed_at = time.monotonic()
    seen: list[str] = []

    def named() -> bool:
        seen.append(_reason(exporter))
        return seen[-1] == "service/worker_died"

    try:
        wait_until(named, timeout=WITHIN, interval=0.5)
    except AssertionError:
        print("verdicts:", " -> ".join(dict.fromkeys(seen)), exporter.get("/api/diagnosis").json()["links"])
        raise
    named_after = time.monotonic() - killed_at
    verdict = exporter.get("/api/diagnosis", timeout=10).json()["verdict"]
    assert f"worker process VLLM::EngineCore (pid {core}) died while its parent lived" in verdict["summary"]
    assert any(f"its parent, vllm pid {vllm.pid}, outlived it" in line for line in verdict["evidence"])
    # No other cause was named on the way: at most the symptoms it explains.
    assert set(seen) <= {
        "None/None",
        "client/http_error",
        "client/reset",
        "network/not_listening",
        "service/worker_died",
    }, seen
    print(
        f"engine core {core} killed: named service/worker_died after {named_after:.1f} s ({' -> '.join(dict.fromkeys(seen))})"
    )

    # Its API server exits a minute later: the verdict stays on the dead core.
    wait_until(lambda: vllm.process.poll() is not None, timeout=180)
    wait_until(lambda: sample(exporter.metrics(), "autoglm_process_up", service="vllm") == 0, timeout=60)
    assert _reason(exporter) == "service/worker_died"
    assert "exited after it" in exporter.get("/api/diagnosis", timeout=10).json()["verdict"]["summary"]
