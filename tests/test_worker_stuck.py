"""A worker child stuck while its parent answers (vLLM's engine core), over a real process tree.

tests/worker_tree.py is a real parent serving HTTP on 127.0.0.1 and a real child that renames itself
(TEST::EngineCore, as vLLM's engine core does with setproctitle) and does the work. Stopping the
child (SIGSTOP) hangs every POST while GET /health stays 200: the verdict must name the child with
its pid and state, and the automatic stack capture must take the child's stacks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest

from autoglm_exporter.collectors.process import ProcessCollector
from autoglm_exporter.config import ForensicsConfig
from autoglm_exporter.core.hangwatch import HangWatch
from autoglm_exporter.facts.inflight import InFlightFacts, InFlightProbe

from .conftest import assert_promtool_clean, registry_of, sample, wait_until
from .process_tree import Tree, process_trees


@pytest.fixture
def tree() -> Iterator[Tree]:
    with process_trees() as start:
        yield start()


def test_the_renamed_child_is_the_services_worker_with_its_pid_state_and_counters(tree: Tree) -> None:
    collector = ProcessCollector((tree.service(),))
    result = collector.collect()
    facts = result.facts.services["engine"]
    assert facts.pids == [tree.parent.pid]  # the renamed child is not matched by the parent's rule...
    assert facts.child_processes == 1 and facts.worker is not None  # ...but found below it
    worker = facts.worker
    assert (worker.pid, worker.ppid, worker.name) == (tree.child, tree.parent.pid, "TEST::EngineCore")
    assert worker.state in ("sleeping", "running") and not worker.stuck and facts.stuck_child is None
    value = registry_of(result).get_sample_value
    assert value("autoglm_process_worker_pid", {"service": "engine"}) == tree.child
    assert value("autoglm_process_worker_info", {"service": "engine", "name": "TEST::EngineCore"}) == 1
    assert value("autoglm_process_worker_state", {"service": "engine", "state": "stopped"}) == 0
    assert value("autoglm_process_child_processes", {"service": "engine"}) == 1
    assert_promtool_clean(generate_latest(registry_of(result)))

    # Work moves its counters: a generation is CPU and context switches of the child.
    before = worker.voluntary_ctxt_switches + worker.involuntary_ctxt_switches
    for _ in range(20):
        assert httpx.post(tree.url + "/generate", json={}, timeout=10).json()["text"] == "generated request"
    worked = collector.collect().facts.services["engine"].worker
    assert worked.voluntary_ctxt_switches + worked.involuntary_ctxt_switches >= before + 20
    assert worked.idle_readings == 0

    tree.stop_child()
    stopped = collector.collect()
    worker = stopped.facts.services["engine"].worker
    assert worker.state == "stopped" and worker.letter == "T" and worker.stuck  # SIGSTOP: stuck at once
    assert stopped.facts.services["engine"].stuck_child == worker
    value = registry_of(stopped).get_sample_value
    assert value("autoglm_process_worker_state", {"service": "engine", "state": "stopped"}) == 1
    assert value("autoglm_process_worker_state", {"service": "engine", "state": "sleeping"}) == 0
    # Stopped, it neither runs nor switches: its counters stand still from reading to reading.
    again = collector.collect().facts.services["engine"].worker
    assert again.idle_readings >= 1 and again.idle_since is not None
    assert value("autoglm_process_worker_pid", {"service": "engine"}) == tree.child


def _config(tmp_path: Path, tree: Tree) -> Path:
    config = tmp_path / "autoglm.yml"
    config.write_text(
        f"""
global: {{interval: 0.5s, timeout: 3s, jitter: 0}}
# The machine's own load (a busy CI runner) must not become the verdict these tests expect.
collectors: {{system: {{enabled: false}}}}
services:
  - name: engine
    match: {{cmdline: 'worker_tree\\.py {tree.tag}', port: {tree.port}}}
targets:
  - {{name: generate, module: inference, url: '{tree.url}/generate', service: engine, timeout: 30s}}
  - {{name: health, module: http, url: '{tree.url}/health', service: engine, layer: dependencies, timeout: 2s}}
redis: []
engines: []
logs: []
forensics: {{hang_after: 1s, dumps: 2, dump_interval: 0.2s, directory: {tmp_path / "captures"}}}
"""
    )
    return config


def test_a_stopped_worker_is_named_with_pid_and_state_and_its_stacks_are_taken(
    tree: Tree, start_exporter, tmp_path: Path
) -> None:
    exporter = start_exporter("--config.file", str(_config(tmp_path, tree)))

    def diagnosis() -> dict:
        return exporter.get("/api/diagnosis").json()

    wait_until(
        lambda: (
            diagnosis()["healthy"]
            and sample(exporter.metrics(), "autoglm_probe_success", target="generate") == 1
        ),
        timeout=30,
    )
    tree.stop_child()
    wait_until(lambda: (diagnosis()["verdict"] or {}).get("reason") == "worker_stuck", timeout=30)
    verdict = diagnosis()["verdict"]
    assert verdict["layer"] == "stall"
    assert f"worker process TEST::EngineCore (pid {tree.child}, state T) is stopped" in verdict["summary"]
    assert "probe generate has waited" in verdict["summary"]
    assert any("no proof of life" in line for line in verdict["evidence"])
    assert f"--pid {tree.child}" in verdict["next_command"]
    # /health still answers 200 all along: not proof of life.
    assert httpx.get(tree.url + "/health", timeout=5).status_code == 200
    metrics = exporter.metrics()
    assert sample(metrics, "autoglm_probe_success", target="health") == 1
    assert sample(metrics, "autoglm_process_worker_state", service="engine", state="stopped") == 1
    assert sample(metrics, "autoglm_process_worker_pid", service="engine") == tree.child

    # The automatic capture took the stacks of the stopped child, not of the parent that answers.
    captures = tmp_path / "captures"
    wait_until(lambda: any(captures.glob("*.json")), timeout=60)
    saved = json.loads(next(captures.glob("*.json")).read_text())
    assert saved["reason"] == "probe_failing" and saved["pid"] == tree.child
    assert all(dump["pid"] == tree.child for dump in saved["dumps"])
    assert tree.state() == "T"  # taking its stacks did not wake it
    stacks = next(link for link in diagnosis()["links"] if link["name"] == "stacks engine")
    assert (
        f"stacks of TEST::EngineCore (pid {tree.child}, state T), the service's stuck child process"
        in (stacks["evidence"])
    )
    assert (diagnosis()["verdict"] or {}).get("reason") == "worker_stuck"  # the stacks did not hide it


def test_the_capture_takes_the_stacks_of_the_stopped_child_not_of_the_parent(
    tree: Tree, tmp_path: Path
) -> None:
    collector = ProcessCollector((tree.service(),))
    watch = HangWatch(ForensicsConfig(hang_after=1.0, dumps=2, dump_interval=0.2, directory=str(tmp_path)))
    tree.stop_child()
    assert watch.observe({"process": collector.collect().facts, "inflight": _hung(tree)}) == ["engine"]

    evidence = wait_until(lambda: watch.facts().services.get("engine"), timeout=60, interval=0.1)
    assert evidence.pid == tree.child and evidence.error is None
    assert evidence.process == f"TEST::EngineCore (pid {tree.child}, state T)"
    assert evidence.analysis is not None and evidence.analysis.pid == tree.child
    assert tree.state() == "T"  # read as it stands, never continued


def test_a_child_held_for_one_reading_is_captured_only_once_the_next_reading_says_it_is_stuck(
    tree: Tree, tmp_path: Path
) -> None:
    """A tracer holds a process for a moment (t): the capture waits for the next process reading."""
    facts = ProcessCollector((tree.service(),)).collect().facts
    service = facts.services["engine"]
    held = replace(service.worker, state="stopped", letter="t", state_readings=1)
    watch = HangWatch(ForensicsConfig(hang_after=1.0, dumps=1, directory=str(tmp_path)))
    service.children = [held]
    assert watch.observe({"process": facts, "inflight": _hung(tree)}) == []
    service.children = [replace(held, state_readings=2)]
    assert watch.observe({"process": facts, "inflight": _hung(tree)}) == ["engine"]
    evidence = wait_until(lambda: watch.facts().services.get("engine"), timeout=60, interval=0.1)
    assert evidence.pid == tree.child and evidence.process == f"TEST::EngineCore (pid {tree.child}, state t)"


def test_no_capture_for_a_wait_the_exporter_itself_spent_stalled(tree: Tree, tmp_path: Path) -> None:
    """8.7 s in flight, 6 s of them with the exporter not scheduled (the real vLLM flood on 2 cores
    took a wrong capture so): stacks only once the exporter watched it wait hang_after."""
    facts = ProcessCollector((tree.service(),)).collect().facts
    watch = HangWatch(ForensicsConfig(hang_after=5.0, dumps=1, directory=str(tmp_path)))
    assert watch.observe({"process": facts, "inflight": _hung(tree, waited=8.7, stalled=6.0)}) == []
    assert watch.observe({"process": facts, "inflight": _hung(tree, waited=11.2, stalled=6.0)}) == ["engine"]
    wait_until(lambda: watch.facts().services.get("engine"), timeout=60, interval=0.1)


def _hung(tree: Tree, waited: float = 9.0, stalled: float = 0.0) -> InFlightFacts:
    """A probe of the service that connected and has waited `waited` s for its answer."""
    url = f"{tree.url}/generate"
    probe = InFlightProbe("generate", "engine", "dependencies", url, time.time(), waited, True, stalled)
    return InFlightFacts({"generate": probe})
