"""The monitor never falls over: a reload is a transaction, stopping never waits for what hangs,
and the exporter watches its own process."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from autoglm_exporter.collectors.base import Collector, Result
from autoglm_exporter.core.runner import CollectorRunner
from autoglm_exporter.core.scheduler import CollectorScheduler
from autoglm_exporter.core.store import Store
from autoglm_exporter.metrics.spec import gauge

from .conftest import parse_metrics, sample, wait_until
from .faultservers import FaultServer, answer
from .support import FIXTURES, free_port

QUIET = """
global: {interval: 300ms, timeout: 2s, jitter: 0}
services: []
targets: []
redis: []
engines: []
logs: []
collectors:
  gpu: {enabled: false}
  environment: {enabled: false}
  container: {enabled: false}
"""

BAD_FILES: dict[str, bytes] = {
    "not_utf8": b"global:\n  interval: \xff10s\n",
    "deep": ("a: " + "[" * 20000 + "]" * 20000).encode(),
    "huge_number": ("redis: [{name: r, db: " + "9" * 5000 + "}]").encode(),
    "parses_but_cannot_run": b"global: {interval: 100000000000000}\n",
    "unknown_key": b"globl: {}\n",
    "empty": b"",
    "only_comments": b"# global: {interval: 10s}\n",
    "log_is_a_directory": b"logs: [{name: l, path: /tmp}]\n",
}


def _last_success(exporter, collector: str) -> float:
    return sample(
        exporter.metrics(), "autoglm_exporter_collector_last_success_timestamp_seconds", collector=collector
    )


def _collecting_after(exporter, moment: float) -> bool:
    return _last_success(exporter, "system") > moment


@pytest.mark.parametrize("how", ["sighup", "post"])
def test_a_bad_reload_keeps_collecting_and_says_so(start_exporter, tmp_path: Path, how: str) -> None:
    config = tmp_path / "autoglm.yml"
    config.write_text(QUIET)
    exporter = start_exporter(f"--config.file={config}")
    for name, content in BAD_FILES.items():
        config.write_bytes(content)
        before = time.time()
        if how == "post":
            response = httpx.post(exporter.url + "/-/reload", timeout=30)
            assert response.status_code == 500, name
            assert "bad config" in response.text and "Traceback" not in response.text
        else:
            exporter.process.send_signal(signal.SIGHUP)
        wait_until(lambda: sample(exporter.metrics(), "autoglm_exporter_config_last_reload_successful") == 0)
        wait_until(lambda moment=before: _collecting_after(exporter, moment))  # collection goes on
        assert exporter.process.poll() is None, exporter.log()
        config.write_text(QUIET)  # a good file again: the next reload succeeds
        assert httpx.post(exporter.url + "/-/reload", timeout=30).status_code == 200
        assert sample(exporter.metrics(), "autoglm_exporter_config_last_reload_successful") == 1
    assert "Traceback" not in exporter.log()


def test_a_reload_keeps_unchanged_collectors_and_swaps_changed_ones(start_exporter, tmp_path: Path) -> None:
    config = tmp_path / "autoglm.yml"
    config.write_text(QUIET + "  system: {interval: 1h}\n")
    exporter = start_exporter(f"--config.file={config}")
    system_before = _last_success(exporter, "system")
    process_before = _last_success(exporter, "process")
    # Only the process collector changes (a service to watch appears).
    config.write_text(
        QUIET.replace("services: []", "services: [{name: me, match: {pidfile: /nonexistent}}]")
        + "  system: {interval: 1h}\n"
    )
    reloaded_at = time.time()
    assert httpx.post(exporter.url + "/-/reload", timeout=30).status_code == 200
    wait_until(lambda: sample(exporter.metrics(), "autoglm_process_up", service="me") == 0)
    assert _last_success(exporter, "process") > max(process_before, reloaded_at - 1)
    # The unchanged system collector kept its schedule: not run again by the reload.
    assert _last_success(exporter, "system") == system_before


def _engine_config(api_port: int, engine_port: int, engine_interval: str) -> str:
    return f"""
global: {{interval: 600s, timeout: 3s, jitter: 0}}
collectors:
  engine: {{interval: {engine_interval}}}
  system: {{enabled: false}}
  gpu: {{enabled: false}}
  environment: {{enabled: false}}
  container: {{enabled: false}}
services:
  - {{name: api, match: {{port: {api_port}}}, depends_on: [engine]}}
engines:
  - {{name: engine, kind: vllm, metrics_url: 'http://127.0.0.1:{engine_port}/metrics'}}
targets: []
redis: []
logs: []
"""


def _verdict(exporter) -> tuple[str, str] | None:
    verdict = exporter.get("/api/diagnosis").json()["verdict"]
    return (verdict["layer"], verdict["reason"]) if verdict else None


def test_a_reload_that_moves_a_dependency_is_judged_by_the_new_collectors_first_reading(
    start_exporter, tmp_path: Path
) -> None:
    """The engine moved to another port and the config followed it: the new engine collector's
    first reading clears the old config's engine_down at once; the engine is read every 10 minutes
    after the reload, so waiting for a second reading would keep the old fault named that long."""
    metrics = (FIXTURES / "engine" / "vllm_healthy.txt").read_text()
    with (
        FaultServer(answer(200, "{}")) as api,
        FaultServer(answer(200, metrics, "text/plain; version=0.0.4")) as engine,
    ):
        config = tmp_path / "autoglm.yml"
        config.write_text(_engine_config(api.port, free_port(), "1s"))  # where it was: nothing listens
        exporter = start_exporter(f"--config.file={config}")
        wait_until(lambda: _verdict(exporter) == ("dependencies", "engine_down"), timeout=60)

        config.write_text(_engine_config(api.port, engine.port, "600s"))
        assert httpx.post(exporter.url + "/-/reload", timeout=30).status_code == 200
        wait_until(lambda: exporter.get("/api/diagnosis").json()["healthy"], timeout=60)
        history = exporter.get("/api/diagnosis").json()["history"]
        assert [c["reason"] for c in history if c["kind"] == "verdict"] == ["engine_down", None], history


def test_a_config_read_that_blocks_fails_the_reload_and_collection_goes_on(
    start_exporter, tmp_path: Path
) -> None:
    config = tmp_path / "autoglm.yml"
    config.write_text(QUIET)
    exporter = start_exporter(f"--config.file={config}")
    config.unlink()
    os.mkfifo(config)  # opening it for reading blocks until a writer comes: a hung mount
    before = time.time()
    response = httpx.post(exporter.url + "/-/reload", timeout=60)
    assert response.status_code == 500
    assert "did not return within" in response.text and str(config) in response.text
    assert sample(exporter.metrics(), "autoglm_exporter_config_last_reload_successful") == 0
    wait_until(lambda: _collecting_after(exporter, before))  # collection goes on
    # While that read still hangs, a reload (SIGHUP too) fails at once instead of piling up threads.
    assert httpx.post(exporter.url + "/-/reload", timeout=60).status_code == 500
    exporter.process.send_signal(signal.SIGHUP)
    # The mount comes back (a writer opens the FIFO and closes it); a good file reloads again.
    os.close(os.open(config, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO, not a hang, if no reader waits
    config.unlink()
    config.write_text(QUIET)
    wait_until(lambda: httpx.post(exporter.url + "/-/reload", timeout=60).status_code == 200)
    assert sample(exporter.metrics(), "autoglm_exporter_config_last_reload_successful") == 1
    assert exporter.process.poll() is None and "Traceback" not in exporter.log()


def _kept_and_added(broken: str, dead_port: int, folder: Path, added: dict[str, str]) -> str:
    """A config whose `kept` target, Redis instance, engine and log fail (or grow) steadily, plus
    the items of `added` (what a reload changes)."""
    sections = {
        "targets": f"{{name: kept, url: '{broken}/', timeout: 5s}}",
        "redis": f"{{name: kept, address: '127.0.0.1:{dead_port}', timeout: 1s}}",
        "engines": f"{{name: kept, metrics_url: '{broken}/metrics'}}",
        "logs": f"{{name: kept, path: '{folder / 'kept.log'}'}}",
    }
    text = QUIET.replace("interval: 300ms", "interval: 200ms")
    for section, item in sections.items():
        items = [item] + ([added[section]] if section in added else [])
        text = text.replace(f"{section}: []", f"{section}: [{', '.join(items)}]")
    return text


# What the kept items have counted: none of it may start again at 0 when another item changes.
KEPT = (
    ("autoglm_probe_request_duration_seconds_count", {"target": "kept"}),
    ("autoglm_probe_failures_total", {"target": "kept", "reason": "http_status"}),
    ("autoglm_probe_consecutive_failures", {"target": "kept"}),
    ("autoglm_redis_failures_total", {"redis": "kept", "reason": "connect_refused"}),
    ("autoglm_engine_failures_total", {"engine": "kept", "reason": "http_status"}),
)


def test_a_reload_that_changes_one_item_keeps_the_state_of_the_others(
    start_exporter, tmp_path: Path, redis_server
) -> None:
    redis, dead_port = redis_server(), free_port()
    with FaultServer(answer(500, "{}")) as broken, FaultServer(answer(200, "{}")) as healthy:
        config, log = tmp_path / "autoglm.yml", tmp_path / "kept.log"
        log.write_text("")
        config.write_text(_kept_and_added(broken.url, dead_port, tmp_path, {}))
        exporter = start_exporter(f"--config.file={config}")

        def kept(samples: dict) -> list[float]:
            return [sample(samples, name, **labels) or 0.0 for name, labels in KEPT]

        wait_until(lambda: min(kept(exporter.metrics())) >= 3, timeout=30)
        with log.open("a") as handle:
            handle.write("one\ntwo\nthree\n")
        wait_until(lambda: sample(exporter.metrics(), "autoglm_log_lines_total", log="kept") == 3)

        added = {
            "targets": f"{{name: added, url: '{healthy.url}/'}}",
            "redis": f"{{name: added, address: '{redis.address}'}}",
            "engines": f"{{name: added, metrics_url: '{healthy.url}/metrics'}}",
            "logs": f"{{name: added, path: '{tmp_path / 'added.log'}'}}",
        }
        config.write_text(_kept_and_added(broken.url, dead_port, tmp_path, added))
        before = kept(exporter.metrics())
        assert httpx.post(exporter.url + "/-/reload", timeout=30).status_code == 200
        with log.open("a") as handle:  # lines written around the reload are read once, none lost
            handle.write("four\nfive\n")

        def every_added_item_published() -> dict | None:
            samples = exporter.metrics()
            found = (
                sample(samples, "autoglm_probe_success", target="added"),
                sample(samples, "autoglm_redis_up", redis="added"),
                sample(samples, "autoglm_engine_up", engine="added"),
                sample(samples, "autoglm_log_lines_total", log="added"),
            )
            return samples if None not in found else None

        after = kept(wait_until(every_added_item_published, timeout=30))
        assert all(a >= b for a, b in zip(after, before, strict=True)), list(
            zip(KEPT, before, after, strict=True)
        )
        wait_until(lambda: sample(exporter.metrics(), "autoglm_log_lines_total", log="kept") == 5)


VALUE = gauge("autoglm_test_value", "A value the test collector reports.")


@dataclass(frozen=True)
class Item:
    name: str
    setting: int = 0


class Counting(Collector):
    """Counts its runs per item; a run may wait at a gate (a probe still waiting for its answer)."""

    name = "counting"
    metrics = (VALUE,)
    items_attribute = "items"
    state_per_item = ("runs",)

    def __init__(self, items: tuple[Item, ...], gate: threading.Event | None = None) -> None:
        self.items, self.gate, self.calls = items, gate, 0
        self.settings = (items,)
        self.runs = {item.name: 0 for item in items}

    def collect(self) -> Result:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(30)
        for item in self.items:
            self.runs[item.name] += 1
        return Result([VALUE.single(self.runs.get("kept", -1))])


def test_a_runner_that_succeeds_another_waits_for_its_run_then_adopts_what_it_counted() -> None:
    store = Store()
    store.set_collectors(["counting"])
    gate = threading.Event()
    gate.set()
    old = CollectorRunner(Counting((Item("kept"), Item("changed")), gate), store, timeout=30)
    assert old.run_once()
    gate.clear()
    old.trigger()  # a run in flight when the reload comes
    wait_until(lambda: old.collector.calls == 2)
    new = CollectorRunner(Counting((Item("kept"), Item("changed", 1))), store, timeout=30, succeeds=old)
    old.retire()
    new.trigger()  # the old run still holds the worker: no second run beside it
    assert new.collector.calls == 0
    # A second reload before the first new runner ever ran: its successor adopts through it.
    newer = CollectorRunner(Counting((Item("kept"), Item("changed", 2))), store, timeout=30, succeeds=new)
    new.retire()
    gate.set()
    wait_until(newer.run_once)  # a run once the old one has let the worker go
    # The kept item counts on from the old runs (the one in flight included); the changed one anew.
    assert newer.collector.runs == {"kept": 3, "changed": 1}
    assert new.collector.calls == 0
    assert _page(store)[("autoglm_test_value", ())] == 3  # the retired runner's late result was not published


def test_a_read_again_pending_at_a_reload_runs_the_new_collector() -> None:
    store = Store()
    store.set_collectors(["counting"])
    old = CollectorRunner(Counting((Item("kept"),)), store, timeout=30)
    scheduler = CollectorScheduler()
    try:
        scheduler.start([(old, 3600.0)], 0.0)
        wait_until(lambda: old.collector.calls == 1)
        scheduler.read_again_soon(["counting"], 1.0)
        new = CollectorRunner(Counting((Item("kept", 1),)), store, timeout=30)
        scheduler.update([(new, 3600.0)], 0.0)
        wait_until(lambda: new.collector.calls == 2)  # at once (changed), then the read-again
        assert old.collector.calls == 1
    finally:
        scheduler.stop()


def _page(store: Store) -> dict:
    return parse_metrics(store.render()[0].decode())


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """Accepts connections and never answers (a hung service)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    stop.set()
    thread.join(5)
    for connection in accepted:
        connection.close()
    listener.close()


def test_sigterm_while_a_probe_waits_exits_long_before_the_probe_would_end(
    start_exporter, tmp_path: Path, silent_server: tuple[int, list[socket.socket]]
) -> None:
    port, accepted = silent_server
    config = tmp_path / "autoglm.yml"
    config.write_text(
        QUIET.replace(
            "targets: []",
            f"targets: [{{name: hung, module: inference, url: 'http://127.0.0.1:{port}/inference', timeout: 60s}}]",
        )
    )
    exporter = start_exporter(f"--config.file={config}", wait_ready=False)
    wait_until(lambda: accepted, timeout=30)  # the probe is connected and waiting for its answer
    exporter.process.send_signal(signal.SIGTERM)
    # The probe would wait 60 s; the exporter is gone long before, with exit code 0.
    assert exporter.process.wait(timeout=30) == 0


def test_sigterm_kills_a_hung_nvidia_smi_with_its_process_group(start_exporter, tmp_path: Path) -> None:
    pid_file = tmp_path / "smi.pid"
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        f"#!{sys.executable}\nimport os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n"
    )
    fake.chmod(0o755)
    config = tmp_path / "autoglm.yml"
    config.write_text(
        QUIET.replace("gpu: {enabled: false}", "gpu: {enabled: true, timeout: 90s}")
        + f"gpu: {{nvml: false, nvidia_smi: {fake}, call_timeout: 60s}}\n"
    )
    exporter = start_exporter(f"--config.file={config}", wait_ready=False)
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=30)
    smi_pid = int(pid_file.read_text())
    exporter.process.send_signal(signal.SIGTERM)
    assert exporter.process.wait(timeout=30) == 0

    def gone() -> bool:
        try:
            os.kill(smi_pid, 0)
        except ProcessLookupError:
            return True
        return open(f"/proc/{smi_pid}/stat").read().split(")")[-1].split()[0] == "Z"

    wait_until(gone, timeout=10)


def test_the_exporter_exports_its_own_process_and_the_configured_chain(start_exporter) -> None:
    exporter = start_exporter()
    page = exporter.get().text
    samples = parse_metrics(page)
    for name in (
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "autoglm_exporter_threads",
    ):
        assert sample(samples, name) > 0, name
    assert sample(samples, "process_cpu_seconds_total") >= 0
    start = sample(samples, "process_start_time_seconds")
    assert time.time() - 600 < start <= time.time()
    chain = {
        (labels["kind"], labels["dependency"])
        for (name, label_items), _ in samples.items()
        if name == "autoglm_service_dependency_info"
        for labels in [dict(label_items)]
        if labels["service"] == "open-autoglm"
    }
    # The seed's chain: the API needs Redis and the vLLM engine (which is also a watched service).
    assert chain == {("redis", "redis"), ("engine", "vllm"), ("service", "vllm")}


def test_every_collector_holds_the_per_item_state_it_declares() -> None:
    # A renamed state attribute would fail only at the first reload that changes one item of
    # that collector: adopt every built-in collector into a twin now.
    from autoglm_exporter.collectors import build_collectors
    from autoglm_exporter.config.loader import default_config

    everything = dict.fromkeys(("system", "process", "container", "probe", "redis", "engine", "logs"), True)
    twins = zip(
        build_collectors(default_config(), everything),
        build_collectors(default_config(), everything),
        strict=True,
    )
    for collector, previous in twins:
        collector.adopt(previous)
        for attribute in collector.state_per_item:
            assert hasattr(collector, attribute), f"{collector.name}.{attribute}"
