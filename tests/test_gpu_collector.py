"""The GPU collector against a fake pynvml and a fake nvidia-smi (this machine has no GPU).

tests/test_nvml_real.py runs the same collector against the real NVML where a driver exists.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client import generate_latest

from autoglm_exporter.collectors.base import CollectorError, Result
from autoglm_exporter.collectors.gpu.collector import (
    COMMON_XIDS,
    NO_GPU,
    NVML_CALLS_PER_GPU,
    GpuCollector,
    GpuStuckError,
)
from autoglm_exporter.config import GpuConfig, ProcessMatch, ServiceConfig
from autoglm_exporter.core.runner import CollectorRunner
from autoglm_exporter.core.store import Store
from autoglm_exporter.facts.gpu import GpuFacts
from autoglm_exporter.linux import subprocesses

from .conftest import assert_promtool_clean, parse_metrics, registry_of, sample, wait_until
from .fakes import fake_pynvml
from .fakes.fake_pynvml import FakeGpu, FakeNvml, FakeProcess, Scenario, eight_gpus, gpu_uuid
from .fakes.proc import FakeProc, fake_nvidia_smi

H100 = "NVIDIA H100 80GB HBM3"
GIB = 1024**3
MIB = 1024**2
SITE = "/opt/venv/lib/python3.11/site-packages"
TORCH_VERSION_PY = "__version__ = '2.5.1+cu124'\ndebug = False\ncuda: Optional[str] = '12.4'\n"


def gpu(index: int, name: str = H100) -> dict[str, str]:
    return {"gpu": str(index), "uuid": gpu_uuid(index), "name": name}


def value(result: Result, metric: str, **labels: str) -> float | None:
    return registry_of(result).get_sample_value(metric, labels)


def exposition(result: Result) -> bytes:
    return generate_latest(registry_of(result))


@pytest.fixture
def nvml() -> Iterator[Callable[[Scenario], FakeNvml]]:
    """Fake NVML modules; every call they block is released after the test."""
    made: list[FakeNvml] = []

    def make(scenario: Scenario) -> FakeNvml:
        fake = FakeNvml(scenario)
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.release()


@pytest.fixture
def empty_proc(tmp_path: Path) -> str:
    return FakeProc(tmp_path / "proc").path


def nvml_collector(fake: FakeNvml, proc_root: str, services=(), timeout: float = 2.0) -> GpuCollector:
    return GpuCollector(
        GpuConfig(call_timeout=timeout, nvidia_smi="/nonexistent/nvidia-smi"), services, proc_root, fake
    )


# --- NVML: values, calls, absence ------------------------------------------------------------------


def test_eight_gpus_in_base_units_and_promtool_clean(nvml, empty_proc) -> None:
    result = nvml_collector(nvml(eight_gpus()), empty_proc).collect()
    assert value(result, "autoglm_gpu_available") == 1
    assert value(result, "autoglm_gpu_source_info", source="nvml") == 1
    assert value(result, "autoglm_gpu_devices") == 8
    for index in range(8):
        labels = gpu(index)
        assert value(result, "autoglm_gpu_memory_total_bytes", **labels) == 81559 * MIB
        assert value(result, "autoglm_gpu_memory_used_bytes", **labels) == 40000 * MIB
        assert value(result, "autoglm_gpu_memory_reserved_bytes", **labels) == 512 * MIB
        assert value(result, "autoglm_gpu_memory_free_bytes", **labels) == (81559 - 40000 - 512) * MIB
        assert value(result, "autoglm_gpu_utilization_ratio", **labels) == pytest.approx(0.87)
        assert value(result, "autoglm_gpu_memory_utilization_ratio", **labels) == pytest.approx(0.41)
        assert value(result, "autoglm_gpu_temperature_celsius", **labels) == 61
        assert value(result, "autoglm_gpu_power_draw_watts", **labels) == pytest.approx(312.45)
        assert value(result, "autoglm_gpu_power_limit_watts", **labels) == 700
        assert value(result, "autoglm_gpu_energy_joules_total", **labels) == pytest.approx(123456.789)
        assert value(result, "autoglm_gpu_clock_hertz", **labels, clock="sm") == 1980e6
        assert value(result, "autoglm_gpu_clock_hertz", **labels, clock="memory") == 2619e6
        assert value(result, "autoglm_gpu_performance_state", **labels) == 0
        assert value(result, "autoglm_gpu_clock_event_reason_active", **labels, reason="sw_power_cap") == 1
        assert value(result, "autoglm_gpu_clock_event_reason_active", **labels, reason="gpu_idle") == 0
        assert value(result, "autoglm_gpu_ecc_errors_total", **labels, type="corrected") == 3
        assert value(result, "autoglm_gpu_ecc_errors_total", **labels, type="uncorrected") == 0
        assert value(result, "autoglm_gpu_remapped_rows", **labels, cause="correctable") == 2
        assert value(result, "autoglm_gpu_row_remapping_failed", **labels) == 0
        assert value(result, "autoglm_gpu_lost", **labels) == 0
        assert value(result, "autoglm_gpu_processes", **labels, service="other") == 2
        assert value(result, "autoglm_gpu_process_memory_used_bytes", **labels, service="other") == 2 * GIB
        assert value(result, "autoglm_gpu_xid_errors_total", **labels, xid="79") == 0
        assert value(result, "autoglm_gpu_last_xid_timestamp_seconds", **labels) == 0
        info = {
            **labels,
            "driver_version": "550.54.15",
            "cuda_driver_version": "12.4",
            "compute_capability": "9.0",
        }
        assert value(result, "autoglm_gpu_info", **info) == 1
    facts = result.facts
    assert isinstance(facts, GpuFacts)
    assert (facts.available, facts.source, facts.driver_version, facts.cuda_driver_version) == (
        True,
        "nvml",
        "550.54.15",
        "12.4",
    )
    first = facts.gpus[0]
    # At its power cap (a clock event, asserted above) while generating flat out: not judged
    # throttled; the verdict and the alert read the same GPU_THROTTLE_REASONS.
    assert first.throttle_reasons == ()
    assert first.memory_used_ratio == pytest.approx(1 - (81559 - 40512) / 81559)
    assert (first.lost, first.stuck, first.processes) == (False, False, 2)
    assert len(facts.processes) == 16
    assert_promtool_clean(exposition(result))


def test_nvml_calls_per_cycle_are_fixed_per_gpu_with_one_process_list_call(nvml, empty_proc) -> None:
    fake = nvml(eight_gpus(processes_per_gpu=64))
    collector = nvml_collector(fake, empty_proc)
    collector.collect()  # opening NVML reads each GPU's identity once
    for _ in range(3):
        fake.calls.clear()
        collector.collect()
        assert fake.total_calls() == len(NVML_CALLS_PER_GPU) * 8 + 1  # + one event-set poll
        assert fake.calls["nvmlDeviceGetComputeRunningProcesses_v3"] == 8
        assert fake.calls["nvmlDeviceGetUUID"] == 0
        assert fake.calls["nvmlEventSetWait_v2"] == 1


def test_not_supported_fields_are_absent_and_not_asked_again(nvml, empty_proc) -> None:
    scenario = eight_gpus()
    for fake_gpu in scenario.gpus[:2]:
        fake_gpu.not_supported = {
            "nvmlDeviceGetTotalEnergyConsumption",
            "nvmlDeviceGetTotalEccErrors",
            "nvmlDeviceGetRemappedRows",
            "nvmlDeviceGetMemoryInfo_v2",
        }
    fake = nvml(scenario)
    collector = nvml_collector(fake, empty_proc)
    result = collector.collect()
    for index in (0, 1):
        labels = gpu(index)
        assert value(result, "autoglm_gpu_energy_joules_total", **labels) is None
        assert value(result, "autoglm_gpu_ecc_errors_total", **labels, type="corrected") is None
        assert value(result, "autoglm_gpu_remapped_rows", **labels, cause="correctable") is None
        assert value(result, "autoglm_gpu_memory_total_bytes", **labels) == 81559 * MIB  # v1 instead of v2
        assert value(result, "autoglm_gpu_memory_reserved_bytes", **labels) is None
        assert value(result, "autoglm_gpu_temperature_celsius", **labels) == 61  # the rest is there
    assert value(result, "autoglm_gpu_energy_joules_total", **gpu(2)) is not None
    assert value(result, "autoglm_gpu_read_errors_total", function="nvmlDeviceGetTotalEnergyConsumption") == 0
    fake.calls.clear()
    collector.collect()
    assert fake.total_calls() == len(NVML_CALLS_PER_GPU) * 8 + 1 - 2 * 4  # 4 unsupported calls on 2 GPUs
    assert fake.calls["nvmlDeviceGetMemoryInfo"] == 2 and fake.calls["nvmlDeviceGetMemoryInfo_v2"] == 6
    assert_promtool_clean(exposition(result))


def test_missing_functions_fall_back_once_and_are_logged_once(nvml, empty_proc, caplog) -> None:
    caplog.set_level(logging.INFO)
    scenario = eight_gpus()
    scenario.missing = {
        "nvmlDeviceGetMemoryInfo_v2",
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlSystemGetCudaDriverVersion_v2",
    }
    scenario.binding_lacks = {"nvmlDeviceGetTemperatureV"}  # an older nvidia-ml-py
    fake = nvml(scenario)
    collector = nvml_collector(fake, empty_proc)
    result = collector.collect()
    labels = gpu(0)
    assert value(result, "autoglm_gpu_memory_total_bytes", **labels) == 81559 * MIB  # from v1
    assert value(result, "autoglm_gpu_memory_reserved_bytes", **labels) is None  # v1 does not know it
    assert value(result, "autoglm_gpu_memory_used_bytes", **labels) == 40512 * MIB
    assert value(result, "autoglm_gpu_processes", **labels, service="other") == 2  # from v2
    assert value(result, "autoglm_gpu_clock_event_reason_active", **labels, reason="sw_power_cap") == 1
    assert value(result, "autoglm_gpu_temperature_celsius", **labels) == 61
    assert result.facts.cuda_driver_version == "12.4"
    for _ in range(3):
        fake.calls.clear()
        collector.collect()
        assert fake.total_calls() == len(NVML_CALLS_PER_GPU) * 8 + 1
        assert fake.calls["nvmlDeviceGetComputeRunningProcesses_v2"] == 8
        assert fake.calls["nvmlDeviceGetComputeRunningProcesses_v3"] == 0
    fallbacks = [r for r in caplog.records if r.getMessage().startswith("NVML function not available")]
    assert sorted(r.function for r in fallbacks) == sorted([*scenario.missing, "nvmlDeviceGetTemperatureV"])


def test_an_error_on_one_field_is_counted_and_the_cycle_goes_on(nvml, empty_proc) -> None:
    scenario = eight_gpus()
    scenario.gpus[0].errors = {"nvmlDeviceGetPowerUsage": fake_pynvml.UNKNOWN}
    scenario.gpus[1].errors = {"nvmlDeviceGetTotalEccErrors": fake_pynvml.NO_PERMISSION}
    collector = nvml_collector(nvml(scenario), empty_proc)
    collector.collect()
    result = collector.collect()
    assert value(result, "autoglm_gpu_power_draw_watts", **gpu(0)) is None
    assert value(result, "autoglm_gpu_power_limit_watts", **gpu(0)) == 700
    assert value(result, "autoglm_gpu_power_draw_watts", **gpu(1)) == pytest.approx(312.45)
    assert value(result, "autoglm_gpu_ecc_errors_total", **gpu(1), type="corrected") is None
    assert value(result, "autoglm_gpu_read_errors_total", function="nvmlDeviceGetPowerUsage") == 2
    assert value(result, "autoglm_gpu_read_errors_total", function="nvmlDeviceGetTotalEccErrors") == 4
    assert value(result, "autoglm_gpu_read_errors_total", function="nvidia-smi") == 0


# --- lost GPUs and XIDs ---------------------------------------------------------------------------------


def test_a_lost_gpu_drops_its_readings_but_keeps_its_xids(nvml, empty_proc) -> None:
    fake = nvml(eight_gpus())
    collector = nvml_collector(fake, empty_proc)
    collector.collect()
    fake.push_xid(2, 79)
    fake.scenario.gpus[2].lost = True
    result = collector.collect()
    assert value(result, "autoglm_gpu_lost", **gpu(2)) == 1
    assert value(result, "autoglm_gpu_memory_used_bytes", **gpu(2)) is None
    assert value(result, "autoglm_gpu_processes", **gpu(2), service="other") is None
    assert value(result, "autoglm_gpu_xid_errors_total", **gpu(2), xid="79") == 1
    assert value(result, "autoglm_gpu_last_xid", **gpu(2)) == 79
    assert value(result, "autoglm_gpu_lost", **gpu(3)) == 0
    assert value(result, "autoglm_gpu_memory_used_bytes", **gpu(3)) == 40000 * MIB
    lost = result.facts.gpus[2]
    assert (lost.lost, lost.xid_recent, lost.last_xid, lost.memory_used_bytes) == (True, (79,), 79, None)
    fake.calls.clear()
    collector.collect()
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == 7  # the lost GPU costs one call, not fourteen
    assert_promtool_clean(exposition(result))


def test_xid_events_are_counted_by_gpu_and_xid_with_the_last_time(nvml, empty_proc) -> None:
    fake = nvml(eight_gpus())
    collector = nvml_collector(fake, empty_proc)
    result = collector.collect()
    for index in range(8):
        for xid in COMMON_XIDS:
            assert value(result, "autoglm_gpu_xid_errors_total", **gpu(index), xid=str(xid)) == 0
    before = time.time()
    for gpu_index, xid in ((1, 13), (1, 13), (1, 31), (5, 154)):
        fake.push_xid(gpu_index, xid)
    fake.calls.clear()
    result = collector.collect()
    assert fake.calls["nvmlEventSetWait_v2"] == 5  # four events, then the poll that finds none
    assert value(result, "autoglm_gpu_xid_errors_total", **gpu(1), xid="13") == 2
    assert value(result, "autoglm_gpu_xid_errors_total", **gpu(1), xid="31") == 1
    assert value(result, "autoglm_gpu_xid_errors_total", **gpu(5), xid="154") == 1  # not a common one
    assert value(result, "autoglm_gpu_last_xid", **gpu(1)) == 31
    assert before <= (value(result, "autoglm_gpu_last_xid_timestamp_seconds", **gpu(1)) or 0) <= time.time()
    assert result.facts.gpus[1].xid_recent == (13, 13, 31)
    result = collector.collect()  # counters keep their counts
    assert value(result, "autoglm_gpu_xid_errors_total", **gpu(1), xid="13") == 2
    assert_promtool_clean(exposition(result))


# --- the hang guard -------------------------------------------------------------------------------------


def test_a_call_that_never_returns_is_abandoned_at_the_deadline(nvml, empty_proc) -> None:
    fake = nvml(eight_gpus())
    collector = nvml_collector(fake, empty_proc, timeout=0.2)
    collector.collect()
    fake.scenario.block.add(("nvmlDeviceGetPowerUsage", 3))
    threads = threading.active_count()
    started = time.monotonic()
    with pytest.raises(CollectorError) as raised:
        collector.collect()
    assert time.monotonic() - started < 1.0
    assert raised.value.kind == "timeout"
    assert "nvmlDeviceGetPowerUsage on GPU 3" in str(raised.value)
    assert isinstance(raised.value, GpuStuckError)
    facts = raised.value.facts
    assert facts.stuck and facts.stuck_call == "nvmlDeviceGetPowerUsage on GPU 3"
    assert [g.index for g in facts.gpus if g.stuck] == [3]
    assert collector.last_facts is facts
    calls = fake.total_calls()
    for _ in range(50):
        started = time.monotonic()
        with pytest.raises(CollectorError) as raised:
            collector.collect()
        assert raised.value.kind == "skipped_stuck"
        assert time.monotonic() - started < 0.1
    assert fake.total_calls() == calls  # no second NVML call while the first hangs
    assert fake.blocked_now == ["nvmlDeviceGetPowerUsage"]
    assert threading.active_count() <= threads  # the worker was already there: not one thread more
    fake.release()
    result = wait_until(lambda: _collect_or_none(collector), timeout=5)
    assert value(result, "autoglm_gpu_power_draw_watts", **gpu(3)) == pytest.approx(312.45)
    assert not result.facts.stuck


def _collect_or_none(collector: GpuCollector) -> Result | None:
    try:
        return collector.collect()
    except CollectorError:
        return None


def test_a_hang_in_nvml_init_is_abandoned_too(nvml, empty_proc) -> None:
    fake = nvml(eight_gpus())
    fake.scenario.block.add(("nvmlInit", None))
    collector = nvml_collector(fake, empty_proc, timeout=0.2)
    with pytest.raises(GpuStuckError) as raised:
        collector.collect()
    assert raised.value.kind == "timeout"
    assert raised.value.facts.stuck_call == "nvmlInit"
    with pytest.raises(GpuStuckError) as raised:
        collector.collect()
    assert raised.value.kind == "skipped_stuck"
    assert fake.calls["nvmlInit"] == 1


def test_the_runner_drops_every_gpu_series_while_nvml_is_stuck(nvml, empty_proc) -> None:
    fake = nvml(eight_gpus())
    store = Store()
    store.set_collectors(["gpu"])
    runner = CollectorRunner(nvml_collector(fake, empty_proc, timeout=0.2), store, timeout=2)
    assert runner.run_once()
    assert sample(parse_metrics(store.render()[0].decode()), "autoglm_gpu_available") == 1
    fake.scenario.block.add(("nvmlDeviceGetRemappedRows", 0))
    threads = threading.active_count()
    assert not runner.run_once()
    for _ in range(10):
        assert not runner.run_once()
    page = parse_metrics(store.render()[0].decode())
    assert sample(page, "autoglm_gpu_available") is None  # never served stale
    assert not [key for key in page if key[0].startswith(("autoglm_gpu_", "autoglm_cuda_"))]
    assert sample(page, "autoglm_exporter_collector_errors_total", collector="gpu", kind="timeout") == 1
    assert (
        sample(page, "autoglm_exporter_collector_errors_total", collector="gpu", kind="skipped_stuck") == 10
    )
    assert threading.active_count() <= threads + 1
    assert "gpu" not in store.facts()
    fake.release()
    wait_until(runner.run_once, timeout=5)
    assert sample(parse_metrics(store.render()[0].decode()), "autoglm_gpu_available") == 1


# --- no GPU ------------------------------------------------------------------------------------------------


def test_no_gpu_and_no_driver_is_said_once_and_the_run_succeeds(nvml, empty_proc, caplog) -> None:
    caplog.set_level(logging.INFO)
    fake = nvml(Scenario([], init_error=fake_pynvml.LIBRARY_NOT_FOUND))
    collector = nvml_collector(fake, empty_proc)
    for _ in range(3):
        result = collector.collect()
    assert value(result, "autoglm_gpu_available") == 0
    assert value(result, "autoglm_gpu_source_info", source="none") == 1
    assert value(result, "autoglm_gpu_devices") == 0
    facts = result.facts
    assert (facts.available, facts.source, facts.gpus) == (False, "none", ())
    assert facts.message.startswith(NO_GPU)
    assert sum(NO_GPU in r.getMessage() for r in caplog.records) == 1
    assert_promtool_clean(exposition(result))


def test_nvml_listing_no_gpu_is_no_gpu(nvml, empty_proc) -> None:
    result = nvml_collector(nvml(Scenario([])), empty_proc).collect()
    assert value(result, "autoglm_gpu_available") == 0
    assert NO_GPU in result.facts.message


def test_a_broken_nvml_without_nvidia_smi_is_an_error(nvml, empty_proc) -> None:
    fake = nvml(Scenario([], init_error=fake_pynvml.ERRORS["LIB_RM_VERSION_MISMATCH"]))
    with pytest.raises(CollectorError) as raised:
        nvml_collector(fake, empty_proc).collect()
    assert raised.value.kind == "os_error"
    assert "NVML cannot start" in str(raised.value) and "nvidia-smi" in str(raised.value)


def test_nvml_gone_mid_run_is_started_again(nvml, empty_proc) -> None:
    fake = nvml(eight_gpus())
    collector = nvml_collector(fake, empty_proc)
    collector.collect()
    fake.initialised = 0  # the driver was reloaded under us: every call says Uninitialized
    with pytest.raises(CollectorError) as raised:  # this run: NVML gone, and no nvidia-smi to ask
        collector.collect()
    assert raised.value.kind == "os_error" and "NVML stopped answering" in str(raised.value)
    result = collector.collect()
    assert value(result, "autoglm_gpu_available") == 1
    assert fake.calls["nvmlInit"] == 2


# --- nvidia-smi ----------------------------------------------------------------------------------------------


def smi_collector(tmp_path: Path, scenario: str, timeout: float = 5.0, nvml_fake=None) -> GpuCollector:
    config = GpuConfig(
        nvml=nvml_fake is not None,
        nvidia_smi=fake_nvidia_smi(tmp_path / "bin", scenario),
        call_timeout=timeout,
    )
    return GpuCollector(config, (), FakeProc(tmp_path / "proc").path, nvml_fake)


A100 = "NVIDIA A100-SXM4-80GB"


def smi_gpu(index: int) -> dict[str, str]:
    uuid = ["GPU-aaaaaaaa-1111-2222-3333-000000000000", "GPU-bbbbbbbb-1111-2222-3333-000000000001"][index]
    return {"gpu": str(index), "uuid": uuid, "name": A100}


def test_nvidia_smi_is_the_fallback_when_nvml_cannot_load(tmp_path, nvml) -> None:
    fake = nvml(Scenario([], init_error=fake_pynvml.LIBRARY_NOT_FOUND))
    result = smi_collector(tmp_path, "normal", nvml_fake=fake).collect()
    assert value(result, "autoglm_gpu_source_info", source="nvidia_smi") == 1
    assert value(result, "autoglm_gpu_available") == 1
    first = smi_gpu(0)
    assert value(result, "autoglm_gpu_memory_total_bytes", **first) == 81920 * MIB
    assert value(result, "autoglm_gpu_memory_used_bytes", **first) == 60000 * MIB
    assert value(result, "autoglm_gpu_memory_reserved_bytes", **first) == 512 * MIB
    assert value(result, "autoglm_gpu_utilization_ratio", **first) == pytest.approx(0.93)
    assert value(result, "autoglm_gpu_power_draw_watts", **first) == pytest.approx(301.25)
    assert value(result, "autoglm_gpu_power_limit_watts", **first) == 400
    assert value(result, "autoglm_gpu_clock_hertz", **first, clock="sm") == 1410e6
    assert value(result, "autoglm_gpu_performance_state", **smi_gpu(1)) == 8
    assert value(result, "autoglm_gpu_clock_event_reason_active", **first, reason="sw_power_cap") == 1
    assert value(result, "autoglm_gpu_clock_event_reason_active", **smi_gpu(1), reason="gpu_idle") == 1
    assert value(result, "autoglm_gpu_ecc_errors_total", **first, type="corrected") == 5
    assert value(result, "autoglm_gpu_row_remapping_pending", **first) == 0
    assert value(result, "autoglm_gpu_processes", **first, service="other") == 2
    assert value(result, "autoglm_gpu_process_memory_used_bytes", **first, service="other") == 59000 * MIB
    info = {
        **first,
        "driver_version": "535.104.05",
        "cuda_driver_version": "12.2",
        "compute_capability": "8.0",
    }
    assert value(result, "autoglm_gpu_info", **info) == 1
    assert result.facts.source == "nvidia_smi"
    assert "reading through nvidia-smi" in result.facts.message
    assert_promtool_clean(exposition(result))


def test_nvidia_smi_brackets_are_absence_never_a_crash(tmp_path) -> None:
    result = smi_collector(tmp_path, "na").collect()
    first = smi_gpu(0)
    for metric in (
        "autoglm_gpu_power_draw_watts",
        "autoglm_gpu_power_limit_watts",
        "autoglm_gpu_memory_reserved_bytes",
        "autoglm_gpu_performance_state",
        "autoglm_gpu_row_remapping_failed",
    ):
        assert value(result, metric, **first) is None, metric
    assert value(result, "autoglm_gpu_ecc_errors_total", **first, type="corrected") is None
    assert value(result, "autoglm_gpu_clock_event_reason_active", **first, reason="gpu_idle") is None
    assert value(result, "autoglm_gpu_memory_used_bytes", **first) == 60000 * MIB
    assert value(result, "autoglm_gpu_process_memory_used_bytes", **first, service="other") == 59000 * MIB
    assert_promtool_clean(exposition(result))


@pytest.mark.parametrize("scenario", ["garbage", "short", "apps_garbage"])
def test_nvidia_smi_garbage_is_a_parse_error(tmp_path, scenario) -> None:
    collector = smi_collector(tmp_path, scenario)
    with pytest.raises(CollectorError) as raised:
        collector.collect()
    assert raised.value.kind == "parse_error"
    assert "nvidia-smi" in str(raised.value)


def test_an_older_nvidia_smi_gets_its_older_field_names(tmp_path) -> None:
    collector = smi_collector(tmp_path, "legacy")
    result = collector.collect()
    first = smi_gpu(0)
    assert value(result, "autoglm_gpu_clock_hertz", **first, clock="memory") == 1593e6
    assert value(result, "autoglm_gpu_clock_event_reason_active", **first, reason="sw_power_cap") == 1
    assert value(result, "autoglm_gpu_memory_reserved_bytes", **first) is None
    assert collector.collect().facts.available  # and stays with them


def test_nvidia_smi_without_a_driver_is_no_gpu(tmp_path) -> None:
    result = smi_collector(tmp_path, "no_driver").collect()
    assert value(result, "autoglm_gpu_available") == 0
    assert NO_GPU in result.facts.message


def test_a_nvidia_smi_that_never_exits_is_killed_at_the_deadline_and_reaped(tmp_path) -> None:
    collector = smi_collector(tmp_path, "hang", timeout=0.5)
    started = time.monotonic()
    with pytest.raises(CollectorError) as raised:
        collector.collect()
    assert raised.value.kind == "timeout"
    assert time.monotonic() - started < 2.0
    assert "killed" in str(raised.value)
    me = psutil.Process(os.getpid())
    wait_until(lambda: not [c for c in me.children(recursive=True) if "nvidia_smi" in " ".join(_cmd(c))])
    assert subprocesses.unreaped_count() == 0  # killed and reaped: no zombie, nothing handed off
    with pytest.raises(CollectorError) as raised:  # reaped, so the next run tries again
        collector.collect()
    assert raised.value.kind == "timeout"


def _cmd(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


# --- joins with the services ------------------------------------------------------------------------------------


def _services() -> tuple[ServiceConfig, ...]:
    return (
        ServiceConfig("vllm", ProcessMatch(cmdline=r"vllm\.entrypoints")),
        ServiceConfig("open-autoglm", ProcessMatch(cmdline=r"open_autoglm")),
    )


def _service_tree(tmp_path: Path) -> FakeProc:
    proc = FakeProc(tmp_path / "proc")
    visible = {"CUDA_VISIBLE_DEVICES": "0,1", "PATH": "/usr/bin"}
    proc.add(
        100,
        ["python3", "-m", "vllm.entrypoints.openai.api_server", "--port", "8000"],
        environ=visible,
        maps=[f"{SITE}/pydantic_core/_pydantic_core.so", "/usr/lib/x86_64-linux-gnu/libc.so.6"],
        files={f"{SITE}/torch/version.py": TORCH_VERSION_PY},
    )
    proc.add(101, ["VLLM::EngineCore"], ppid=100, environ=visible)
    proc.add(102, ["VLLM::Worker_TP1"], ppid=101, environ=visible)
    proc.add(200, ["python", "/srv/open_autoglm/server.py"], environ={"CUDA_VISIBLE_DEVICES": "7"})
    proc.add(300, ["python", "train.py"], environ={})
    return proc


def _two_gpu_scenario(cuda_driver: int = 12020) -> Scenario:
    return Scenario(
        [
            FakeGpu(gpu_uuid(0), processes=[FakeProcess(101, 30 * GIB)]),
            FakeGpu(gpu_uuid(1), processes=[FakeProcess(102, 30 * GIB), FakeProcess(300, 2 * GIB)]),
        ],
        driver_version="535.104.05",
        cuda_driver_version=cuda_driver,
    )


def test_gpu_memory_is_mapped_to_services_through_their_process_tree(tmp_path, nvml) -> None:
    proc = _service_tree(tmp_path)
    collector = nvml_collector(nvml(_two_gpu_scenario()), proc.path, services=_services())
    result = collector.collect()
    memory = "autoglm_gpu_process_memory_used_bytes"
    assert value(result, memory, **gpu(0), service="vllm") == 30 * GIB
    assert value(result, memory, **gpu(1), service="vllm") == 30 * GIB
    assert value(result, memory, **gpu(1), service="other") == 2 * GIB
    assert value(result, memory, **gpu(0), service="open-autoglm") == 0  # every service, from the start
    assert value(result, "autoglm_gpu_processes", **gpu(1), service="vllm") == 1
    assert value(result, "autoglm_gpu_processes", **gpu(1), service="other") == 1
    visible = "autoglm_gpu_service_cuda_visible_devices_info"
    assert value(result, visible, service="vllm", cuda_visible_devices="0,1") == 1
    assert value(result, visible, service="open-autoglm", cuda_visible_devices="7") == 1
    facts = result.facts
    vllm = facts.services["vllm"]
    assert (vllm.pids, vllm.gpus, vllm.gpu_memory_bytes) == (
        (100, 101, 102),
        (0, 1),
        {0: 30 * GIB, 1: 30 * GIB},
    )
    assert vllm.cuda_visible_devices == ("0,1",)
    autoglm = facts.services["open-autoglm"]
    assert (autoglm.pids, autoglm.gpus, autoglm.cuda_visible_devices) == ((200,), (), ("7",))
    owners = {p.pid: p.service for p in facts.processes}
    assert owners == {101: "vllm", 102: "vllm", 300: None}
    assert_promtool_clean(exposition(result))


def test_cuda_compatibility_names_the_driver_and_the_runtime(tmp_path, nvml) -> None:
    proc = _service_tree(tmp_path)
    result = nvml_collector(nvml(_two_gpu_scenario(12020)), proc.path, services=_services()).collect()
    runtime = "autoglm_cuda_service_runtime_info"
    assert value(result, runtime, service="vllm", cuda_version="12.4", source="torch") == 1
    for index in (0, 1):
        assert value(result, "autoglm_cuda_compatible", gpu=str(index), service="vllm", check="driver") == 0
        assert (
            value(
                result, "autoglm_cuda_compatible", gpu=str(index), service="vllm", check="compute_capability"
            )
            == 1
        )
    assert value(result, "autoglm_cuda_compatible", gpu="0", service="open-autoglm", check="driver") is None
    facts = result.facts
    assert facts.services["vllm"].cuda_runtime == "12.4"
    assert facts.services["vllm"].cuda_runtime_source == "torch"
    assert len(facts.compatibility_problems) == 1
    assert facts.compatibility_problems[0].startswith(
        "vllm: driver supports CUDA 12.2, service is built for 12.4"
    )
    assert "550.54.14" in facts.compatibility_problems[0]
    fine = nvml_collector(nvml(_two_gpu_scenario(12040)), proc.path, services=_services()).collect()
    assert value(fine, "autoglm_cuda_compatible", gpu="0", service="vllm", check="driver") == 1
    assert fine.facts.compatibility_problems == ()
    assert_promtool_clean(exposition(result))


def test_an_old_gpu_under_a_new_cuda_is_incompatible(tmp_path, nvml) -> None:
    proc = FakeProc(tmp_path / "proc")
    proc.add(
        100,
        ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        maps=[f"{SITE}/nvidia/cuda_runtime/lib/libcudart.so.13"],
        files={f"{SITE}/nvidia_cuda_runtime-13.0.96.dist-info/METADATA": "Name: nvidia-cuda-runtime\n"},
    )
    scenario = Scenario(
        [FakeGpu(gpu_uuid(0), name="Tesla V100-SXM2-32GB", compute_capability=(7, 0), processes=[])],
        driver_version="580.65.06",
        cuda_driver_version=13000,
    )
    result = nvml_collector(nvml(scenario), proc.path, services=_services()[:1]).collect()
    assert value(result, "autoglm_cuda_compatible", gpu="0", service="vllm", check="compute_capability") == 0
    assert value(result, "autoglm_cuda_compatible", gpu="0", service="vllm", check="driver") == 1
    problem = result.facts.compatibility_problems[0]
    assert problem.startswith("vllm on GPU 0: GPU compute capability 7.0 is not supported by CUDA 13.x")
