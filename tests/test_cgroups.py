"""cgroup limits, capabilities and namespaces: recorded-shape fixture trees (v2 and v1), a fake
/proc for the collector, and this machine's own cgroup.

tests/fixtures/cgroup/README.md says what each fixture tree is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from autoglm_exporter.collectors.container import NO_PROCESS_REASON, ContainerCollector
from autoglm_exporter.config import ProcessMatch, ServiceConfig
from autoglm_exporter.linux import cgroups
from autoglm_exporter.linux.cgroups import CgroupStats

from .conftest import FIXTURES, assert_promtool_clean, registry_of

CG = FIXTURES / "cgroup"
V2_PROC, V2_ROOT = str(CG / "v2" / "proc"), str(CG / "v2" / "sys" / "fs" / "cgroup")
V1_PROC, V1_ROOT = str(CG / "v1" / "proc"), str(CG / "v1" / "sys" / "fs" / "cgroup")

POD = (
    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7c1e4b2a_5d3f_4e8a_9b61_0f2d8c7a1e35.slice"
)
SCOPE = f"{POD}/cri-containerd-3f9a1c7e0b5d42e8a6f1c9d3b7e5a2f4c8d6e0b1a3c5e7f9d2b4a6c8e0f1a3b5.scope"
DOCKER = "docker/8d2f6b1e4c3a5f7e9d0b2c4a6e8f1d3b5a7c9e0f2d4b6a8c1e3f5d7b9a0c2e4f"
GIB = 1024**3

# --- parsing ---------------------------------------------------------------------------------


def test_proc_cgroup_lines_of_both_kinds() -> None:
    v2 = cgroups.parse_proc_cgroup((CG / "v2/proc/4242/cgroup").read_text())
    assert v2 == [cgroups.CgroupEntry(0, (), f"/{SCOPE}")]
    assert v2[0].unified
    v1 = cgroups.parse_proc_cgroup((CG / "v1/proc/5151/cgroup").read_text())
    assert len(v1) == 13
    assert v1[9] == cgroups.CgroupEntry(3, ("cpu", "cpuacct"), f"/{DOCKER}")
    assert v1[11] == cgroups.CgroupEntry(1, ("name=systemd",), f"/{DOCKER}")
    assert v1[12] == cgroups.CgroupEntry(0, (), "/")
    # a path may hold ':' itself
    assert cgroups.parse_proc_cgroup("0::/a:b/c\n") == [cgroups.CgroupEntry(0, (), "/a:b/c")]
    with pytest.raises(cgroups.CgroupError):
        cgroups.parse_proc_cgroup("garbage\n")


def test_mountinfo_keeps_only_cgroup_mounts_and_unescapes() -> None:
    v1 = cgroups.parse_mountinfo((CG / "v1/proc/self/mountinfo").read_text())
    assert [m.mountpoint for m in v1 if m.version == 2] == ["/sys/fs/cgroup/unified"]
    assert len(v1) == 13  # 12 v1 hierarchies + the empty unified one; tmpfs, ext4... are not cgroups
    cpu = next(m for m in v1 if "cpu" in m.options)
    assert (cpu.mountpoint, cpu.root, cpu.version) == ("/sys/fs/cgroup/cpu,cpuacct", "/", 1)
    assert {"cpu", "cpuacct"} <= cpu.options
    v2 = cgroups.parse_mountinfo((CG / "v2/proc/self/mountinfo").read_text())
    assert v2 == [
        cgroups.CgroupMount("/sys/fs/cgroup", "/", 2, frozenset({"rw", "nsdelegate", "memory_recursiveprot"}))
    ]
    escaped = "40 31 0:38 /docker/a\\040b /sys/fs/cgroup/my\\040mem rw - cgroup cgroup rw,memory\n"
    assert cgroups.parse_mountinfo(escaped)[0].mountpoint == "/sys/fs/cgroup/my mem"
    assert cgroups.parse_mountinfo(escaped)[0].root == "/docker/a b"


def test_limit_files_and_their_unlimited_spellings() -> None:
    assert cgroups.parse_cpu_max("max 100000\n") == (None, 100000)
    assert cgroups.parse_cpu_max("50000 100000\n") == (50000, 100000)
    assert cgroups.parse_cpu_max("max\n") == (None, 100000)
    assert cgroups.parse_memory_max("max\n") is None
    assert cgroups.parse_memory_max("8589934592\n") == 8 * GIB
    assert cgroups.parse_v1_cpu_quota("-1\n", "100000\n") == (None, 100000)
    assert cgroups.parse_v1_cpu_quota("200000\n", "100000\n") == (200000, 100000)
    assert cgroups.parse_v1_memory_limit("9223372036854771712\n") is None  # 4 KiB pages
    assert cgroups.parse_v1_memory_limit("9223372036854710272\n") is None  # 64 KiB pages
    assert cgroups.parse_v1_memory_limit("4294967296\n") == 4 * GIB
    oom = cgroups.parse_flat_keyed((CG / f"v1/sys/fs/cgroup/memory/{DOCKER}/memory.oom_control").read_text())
    assert oom == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 1}


# --- the fixture trees, read to exact values ---------------------------------------------------


def test_v2_container_with_quota_and_limit() -> None:
    stats = cgroups.read_process(V2_PROC, 4242, V2_ROOT)
    scope = f"{V2_ROOT}/{SCOPE}"
    assert stats == CgroupStats(
        version=2,
        path=f"/{SCOPE}",
        cpu_dir=scope,  # the pod has the same quota: the nearest cgroup holding it wins
        memory_dir=scope,
        cpu_quota_cores=1.5,
        cpu_periods=912345,
        cpu_throttled_periods=45617,
        cpu_throttled_seconds=2345.678901,
        memory_limit_bytes=8 * GIB,
        memory_usage_bytes=7730941952,
        memory_working_set_bytes=7730941952 - 1073741824,
        oom_kills=2,
    )


def test_v2_unlimited_service() -> None:
    stats = cgroups.read_process(V2_PROC, 4243, V2_ROOT)
    service = f"{V2_ROOT}/system.slice/autoglm.service"
    assert stats == CgroupStats(
        version=2,
        path="/system.slice/autoglm.service",
        cpu_dir=service,
        memory_dir=service,
        cpu_quota_cores=None,
        cpu_periods=0,
        cpu_throttled_periods=0,
        cpu_throttled_seconds=0.0,
        memory_limit_bytes=None,
        memory_usage_bytes=2 * GIB,
        memory_working_set_bytes=2 * GIB - 402653184,
        oom_kills=0,
    )


def test_v2_limits_held_by_a_parent_slice_are_read_where_they_are_enforced() -> None:
    stats = cgroups.read_process(V2_PROC, 4244, V2_ROOT)
    assert stats.path == "/inference.slice/vllm.service"
    assert stats.cpu_dir == stats.memory_dir == f"{V2_ROOT}/inference.slice"
    assert stats.cpu_quota_cores == 4.0
    assert (stats.cpu_periods, stats.cpu_throttled_periods) == (50000, 12500)
    assert stats.cpu_throttled_seconds == pytest.approx(987.654321)
    assert stats.memory_limit_bytes == 16 * GIB
    assert stats.memory_usage_bytes == 15 * GIB
    assert stats.oom_kills == 3


def test_v1_docker_container_with_quota_and_limit() -> None:
    stats = cgroups.read_process(V1_PROC, 5151, V1_ROOT)
    assert stats == CgroupStats(
        version=1,
        path=f"/{DOCKER}",
        cpu_dir=f"{V1_ROOT}/cpu,cpuacct/{DOCKER}",
        memory_dir=f"{V1_ROOT}/memory/{DOCKER}",
        cpu_quota_cores=2.0,
        cpu_periods=812345,
        cpu_throttled_periods=40321,
        cpu_throttled_seconds=pytest.approx(1234.567890123),
        memory_limit_bytes=4 * GIB,
        memory_usage_bytes=3 * GIB,
        memory_working_set_bytes=3 * GIB - 536870912,
        oom_kills=1,
    )


def test_v1_unlimited_service_on_a_hybrid_host_reads_the_v1_controllers() -> None:
    # 5152 also has "0::/system.slice/autoglm.service": the unified hierarchy offers no controllers
    stats = cgroups.read_process(V1_PROC, 5152, V1_ROOT)
    assert stats.version == 1
    assert stats.cpu_dir == f"{V1_ROOT}/cpu,cpuacct/system.slice/autoglm.service"
    assert stats.memory_dir == f"{V1_ROOT}/memory/system.slice/autoglm.service"
    assert (stats.cpu_quota_cores, stats.memory_limit_bytes) == (None, None)
    assert (stats.cpu_periods, stats.cpu_throttled_periods, stats.cpu_throttled_seconds) == (0, 0, 0.0)
    assert (stats.memory_usage_bytes, stats.oom_kills) == (GIB, 0)


def test_a_container_without_cgroup_namespace_sees_its_own_cgroup_at_the_mount(tmp_path: Path) -> None:
    # Docker on v1 without cgroupns: /proc/self/cgroup says /docker/ID, and that very directory
    # is what is mounted at /sys/fs/cgroup/memory (mountinfo root field /docker/ID).
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory/memory.limit_in_bytes").write_text("1073741824\n")
    (tmp_path / "memory/memory.usage_in_bytes").write_text("52428800\n")
    mounts = cgroups.parse_mountinfo(
        f"39 29 0:34 /{DOCKER} /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
    )
    entries = cgroups.parse_proc_cgroup(f"7:memory:/{DOCKER}\n")
    location = cgroups.locate(entries, mounts, str(tmp_path))
    assert location.memory == cgroups.ControllerDir(f"{tmp_path}/memory", f"{tmp_path}/memory", 1)
    assert location.cpu is None
    stats = cgroups.read_stats(location)
    assert (stats.memory_limit_bytes, stats.memory_usage_bytes) == (GIB, 50 * 1024 * 1024)
    assert stats.cpu_quota_cores is None and stats.cpu_periods is None


def test_a_cgroup_outside_our_namespace_or_gone_is_an_error() -> None:
    mounts = cgroups.parse_mountinfo((CG / "v2/proc/self/mountinfo").read_text())
    with pytest.raises(cgroups.CgroupError, match="no cpu or memory cgroup"):
        cgroups.locate(cgroups.parse_proc_cgroup("0::/../../system.slice/x.service\n"), mounts, V2_ROOT)
    gone = cgroups.locate(cgroups.parse_proc_cgroup("0::/system.slice/gone.service\n"), mounts, V2_ROOT)
    with pytest.raises(cgroups.CgroupError, match="does not exist"):
        cgroups.read_stats(gone)


def test_standard_layout_is_guessed_without_mountinfo(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    shutil.copytree(V2_ROOT, root)
    entries = cgroups.parse_proc_cgroup("0::/system.slice/autoglm.service\n")
    location = cgroups.locate(entries, [], str(root))
    assert location.version == 2
    assert location.memory and location.memory.directory == f"{root}/system.slice/autoglm.service"


# --- capabilities and the network namespace -------------------------------------------------


def test_effective_capabilities_from_status() -> None:
    docker_default = cgroups.read_effective_capabilities(V2_PROC, 4242)
    assert docker_default == 0xA80425FB
    assert cgroups.capability_names(docker_default) == (
        "chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
        "net_bind_service", "net_raw", "sys_chroot", "mknod", "audit_write", "setfcap",
    )  # fmt: skip
    assert not cgroups.has_capability(docker_default, cgroups.CAP_SYS_PTRACE)
    assert not cgroups.has_capability(docker_default, cgroups.CAP_NET_ADMIN)
    with_ptrace = cgroups.read_effective_capabilities(V2_PROC, 4244)
    assert cgroups.has_capability(with_ptrace, cgroups.CAP_SYS_PTRACE)
    assert set(cgroups.capability_names(with_ptrace)) - set(cgroups.capability_names(docker_default)) == {
        "sys_ptrace"
    }
    everything = cgroups.read_effective_capabilities(V2_PROC, 4243)
    assert cgroups.capability_names(everything) == cgroups.CAPABILITY_NAMES
    assert cgroups.capability_names(1 << 45) == ("cap_45",)
    with pytest.raises(cgroups.CgroupError):
        cgroups.parse_effective_capabilities("Name:\tx\n")


def test_host_network_compares_with_pid_1(tmp_path: Path) -> None:
    for pid, namespace in ((1, "net:[4026531840]"), (10, "net:[4026531840]"), (11, "net:[4026532301]")):
        (tmp_path / str(pid) / "ns").mkdir(parents=True)
        os.symlink(namespace, tmp_path / str(pid) / "ns" / "net")
    (tmp_path / "12").mkdir()
    assert cgroups.shares_host_network(str(tmp_path), 10) is True
    assert cgroups.shares_host_network(str(tmp_path), 11) is False
    assert cgroups.shares_host_network(str(tmp_path), 12) is None  # cannot look: unknown


# --- the collector against a fake /proc ---------------------------------------------------------


def _stat_line(pid: int, comm: str, start_ticks: int) -> str:
    rest = ["0"] * 50
    rest[0], rest[1], rest[17], rest[19], rest[21] = "S", "1", "4", str(start_ticks), "1000"
    return f"{pid} ({comm}) " + " ".join(rest) + "\n"


def _fake_proc(tmp_path: Path, source: str, processes: dict[int, tuple[str, int, str | None]]) -> str:
    """A /proc with, for each pid: cmdline, stat (start time), the fixture's cgroup and status
    (pid 4250 borrows 4242's), and ns/net when a namespace is given; pid 1 and self/mountinfo."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    shutil.copy(f"{source}/self/mountinfo", proc / "self" / "mountinfo")
    (proc / "1" / "ns").mkdir(parents=True)
    os.symlink("net:[4026531840]", proc / "1" / "ns" / "net")
    for pid, (cmdline, start, namespace) in processes.items():
        directory = proc / str(pid)
        directory.mkdir()
        recorded = f"{source}/{pid if os.path.isdir(f'{source}/{pid}') else 4242}"
        shutil.copy(f"{recorded}/cgroup", directory / "cgroup")
        shutil.copy(f"{recorded}/status", directory / "status")
        (directory / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
        (directory / "stat").write_text(_stat_line(pid, cmdline.split()[0].rsplit("/", 1)[-1], start))
        if namespace:
            (directory / "ns").mkdir()
            os.symlink(namespace, directory / "ns" / "net")
    return str(proc)


SERVICES = (
    ServiceConfig("api", ProcessMatch(cmdline=r"open-autoglm\.server"), port=8080),
    ServiceConfig("web", ProcessMatch(cmdline=r"autoglm-web")),
    ServiceConfig("ghost", ProcessMatch(cmdline=r"nothing-runs-this")),
    ServiceConfig("by-port", ProcessMatch(port=8000), port=8000),
)


@pytest.fixture
def v2_host(tmp_path: Path) -> tuple[str, str]:
    """(proc root, cgroup root): a copy of the v2 tree, so a test can move its counters on."""
    proc = _fake_proc(
        tmp_path,
        V2_PROC,
        {
            4242: ("python3 -m open-autoglm.server --port 8080", 5000, "net:[4026532301]"),
            4250: ("python3 -m open-autoglm.server --worker", 9000, "net:[4026532301]"),  # younger
            4243: ("/usr/bin/autoglm-web", 3000, "net:[4026531840]"),  # the host's namespace
            4244: ("python3 -m vllm.entrypoints.openai.api_server", 2000, None),  # ns unreadable
        },
    )
    root = tmp_path / "cgroup"
    shutil.copytree(V2_ROOT, root)
    return proc, str(root)


def _values(result) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels["service"]): sample.value
        for family in result.families
        for sample in family.samples
    }


def test_collector_exports_each_service_from_its_main_process(
    v2_host: tuple[str, str], tmp_path: Path
) -> None:
    proc, root = v2_host
    pidfile = tmp_path / "vllm.pid"
    pidfile.write_text("4244\n")
    services = (*SERVICES, ServiceConfig("vllm", ProcessMatch(pidfile=str(pidfile))))
    result = ContainerCollector(services, proc, root).collect()
    values = _values(result)
    assert values == {
        ("autoglm_container_process_found", "api"): 1,
        ("autoglm_container_process_found", "web"): 1,
        ("autoglm_container_process_found", "ghost"): 0,
        ("autoglm_container_process_found", "by-port"): 0,
        ("autoglm_container_process_found", "vllm"): 1,
        ("autoglm_container_cgroup_version", "api"): 2,
        ("autoglm_container_cgroup_version", "web"): 2,
        ("autoglm_container_cgroup_version", "vllm"): 2,
        ("autoglm_container_cpu_quota_cores", "api"): 1.5,
        ("autoglm_container_cpu_quota_cores", "vllm"): 4.0,
        ("autoglm_container_cpu_periods_total", "api"): 912345,
        ("autoglm_container_cpu_periods_total", "web"): 0,
        ("autoglm_container_cpu_periods_total", "vllm"): 50000,
        ("autoglm_container_cpu_throttled_periods_total", "api"): 45617,
        ("autoglm_container_cpu_throttled_periods_total", "web"): 0,
        ("autoglm_container_cpu_throttled_periods_total", "vllm"): 12500,
        ("autoglm_container_cpu_throttled_seconds_total", "api"): 2345.678901,
        ("autoglm_container_cpu_throttled_seconds_total", "web"): 0,
        ("autoglm_container_cpu_throttled_seconds_total", "vllm"): 987.654321,
        ("autoglm_container_memory_limit_bytes", "api"): 8 * GIB,
        ("autoglm_container_memory_limit_bytes", "vllm"): 16 * GIB,
        ("autoglm_container_memory_usage_bytes", "api"): 7730941952,
        ("autoglm_container_memory_usage_bytes", "web"): 2 * GIB,
        ("autoglm_container_memory_usage_bytes", "vllm"): 15 * GIB,
        ("autoglm_container_memory_working_set_bytes", "api"): 7730941952 - GIB,
        ("autoglm_container_memory_working_set_bytes", "web"): 2 * GIB - 402653184,
        ("autoglm_container_memory_working_set_bytes", "vllm"): 15 * GIB - 536870912,
        ("autoglm_container_oom_kills_total", "api"): 2,
        ("autoglm_container_oom_kills_total", "web"): 0,
        ("autoglm_container_oom_kills_total", "vllm"): 3,
        ("autoglm_container_capability_sys_ptrace", "api"): 0,
        ("autoglm_container_capability_sys_ptrace", "web"): 1,
        ("autoglm_container_capability_sys_ptrace", "vllm"): 1,
        ("autoglm_container_host_network", "api"): 0,
        ("autoglm_container_host_network", "web"): 1,
        # vllm: its namespace cannot be read, so no host_network series (unknown, not 0)
    }
    facts = result.facts.services
    assert facts["api"].pid == 4242  # the oldest of the two matching processes
    assert facts["api"].cgroup_path == f"/{SCOPE}"
    assert facts["api"].memory_usage_ratio == pytest.approx(7730941952 / (8 * GIB))
    assert facts["api"].memory_working_set_ratio == pytest.approx((7730941952 - GIB) / (8 * GIB))
    assert facts["api"].cpu_throttled_fraction is None  # nothing to compare with yet
    assert facts["api"].oom_kills_delta is None
    assert "net_raw" in (facts["api"].capabilities or ()) and facts["api"].ptrace_capable is False
    assert facts["web"].memory_usage_ratio is None  # no limit, no ratio
    assert facts["vllm"].host_network is None
    assert not facts["ghost"].found and facts["ghost"].reason == "no process matches the service"
    # Found by port like everywhere else; nothing listens in this recorded tree.
    assert not facts["by-port"].found and facts["by-port"].reason == NO_PROCESS_REASON
    exposition = generate_latest(registry_of(result))
    assert_promtool_clean(exposition)


def test_throttled_fraction_and_oom_kills_since_the_last_reading(v2_host: tuple[str, str]) -> None:
    proc, root = v2_host
    collector = ContainerCollector(SERVICES[:1], proc, root)
    collector.collect()
    scope = Path(root) / SCOPE
    stat = (scope / "cpu.stat").read_text()
    stat = stat.replace("nr_periods 912345", "nr_periods 913345").replace(
        "nr_throttled 45617", "nr_throttled 45867"
    )
    (scope / "cpu.stat").write_text(stat)
    (scope / "memory.events").write_text(
        (scope / "memory.events").read_text().replace("oom_kill 2", "oom_kill 5")
    )
    facts = collector.collect().facts.services["api"]
    assert facts.cpu_throttled_fraction == pytest.approx(250 / 1000)
    assert facts.oom_kills_delta == 3
    facts = collector.collect().facts.services["api"]
    assert (facts.cpu_throttled_fraction, facts.oom_kills_delta) == (0.0, 0)


def test_collector_on_a_v1_host_and_a_process_whose_cgroup_vanished(tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path,
        V1_PROC,
        {5151: ("python serve.py", 100, None), 5152: ("/usr/bin/open-autoglm", 50, "net:[4026531840]")},
    )
    (Path(proc) / "5152" / "cgroup").write_text("4:memory:/system.slice/removed.service\n")
    services = (
        ServiceConfig("docker", ProcessMatch(cmdline="serve.py")),
        ServiceConfig("gone", ProcessMatch(exe="/nonexistent", cmdline="open-autoglm")),
    )
    result = ContainerCollector(services, proc, V1_ROOT).collect()
    values = _values(result)
    assert values[("autoglm_container_cgroup_version", "docker")] == 1
    assert values[("autoglm_container_cpu_quota_cores", "docker")] == 2.0
    assert values[("autoglm_container_memory_limit_bytes", "docker")] == 4 * GIB
    assert values[("autoglm_container_oom_kills_total", "docker")] == 1
    # the process is there but its cgroup directory is not: found, version 0, no cgroup series
    assert values[("autoglm_container_process_found", "gone")] == 1
    assert values[("autoglm_container_cgroup_version", "gone")] == 0
    assert values[("autoglm_container_host_network", "gone")] == 1
    assert ("autoglm_container_memory_usage_bytes", "gone") not in values
    assert "does not exist" in (result.facts.services["gone"].reason or "")
    assert_promtool_clean(generate_latest(registry_of(result)))


# --- this machine ---------------------------------------------------------------------------------


def test_this_process_cgroup_on_the_live_machine() -> None:
    stats = cgroups.read_process("/proc", os.getpid())
    assert stats.version in (1, 2)
    assert stats.path.startswith("/")
    assert stats.memory_dir is not None and os.path.isdir(stats.memory_dir)
    # the root cgroup of a v2 host has no memory.current; every other cgroup has it
    assert stats.memory_usage_bytes is not None or stats.path == "/"
    if stats.memory_usage_bytes is not None:
        assert stats.memory_usage_bytes > 0
    assert stats.cpu_dir is None or os.path.isdir(stats.cpu_dir)


def test_collector_finds_a_live_child(child_processes) -> None:
    tag = f"container-test-{os.getpid()}"
    child = child_processes("import sys, time; print('up', flush=True); time.sleep(60)", tag)
    assert child.stdout.readline().strip() == b"up"
    result = ContainerCollector((ServiceConfig("live", ProcessMatch(cmdline=tag)),)).collect()
    facts = result.facts.services["live"]
    assert facts.pid == child.pid and facts.reason is None
    assert facts.cgroup_version in (1, 2)
    assert facts.ptrace_capable is not None
    values = _values(result)
    assert values[("autoglm_container_process_found", "live")] == 1
    assert values[("autoglm_container_cgroup_version", "live")] in (1, 2)
    assert_promtool_clean(generate_latest(registry_of(result)))
