"""Parsers and collectors against a /proc tree recorded from a real machine (tests/fixtures/proc).

The tree was written by tests/fixtures/record_proc.py while a 4-thread Python service (pid 6096)
listened on 127.0.0.1:18080; its three worker threads had slept 500 times each.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from autoglm_exporter.collectors.process import ProcessCollector
from autoglm_exporter.collectors.system import SystemCollector
from autoglm_exporter.config import ProcessMatch, ServiceConfig
from autoglm_exporter.linux import procfs

from .conftest import FIXTURES

PROC = str(FIXTURES / "proc")
PID = 6096
TICK = procfs.CLOCK_TICKS


def test_stat() -> None:
    stat = procfs.parse_stat(procfs.read_text(f"{PROC}/stat"))
    assert stat.context_switches == 318801
    assert stat.forks == 6182
    assert (stat.procs_running, stat.procs_blocked) == (1, 0)
    assert stat.cpus == 2
    assert stat.boot_time == 1795606412
    assert stat.cpu_seconds["user"] == pytest.approx(6779 / TICK)
    assert stat.cpu_seconds["idle"] == pytest.approx(108965 / TICK)
    assert stat.cpu_seconds["steal"] == pytest.approx(45 / TICK)


def test_meminfo_is_in_bytes() -> None:
    memory = procfs.parse_meminfo(procfs.read_text(f"{PROC}/meminfo"))
    assert memory["MemTotal"] == 24683656 * 1024
    assert memory["MemAvailable"] == 24362712 * 1024
    assert memory["SwapTotal"] == 0


def test_loadavg() -> None:
    assert procfs.parse_loadavg(procfs.read_text(f"{PROC}/loadavg")) == (0.13, 0.10, 0.04)


def test_pid_stat_with_its_clock_ticks() -> None:
    stat = procfs.parse_pid_stat(procfs.read_text(f"{PROC}/{PID}/stat"))
    assert (stat.pid, stat.comm, stat.state, stat.ppid) == (PID, "python3", "S", 6092)
    assert stat.num_threads == 4
    assert stat.start_ticks == 59153
    assert stat.utime_seconds == pytest.approx(2 / TICK)
    assert stat.rss_bytes == 3536 * procfs.PAGE_SIZE


def test_comm_with_spaces_and_parentheses() -> None:
    text = "42 (my (odd) name) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 9 0 1234 0 55 18446744073709551615"
    stat = procfs.parse_pid_stat(text)
    assert (stat.comm, stat.state, stat.num_threads, stat.start_ticks) == ("my (odd) name", "R", 9, 1234)


@pytest.mark.parametrize(
    "text",
    ["", "cpu 1 2 3\n", "ctxt 1\nprocesses 2\nprocs_running 1\nprocs_blocked 0\n"],
)
def test_truncated_stat_is_a_parse_error(text: str) -> None:
    with pytest.raises(procfs.ProcParseError):
        procfs.parse_stat(text)


def test_threads_are_summed_over_every_task() -> None:
    summary = procfs.summarize_threads(PROC, PID)
    # main thread 29 + 5, three workers 501 + (1, 0, 0)
    assert summary.voluntary_ctxt_switches == 29 + 3 * 501
    assert summary.nonvoluntary_ctxt_switches == 5 + 1
    assert summary.states == {"sleeping": 4}


def test_listening_sockets_and_their_owner() -> None:
    assert procfs.listening_tcp(f"{PROC}/net") == {636: 2024, 8409: 18080}
    assert procfs.socket_inodes(PROC, PID) == {8409}
    assert (
        procfs.read_cmdline(PROC, PID)
        == "/root/.pyenv/versions/3.11.7/bin/python3 /tmp/svc.py open-autoglm-serve"
    )


def test_system_collector_on_the_recorded_tree() -> None:
    result = SystemCollector(PROC).collect()
    values = {(s.name, tuple(s.labels.values())): s.value for f in result.families for s in f.samples}
    assert values[("autoglm_system_context_switches_total", ())] == 318801
    assert values[("autoglm_system_memory_bytes", ("total",))] == 24683656 * 1024
    assert values[("autoglm_system_load", ("15m",))] == 0.04
    assert result.facts.context_switches_per_second is None  # no rate from one reading


def test_system_collector_rates_between_two_readings(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    shutil.copytree(PROC, root, symlinks=True)
    collector = SystemCollector(str(root))
    collector.collect()
    stat = (root / "stat").read_text().replace("ctxt 318801", "ctxt 418801")
    (root / "stat").write_text(stat)
    facts = collector.collect().facts
    assert facts.context_switches_per_second > 100000 / 5  # 100k switches in well under 5 s


def test_process_collector_on_the_recorded_tree() -> None:
    services = (
        ServiceConfig("api", ProcessMatch(cmdline=r"open-autoglm-serve"), port=18080),
        ServiceConfig("by-port", ProcessMatch(port=18080), port=18080),
        ServiceConfig("absent", ProcessMatch(cmdline="nothing-runs-this"), port=8000),
    )
    facts = ProcessCollector(services, PROC).collect().facts.services
    api = facts["api"]
    assert api.pids == [PID] and api.main_pid == PID
    assert api.threads == 4
    assert api.voluntary_ctxt_switches == 29 + 3 * 501
    assert api.listening_ports == [18080] and api.expected_port_listening
    assert api.start_time == pytest.approx(1795606412 + 59153 / TICK)
    assert facts["by-port"].pids == [PID]
    assert not facts["absent"].up and facts["absent"].listening_ports == []


def test_process_that_vanishes_mid_read_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    shutil.copytree(PROC, root, symlinks=True)
    shutil.rmtree(root / str(PID) / "task")  # gone between listing /proc and reading its threads
    collector = ProcessCollector((ServiceConfig("api", ProcessMatch(cmdline="open-autoglm")),), str(root))
    assert collector.collect().facts.services["api"].up is False


@pytest.mark.parametrize(
    "text",
    [
        "",
        "State:\n",
        "Name:\tx\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\tx\nnonvoluntary_ctxt_switches:\t1\n",
    ],
)
def test_broken_task_status_is_a_parse_error(text: str) -> None:
    with pytest.raises(procfs.ProcParseError):
        procfs.parse_task_status(text)
