"""Pytest fixtures and test-only helpers: a real exporter process, real redis-servers, real binaries.

The helpers the bench scripts use too (free ports, bounded waits, starting and stopping processes)
live in tests/support.py; they are re-exported here, where the tests have always imported them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from .support import FIXTURES as FIXTURES  # re-exported: tests import these two from here
from .support import REPO as REPO
from .support import START_WITHIN, find_binary, free_port, start_logged, stop_process, wait_until
from .vllm_harness import vllm_server as vllm_server  # one real vLLM for the test session

# The longest end-to-end runs, started first: they mostly wait on alert timing, and `make test`
# (pytest-xdist) runs the rest of the suite beside them instead of after them.
RUN_FIRST = ("tests/test_e2e_paging.py", "tests/test_fleet.py")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test of the real vLLM (the session's `vllm_server`) is marked `real_engine` and kept in one
    xdist group, so the one server starts once, on one worker; the longest runs go first."""
    for item in items:
        if "vllm_server" in item.fixturenames:
            item.add_marker(pytest.mark.real_engine)
            item.add_marker(pytest.mark.xdist_group("vllm"))

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return RUN_FIRST.index(path) if path in RUN_FIRST else len(RUN_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text -> {(sample name, sorted labels): value}."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


class _FixedFamilies:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


def registry_of(result: Any) -> CollectorRegistry:
    """A registry serving one collector Result's families, to read with get_sample_value."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FixedFamilies(result.families))  # type: ignore[arg-type]
    return registry


def assert_promtool_clean(exposition: bytes) -> None:
    """`promtool check metrics` must print nothing at all for our exposition."""
    checked = subprocess.run(
        [require_binary("promtool"), "check", "metrics"], input=exposition, capture_output=True, timeout=30
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b""), checked


def require_binary(name: str) -> str:
    """A real component the tests need. Missing is a failure, never a skip: `make test` installs it."""
    path = find_binary(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs it (see README)")
    return path


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`autoglm-exporter check-config PATH` as a user runs it."""
    command = [sys.executable, "-m", "autoglm_exporter", "check-config", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@dataclass
class ExporterProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def get(self, path: str = "/metrics", **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("timeout", 5.0)
        return httpx.get(self.url + path, **kwargs)

    def metrics(self) -> dict:
        response = self.get()
        response.raise_for_status()
        return parse_metrics(response.text)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        return stop_process(self.process, sig, timeout)


@pytest.fixture
def start_exporter(tmp_path: Path) -> Iterator[Callable[..., ExporterProcess]]:
    """Start the real exporter (`python -m autoglm_exporter`) and wait until it is ready."""
    started: list[ExporterProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        scheme: str = "http",
        **http: Any,
    ) -> ExporterProcess:
        port = free_port()
        log_path = tmp_path / f"exporter-{len(started)}.log"
        full_env = {**os.environ, **(env or {})}
        command = [sys.executable, "-m", "autoglm_exporter", *args]
        if not any(
            a.startswith("--web.listen-address") for a in args
        ) and "AUTOGLM_EXPORTER_WEB_LISTEN_ADDRESS" not in (env or {}):
            command.append(f"--web.listen-address=127.0.0.1:{port}")
        elif env and "AUTOGLM_EXPORTER_WEB_LISTEN_ADDRESS" in env:
            port = int(env["AUTOGLM_EXPORTER_WEB_LISTEN_ADDRESS"].rsplit(":", 1)[1])
        process = start_logged(command, log_path, env=full_env, cwd=tmp_path)
        exporter = ExporterProcess(process, port, log_path, scheme)
        started.append(exporter)
        if wait_ready:

            def ready() -> bool:
                assert process.poll() is None, f"exporter exited early:\n{exporter.log()}"
                return exporter.get("/-/ready", **http).status_code == 200

            wait_until(ready, timeout=START_WITHIN)
        return exporter

    yield start
    for exporter in started:
        exporter.stop(signal.SIGKILL)


@pytest.fixture
def child_processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real helper processes (python -c CODE); all are killed after the test."""
    children: list[subprocess.Popen[bytes]] = []

    def spawn(code: str, *argv: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE)
        children.append(child)
        return child

    yield spawn
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(5)
        if child.stdout:
            child.stdout.close()


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int
    password: str | None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5, decode_responses=True
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)


# The distribution's packaged interpreter, stripped of its symbols (Debian's python3.11-minimal,
# which scripts/install-deps.sh installs): py-spy names fewer of its C functions than a self-built one's.
DEBIAN_PYTHON = "/usr/bin/python3.11"


@pytest.fixture(params=["venv", "debian"])
def interpreter(request: pytest.FixtureRequest) -> str:
    """A Python to run a real service with: the venv's (often self-built) or Debian's stripped one."""
    if request.param == "venv":
        return sys.executable
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        pytest.fail(f"{DEBIAN_PYTHON} is not installed: run `make test`, which installs python3.11-minimal")
    return DEBIAN_PYTHON


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start real redis-servers on free ports (no persistence); all are killed after the test."""
    binary = require_binary("redis-server")
    started: list[RedisServer] = []

    def start(password: str | None = None, *extra: str) -> RedisServer:
        port = free_port()
        data = tmp_path / f"redis-{port}"
        data.mkdir()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(data), *extra]
        if password:
            args += ["--requirepass", password]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = RedisServer(process, port, password)
        started.append(server)

        def answers() -> bool:
            assert process.poll() is None, "redis-server exited early"
            try:
                return bool(server.client().ping())
            except redis.RedisError:
                return False

        wait_until(answers, timeout=START_WITHIN)
        return server

    yield start
    for server in started:
        server.kill()
