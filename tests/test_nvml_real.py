"""The GPU collector against the real NVML (nvidia-ml-py and the driver's libnvidia-ml).

Where no NVIDIA driver exists (NVML answers LibraryNotFound or DriverNotLoaded) the GPU tests skip
and the no-driver test runs instead; any other NVML failure fails them. On a machine with a GPU the
same suite proves the real path: plausible values, a fixed number of calls per cycle, a process
that holds a CUDA context seen on its GPU and mapped to its service.
"""

from __future__ import annotations

import ctypes
import os
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pynvml
import pytest
from prometheus_client import generate_latest

from autoglm_exporter.collectors.gpu.collector import NO_GPU, NVML_CALLS_PER_GPU, GpuCollector
from autoglm_exporter.config import GpuConfig, ProcessMatch, ServiceConfig

from .conftest import assert_promtool_clean, registry_of, wait_until

NO_DRIVER = (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED)


def _driver_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        if exc.value in NO_DRIVER:
            return False
        raise  # a driver that exists but fails is a failure, never a skip
    pynvml.nvmlShutdown()
    return True


@pytest.fixture(scope="module")
def driver() -> bool:
    return _driver_present()


@pytest.fixture
def gpus(driver: bool) -> int:
    if not driver:
        pytest.skip("no NVIDIA driver on this machine (NVML: library not found / driver not loaded)")
    pynvml.nvmlInit()
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


class CountingNvml:
    """The real pynvml, with every nvml* call counted."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(pynvml, name)
        if not name.startswith("nvml") or not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


def value(result: Any, metric: str, **labels: str) -> float | None:
    return registry_of(result).get_sample_value(metric, labels)


def test_without_a_driver_the_real_collector_says_no_gpu(driver: bool) -> None:
    if driver:
        pytest.skip("an NVIDIA driver is present: the GPU tests below run instead")
    collector = GpuCollector(GpuConfig(nvidia_smi="/nonexistent/nvidia-smi"), (), "/proc")
    result = collector.collect()
    assert value(result, "autoglm_gpu_available") == 0
    assert value(result, "autoglm_gpu_source_info", source="none") == 1
    assert result.facts.message.startswith(NO_GPU)
    assert_promtool_clean(generate_latest(registry_of(result)))


def test_real_gpus_read_plausible_values(gpus: int) -> None:
    collector = GpuCollector(GpuConfig(call_timeout=10.0), (), "/proc")
    result = collector.collect()
    facts = result.facts
    assert (facts.available, facts.source) == (True, "nvml")
    assert value(result, "autoglm_gpu_devices") == gpus
    pynvml.nvmlInit()
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda_version = pynvml.nvmlSystemGetCudaDriverVersion()
        for gpu in facts.gpus:
            handle = pynvml.nvmlDeviceGetHandleByIndex(gpu.index)
            assert gpu.uuid == pynvml.nvmlDeviceGetUUID(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            assert gpu.compute_capability == f"{major}.{minor}"
    finally:
        pynvml.nvmlShutdown()
    assert facts.driver_version == driver
    assert facts.cuda_driver_version == f"{cuda_version // 1000}.{cuda_version % 1000 // 10}"
    for gpu in facts.gpus:
        assert not gpu.lost and not gpu.stuck
        assert gpu.uuid.startswith(("GPU-", "MIG-"))
        assert gpu.memory_total_bytes and gpu.memory_total_bytes > 1024**3
        assert gpu.memory_used_bytes is not None and gpu.memory_free_bytes is not None
        assert gpu.memory_used_bytes + gpu.memory_free_bytes <= gpu.memory_total_bytes
        if gpu.utilization is not None:
            assert 0.0 <= gpu.utilization <= 1.0
        if gpu.temperature_celsius is not None:
            assert 0 < gpu.temperature_celsius < 120
        if gpu.power_draw_watts is not None:
            assert 0 < gpu.power_draw_watts < 2000
            if gpu.power_limit_watts is not None:
                assert gpu.power_draw_watts <= gpu.power_limit_watts * 1.5
        if gpu.performance_state is not None:
            assert 0 <= gpu.performance_state <= 15
        labels = {"gpu": str(gpu.index), "uuid": gpu.uuid, "name": gpu.name}
        sm_clock = value(result, "autoglm_gpu_clock_hertz", **labels, clock="sm")
        assert sm_clock is None or 1e7 < sm_clock < 1e10
        assert value(result, "autoglm_gpu_lost", **labels) == 0
    assert_promtool_clean(generate_latest(registry_of(result)))


def test_real_nvml_costs_a_fixed_number_of_calls_per_gpu(gpus: int) -> None:
    counting = CountingNvml()
    collector = GpuCollector(GpuConfig(call_timeout=10.0), (), "/proc", counting)
    collector.collect()
    for _ in range(3):
        counting.calls.clear()
        collector.collect()
        process_lists = sum(n for name, n in counting.calls.items() if "RunningProcesses" in name)
        assert process_lists == gpus  # one process-list call per GPU
        polls = counting.calls["nvmlEventSetWait_v2"]
        assert polls <= 257  # one poll that finds nothing, after at most 256 events
        per_gpu = sum(counting.calls.values()) - polls - counting.calls["nvmlDeviceGetIndex"]
        assert per_gpu <= len(NVML_CALLS_PER_GPU) * gpus


CUDA_CHILD = textwrap.dedent(
    """
    import ctypes, sys, time
    cuda = ctypes.CDLL("libcuda.so.1")
    assert cuda.cuInit(0) == 0
    device = ctypes.c_int()
    assert cuda.cuDeviceGet(ctypes.byref(device), 0) == 0
    context = ctypes.c_void_p()
    assert cuda.cuCtxCreate_v2(ctypes.byref(context), 0, device) == 0
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def cuda_child(gpus: int, child_processes) -> Iterator[Any]:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        pytest.fail("the NVIDIA driver is present but libcuda.so.1 cannot be loaded")
    child = child_processes(CUDA_CHILD, "autoglm-gpu-test-child")
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"ready"
    yield child


def test_a_process_holding_a_cuda_context_is_seen_and_mapped(cuda_child: Any) -> None:
    service = ServiceConfig("gpu-test", ProcessMatch(cmdline=r"autoglm-gpu-test-child"))
    collector = GpuCollector(GpuConfig(call_timeout=10.0), (service,), "/proc")

    def seen() -> Any:
        result = collector.collect()
        return result if any(p.gpu == 0 for p in result.facts.processes) else None

    result = wait_until(seen, timeout=20, interval=0.5)
    facts = result.facts
    mine = facts.services["gpu-test"]
    assert cuda_child.pid in mine.pids
    assert mine.cuda_visible_devices == (os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),)
    gpu0 = facts.gpus[0]
    labels = {"gpu": "0", "uuid": gpu0.uuid, "name": gpu0.name}
    total = sum(
        value(result, "autoglm_gpu_processes", **labels, service=owner) or 0
        for owner in ("gpu-test", "other")
    )
    assert total >= 1
    if any(p.pid == cuda_child.pid for p in facts.processes):  # NVML shares our pid namespace
        assert (value(result, "autoglm_gpu_processes", **labels, service="gpu-test") or 0) >= 1
        assert mine.gpus == (0,)
    else:
        print(f"NVML lists pids of another pid namespace here ({sys.platform})")
