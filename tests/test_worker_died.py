"""A service's worker child that dies while its parent lives on (vLLM's engine core killed).

tests/worker_tree.py is a real parent serving HTTP on 127.0.0.1 and a real child that renames itself
(TEST::EngineCore) and does the work. SIGKILL the child and the parent lives on: by default it never
reaps it (a zombie) and its POSTs fail; with --close-when-child-dies it reaps it and closes its port,
as vLLM's API server does a few seconds after its engine core dies (it exits a minute later). Either
way the verdict must name the dead worker with its pid, not the refusal or the parent's exit after it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from autoglm_exporter.collectors.process import ProcessCollector, exit_status

from .conftest import sample, wait_until
from .process_tree import Tree, process_trees

PROCESS_READ_AT = "autoglm_exporter_collector_last_success_timestamp_seconds"


@pytest.fixture
def start_tree() -> Iterator[Callable[..., Tree]]:
    with process_trees() as start:
        yield start


def test_exit_statuses_read_as_people_say_them() -> None:
    assert exit_status(9) == "killed by SIGKILL"
    assert exit_status(6 | 0x80) == "killed by SIGABRT (core dumped)"
    assert exit_status(1 << 8) == "exited with status 1"
    assert exit_status(None) == ""


def test_a_worker_killed_and_left_a_zombie_is_dead_with_how_it_ended(start_tree) -> None:
    tree = start_tree()
    collector = ProcessCollector((tree.service(),))
    for _ in range(2):  # seen alive at two readings: the service's worker, not a passing child
        assert collector.collect().facts.services["engine"].dead_worker is None
    os.kill(tree.child, signal.SIGKILL)
    wait_until(lambda: tree.state() == "Z")
    facts = collector.collect().facts.services["engine"]
    dead = facts.dead_worker
    assert dead is not None and dead.pid == tree.child and dead.name == "TEST::EngineCore"
    assert dead.ended == "killed by SIGKILL" and dead.parent_pid == tree.parent.pid
    assert dead.last_seen_at is not None and dead.last_seen_at <= dead.found_at
    assert facts.stuck_child is None  # a zombie is dead, not stuck: there are no stacks to take
    # Remembered while its parent lives, whatever the next readings see.
    assert collector.collect().facts.services["engine"].dead_worker == dead


def test_a_worker_reaped_by_its_parent_which_closes_its_port_is_dead(start_tree) -> None:
    tree = start_tree("--close-when-child-dies")
    collector = ProcessCollector((tree.service(),))
    for _ in range(2):
        collector.collect()
    os.kill(tree.child, signal.SIGKILL)
    wait_until(lambda: tree.state() is None)  # reaped
    wait_until(lambda: not collector.collect().facts.services["engine"].expected_port_listening)
    facts = collector.collect().facts.services["engine"]
    assert facts.up and facts.dead_worker is not None  # the parent lives on without its worker
    assert facts.dead_worker.pid == tree.child and facts.dead_worker.ended is None  # how: not known


def test_a_worker_seen_at_one_reading_only_is_a_passing_child(start_tree) -> None:
    tree = start_tree()
    collector = ProcessCollector((tree.service(),))
    collector.collect()
    os.kill(tree.child, signal.SIGKILL)
    wait_until(lambda: tree.state() == "Z")
    # Gone after one reading (a command the service ran, say): a zombie one reading long is not yet dead.
    assert collector.collect().facts.services["engine"].dead_worker is None


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
    port: {tree.port}
targets:
  - {{name: generate, module: inference, url: '{tree.url}/generate', service: engine, timeout: 3s}}
redis: []
engines: []
logs: []
forensics: {{hang_after: 1s, dumps: 1, directory: {tmp_path / "captures"}}}
"""
    )
    return config


@pytest.mark.parametrize("flags", [(), ("--close-when-child-dies",)], ids=["zombie", "port-closed"])
def test_the_verdict_names_the_dead_worker_and_keeps_it_after_its_parent_exits(
    flags: tuple[str, ...], start_tree, start_exporter, tmp_path: Path
) -> None:
    tree = start_tree(*flags)
    exporter = start_exporter("--config.file", str(_config(tmp_path, tree)))

    def verdict() -> dict:
        return exporter.get("/api/diagnosis").json()["verdict"] or {}

    wait_until(lambda: exporter.get("/api/diagnosis").json()["healthy"], timeout=30)
    wait_until(lambda: httpx.post(tree.url + "/generate", json={}, timeout=5).status_code == 200)
    wait_until(
        lambda: sample(exporter.metrics(), "autoglm_process_worker_pid", service="engine") == tree.child
    )
    _process_readings(exporter, 2)  # seen alive at two readings: the service's worker, not a passing child
    os.kill(tree.child, signal.SIGKILL)
    seen: list[str] = []

    def named_dead() -> bool:
        seen.append(f"{verdict().get('layer')}/{verdict().get('reason')}")
        return seen[-1] == "service/worker_died"

    try:
        wait_until(named_dead, timeout=30)
    except AssertionError:
        print(list(dict.fromkeys(seen)), exporter.get("/api/diagnosis").json()["links"])
        raise
    named = verdict()
    assert named["layer"] == "service"
    assert (
        f"worker process TEST::EngineCore (pid {tree.child}) died while its parent lived" in named["summary"]
    )
    if not flags:
        assert "killed by SIGKILL" in named["summary"]
    assert any(f"its parent, engine pid {tree.parent.pid}, outlived it" in line for line in named["evidence"])

    # Its parent exits after it (vLLM's API server does, a minute later): the cause stays the death.
    tree.parent.kill()
    tree.parent.wait(5)
    wait_until(lambda: exporter.get("/api/diagnosis").json()["links"] and _no_process(exporter), timeout=30)
    readings = _process_readings(exporter, 3, lambda: verdict().get("reason"))
    assert set(readings) == {"worker_died"}, readings
    assert "exited after it" in verdict()["summary"]


def _no_process(exporter) -> bool:
    links = exporter.get("/api/diagnosis").json()["links"]
    return any(link["name"] == "service engine" and link["reason"] == "process_missing" for link in links)


def _process_readings(exporter, count: int, watch: Callable[[], object] = lambda: None) -> list[object]:
    """Wait for `count` more readings of the process collector; what `watch` returned meanwhile."""
    watched: list[object] = []
    read_at = {sample(exporter.metrics(), PROCESS_READ_AT, collector="process")}

    def read_again() -> bool:
        watched.append(watch())
        read_at.add(sample(exporter.metrics(), PROCESS_READ_AT, collector="process"))
        return len(read_at) > count

    wait_until(read_again, timeout=30, interval=0.1)
    return watched
