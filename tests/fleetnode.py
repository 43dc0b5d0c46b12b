"""One typical GPU node of a fleet, for its cardinality budget and the scale simulation.

Eight GPUs (the fake `pynvml`: this machine has none) and four inference services, each a demo
engine (a vLLM look-alike: its process, its port, its /metrics, an OpenAI-compatible client probe)
computing on two of the GPUs, all four queueing through one real redis-server; one error log each.
`node_page()` starts it all, waits until every collector has published, and returns the exporter's
/metrics page: what Prometheus stores for one node.

No pytest here: bench/fleet_scale.py uses it too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .support import REPO, find_binary, free_port, start_logged, stop_process, wait_http_ok, wait_until

GPUS = 8
SERVICES = 4
# The most series one such node's /metrics may have (tests/test_fleet_scale.py enforces it; the
# README's capacity figures are per node of this shape). Measured at 1,332: the headroom is for a
# few more series per GPU or per service, not for a label that multiplies them.
SERIES_BUDGET = 1600


def series_count(page: str) -> int:
    """Samples of an exposition page: the series Prometheus keeps for it (each scrape adds `up` and
    four more of its own)."""
    return sum(len(family.samples) for family in text_string_to_metric_families(page))


def _fake_nvml(directory: Path, engine_pids: list[int]) -> Path:
    """A `pynvml` module: eight H100s, GPUs 2i and 2i+1 running engine i."""
    directory.mkdir()
    (directory / "pynvml.py").write_text(
        f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml, FakeProcess, Scenario, gpu_uuid

_pids = {engine_pids!r}
_gpus = [
    FakeGpu(gpu_uuid(i), clock_reasons=0x2, processes=[FakeProcess(_pids[i // 2], 30 * 1024**3)])
    for i in range({GPUS})
]
sys.modules[__name__] = FakeNvml(Scenario(_gpus))
"""
    )
    return directory


def _config(tmp: Path, redis_port: int, engine_ports: list[int]) -> str:
    services, targets, engines, logs = [], [], [], []
    for i, port in enumerate(engine_ports):
        name = f"llm-{i}"
        services.append(
            f"  - {{name: {name}, match: {{cmdline: '-m demo engine --port {port}'}}, port: {port},"
            f" depends_on: [redis, {name}-engine]}}"
        )
        targets.append(
            f"  - {{name: {name}-chat, module: openai_chat, url: 'http://127.0.0.1:{port}/v1/chat/completions',"
            f" service: {name}, stream: true, timeout: 5s}}"
        )
        engines.append(
            f"  - {{name: {name}-engine, kind: vllm, metrics_url: 'http://127.0.0.1:{port}/metrics',"
            f" service: {name}, timeout: 2s}}"
        )
        logs.append(f"  - {{name: {name}-error, path: '{tmp / f'{name}.log'}', service: {name}}}")
    return "\n".join(
        [
            "global: {interval: 2s, timeout: 8s}",
            "services:",
            *services,
            "targets:",
            *targets,
            "redis:",
            f"  - {{name: redis, address: '127.0.0.1:{redis_port}', queues: [{{key: 'autoglm:requests', type: list}}]}}",
            "engines:",
            *engines,
            "logs:",
            *logs,
            f"forensics: {{directory: '{tmp / 'captures'}'}}",
            "environment: {baselines: {}}",
            "",
        ]
    )


@contextmanager
def _process(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = start_logged(command, log, env=env, cwd=REPO)
    try:
        yield process
    finally:
        stop_process(process)


def _complete(page: str) -> bool:
    """Every collector has published: eight GPUs, four probes finished, four engines read."""
    names = {f.name: f for f in text_string_to_metric_families(page)}

    def count(name: str) -> int:
        family = names.get(name)
        return len(family.samples) if family else 0

    return (
        count("autoglm_gpu_info") == GPUS
        and count("autoglm_probe_success") == SERVICES
        and all(s.value == 1 for s in names["autoglm_probe_success"].samples)
        and count("autoglm_engine_up") == SERVICES
        and count("autoglm_environment_baseline_timestamp_seconds") >= 1
    )


def node_page(tmp: Path, redis_server: str = "redis-server") -> str:
    """Start one node of eight GPUs and four services; its exporter's /metrics once complete."""
    binary = find_binary(redis_server)
    if binary is None:
        raise RuntimeError(f"{redis_server} is not installed (scripts/install-deps.sh installs it)")
    tmp.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        redis_port = free_port()
        redis_args = [
            binary,
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        stack.enter_context(_process([*redis_args, "--dir", str(tmp)], tmp / "redis.log"))
        ports = [free_port() for _ in range(SERVICES)]
        engines = []
        for port in ports:
            command = [sys.executable, "-m", "demo", "engine", "--port", str(port)]
            engines.append(stack.enter_context(_process(command, tmp / f"engine-{port}.log")))
        for port in ports:
            wait_until(
                lambda p=port: httpx.get(f"http://127.0.0.1:{p}/health").status_code == 200, timeout=30
            )
        for i in range(SERVICES):
            (tmp / f"llm-{i}.log").touch()
        config = tmp / "node.yml"
        config.write_text(_config(tmp, redis_port, ports))
        nvml = _fake_nvml(tmp / "fake-nvml", [e.pid for e in engines])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(nvml), os.environ.get("PYTHONPATH")])),
        }
        port = free_port()
        command = [sys.executable, "-m", "autoglm_exporter", f"--config.file={config}"]
        exporter = stack.enter_context(
            _process([*command, f"--web.listen-address=127.0.0.1:{port}"], tmp / "exporter.log", env)
        )
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/-/ready", exporter, tmp / "exporter.log", timeout=30)
        return str(wait_until(lambda: _page_if_complete(f"{url}/metrics"), timeout=90, interval=0.5))
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow


def _page_if_complete(url: str) -> str:
    page = httpx.get(url, timeout=10).text
    return page if _complete(page) else ""
