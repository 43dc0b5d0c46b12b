"""One service matcher: a service means the same processes to every collector, found by every rule
(pidfile and port too), with one look at /proc per cycle however many collectors ask."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from autoglm_exporter.collectors import build_collectors, collector_names
from autoglm_exporter.collectors.container import ContainerCollector
from autoglm_exporter.collectors.gpu.collector import GpuCollector
from autoglm_exporter.collectors.process import ProcessCollector
from autoglm_exporter.config import GpuConfig, ProcessMatch, ServiceConfig, parse_config
from autoglm_exporter.linux import procfs
from autoglm_exporter.linux.processes import ServiceMatcher

from .conftest import registry_of, wait_until
from .fakes.fake_pynvml import FakeGpu, FakeNvml, FakeProcess, Scenario, gpu_uuid
from .fakes.proc import FakeProc

GIB = 1024**3
ENGINE_PORT = 8000
SOCKET_INODE = 7777
SLEEPER = "import time; print('up', flush=True); time.sleep(60)"


def _add_process(proc: FakeProc, pid: int, cmdline: list[str], ppid: int = 1) -> Path:
    """A fake process the process collector can read too: its threads and its open files."""
    directory = proc.add(pid, cmdline, ppid=ppid)
    status = "State:\tS (sleeping)\nvoluntary_ctxt_switches:\t5\nnonvoluntary_ctxt_switches:\t1\n"
    (directory / "task" / str(pid)).mkdir(parents=True)
    (directory / "task" / str(pid) / "status").write_text(status)
    (directory / "fd").mkdir()
    return directory


def _services_by_every_rule(tmp_path: Path) -> tuple[FakeProc, tuple[ServiceConfig, ...]]:
    """api: found by its pidfile; engine: by the port it listens on; each with a child on the GPU."""
    proc = FakeProc(tmp_path / "proc")
    (Path(proc.path) / "stat").write_text(
        "cpu  1 0 1 100 0 0 0 0 0 0\nctxt 1\nbtime 1700000000\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n"
    )
    _add_process(proc, 500, ["python", "server.py"])
    _add_process(proc, 501, ["python", "-c", "worker"], ppid=500)
    engine = _add_process(proc, 600, ["/opt/engine/bin/serve"])
    os.symlink(f"socket:[{SOCKET_INODE}]", engine / "fd" / "3")
    _add_process(proc, 601, ["/opt/engine/bin/worker"], ppid=600)
    _add_process(proc, 700, ["python", "train.py"])
    (Path(proc.path) / "net").mkdir()
    (Path(proc.path) / "net" / "tcp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        f"   0: 0100007F:{ENGINE_PORT:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000"
        f"  1000        0 {SOCKET_INODE} 1 0000000000000000 100 0 0 10 0\n"
    )
    pidfile = tmp_path / "api.pid"
    pidfile.write_text("500\n")
    services = (
        ServiceConfig("api", ProcessMatch(pidfile=str(pidfile))),
        ServiceConfig("engine", ProcessMatch(port=ENGINE_PORT), port=ENGINE_PORT),
    )
    return proc, services


@pytest.fixture
def nvml():
    made: list[FakeNvml] = []
    yield lambda scenario: made.append(FakeNvml(scenario)) or made[-1]
    for fake in made:
        fake.release()


def test_the_gpu_join_sees_pidfile_and_port_rules_like_the_process_collector(tmp_path, nvml) -> None:
    proc, services = _services_by_every_rule(tmp_path)
    on_gpu = [FakeProcess(501, 10 * GIB), FakeProcess(601, 20 * GIB), FakeProcess(700, 1 * GIB)]
    matcher = ServiceMatcher(services, proc.path, reuse_for=60)
    gpu = GpuCollector(
        GpuConfig(nvidia_smi="/nonexistent/nvidia-smi"),
        services,
        proc.path,
        nvml(Scenario([FakeGpu(gpu_uuid(0), processes=on_gpu)])),
        matcher=matcher,
    )
    process = ProcessCollector(services, proc.path, matcher)

    gpu_result, process_facts = gpu.collect(), process.collect().facts.services
    labels = {"gpu": "0", "uuid": gpu_uuid(0), "name": "NVIDIA H100 80GB HBM3"}
    used = registry_of(gpu_result).get_sample_value
    assert used("autoglm_gpu_process_memory_used_bytes", {**labels, "service": "api"}) == 10 * GIB
    assert used("autoglm_gpu_process_memory_used_bytes", {**labels, "service": "engine"}) == 20 * GIB
    assert used("autoglm_gpu_process_memory_used_bytes", {**labels, "service": "other"}) == 1 * GIB
    owners = {p.pid: p.service for p in gpu_result.facts.processes}
    assert owners == {501: "api", 601: "engine", 700: None}
    # The service's own processes are the same ones for both collectors; the GPU adds its workers.
    assert process_facts["api"].pids == [500] and gpu_result.facts.services["api"].pids == (500, 501)
    assert process_facts["engine"].pids == [600] and gpu_result.facts.services["engine"].pids == (600, 601)
    assert process_facts["engine"].main_pid == 600


def _config(proc_root: str, services_yaml: str, interval: str = "60s"):
    return parse_config(
        f"""
global: {{interval: {interval}}}
paths: {{proc: {proc_root}}}
gpu: {{nvml: false, nvidia_smi: /nonexistent/nvidia-smi}}
services:
{services_yaml}
targets: []
redis: []
engines: []
logs: []
"""
    )


SERVICE_COLLECTORS = ("process", "container", "gpu", "environment")
ONLY_THEM = {name: name in SERVICE_COLLECTORS for name in collector_names()}


def test_one_look_at_proc_per_cycle_however_many_collectors_ask(tmp_path, monkeypatch) -> None:
    proc, _ = _services_by_every_rule(tmp_path)
    looks: list[str] = []
    list_pids = procfs.list_pids
    monkeypatch.setattr(procfs, "list_pids", lambda root: looks.append(root) or list_pids(root))
    services = f"""
  - {{name: api, match: {{pidfile: {tmp_path / "api.pid"}}}}}
  - {{name: engine, match: {{port: {ENGINE_PORT}}}}}
"""
    config = _config(proc.path, services)
    collectors = build_collectors(config, ONLY_THEM)
    assert sorted(c.name for c in collectors) == sorted(SERVICE_COLLECTORS)
    facts = {c.name: c.collect().facts for c in collectors}
    assert looks == [proc.path]
    # ... and that one look is what each of them says about the services.
    for name, main in (("api", 500), ("engine", 600)):
        assert facts["process"].services[name].main_pid == main
        assert facts["container"].services[name].pid == main
        assert facts["environment"].services[name].pid == main
        assert facts["gpu"].services[name].pids[0] == main

    # A reload that rebuilds only some collectors: old and new ones still share one look.
    reloaded = build_collectors(
        _config(proc.path, services + "environment: {model_dirs: [/nonexistent]}\n"),
        ONLY_THEM,
    )
    looks.clear()
    kept_process = next(c for c in collectors if c.name == "process")
    kept_process.collect()
    next(c for c in reloaded if c.name == "environment").collect()
    assert looks == [proc.path]


def test_a_membership_is_handed_out_until_it_is_older_than_its_reuse_window(child_processes) -> None:
    tag = f"matcher-{uuid.uuid4().hex[:10]}"
    services = (ServiceConfig("api", ProcessMatch(cmdline=tag)),)
    matcher = ServiceMatcher(services, reuse_for=60)
    process = ProcessCollector(services, matcher=matcher)
    container = ContainerCollector(services, matcher=matcher)
    assert not process.collect().facts.services["api"].up
    child = child_processes(SLEEPER, tag)
    assert child.stdout.readline().strip() == b"up"
    # Started after this cycle's look: no collector of the cycle sees it, so none contradicts another.
    assert not container.collect().facts.services["api"].found
    assert ProcessCollector(services).collect().facts.services["api"].pids == [child.pid]  # it is there
    matcher.reuse_for = 0.2  # the next cycle
    wait_until(lambda: container.collect().facts.services["api"].pid == child.pid)
    assert process.collect().facts.services["api"].main_pid == child.pid


def test_a_process_reading_taken_again_sees_a_process_gone_within_the_reuse_window(child_processes) -> None:
    tag = f"matcher-{uuid.uuid4().hex[:10]}"
    services = (ServiceConfig("api", ProcessMatch(cmdline=tag)),)
    child = child_processes(SLEEPER, tag)
    assert child.stdout.readline().strip() == b"up"
    matcher = ServiceMatcher(services, reuse_for=60)
    process = ProcessCollector(services, matcher=matcher)
    container = ContainerCollector(services, matcher=matcher)
    assert process.collect().facts.services["api"].pids == [child.pid]
    child.kill()
    child.wait()
    # The read-again that confirms a vanished process must not be handed the look that saw it.
    assert not process.collect().facts.services["api"].up
    assert not container.collect().facts.services["api"].found  # the others share that new look


def test_counters_are_read_fresh_while_the_membership_is_reused(tmp_path) -> None:
    proc, services = _services_by_every_rule(tmp_path)
    process = ProcessCollector(services, proc.path, ServiceMatcher(services, proc.path, reuse_for=60))
    assert process.collect().facts.services["api"].cpu_user_seconds == 0
    stat = Path(proc.path) / "500" / "stat"
    fields = stat.read_text().split()
    fields[13] = str(5 * procfs.CLOCK_TICKS)  # utime: 5 s of CPU since the last cycle
    stat.write_text(" ".join(fields) + "\n")
    assert process.collect().facts.services["api"].cpu_user_seconds == 5
