"""The GPU facts in the verdict: memory full, lost, XIDs, throttling, idle while requests wait."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from autoglm_exporter.collectors.gpu.collector import NO_GPU, GpuCollector
from autoglm_exporter.config import GpuConfig
from autoglm_exporter.diagnosis import diagnose
from autoglm_exporter.facts.engine import EngineFacts, EngineInstanceFacts

from .fakes.fake_pynvml import LIBRARY_NOT_FOUND, FakeGpu, FakeNvml, Scenario, gpu_uuid
from .fakes.proc import FakeProc

GIB = 1024**3


def gpu_facts(tmp_path: Path, **fields):
    fields = {"clock_reasons": 0, **fields}
    fake = FakeNvml(Scenario([FakeGpu(gpu_uuid(0), **fields)]))
    try:
        collector = GpuCollector(
            GpuConfig(call_timeout=2.0, nvidia_smi="/nonexistent/nvidia-smi"),
            (),
            FakeProc(tmp_path / "proc").path,
            fake,
        )
        return collector.collect().facts
    finally:
        fake.release()


def verdict(facts: dict):
    result = diagnose(facts, {})
    return (result.verdict.layer, result.verdict.reason) if result.verdict else None


def test_a_healthy_gpu_breaks_nothing(tmp_path: Path) -> None:
    result = diagnose({"gpu": gpu_facts(tmp_path)}, {})
    assert result.healthy
    assert any(link.name.startswith("gpu 0") and link.ok for link in result.links)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"memory_used": 79 * GIB, "memory_total": 80 * GIB}, "gpu_memory_full"),
        ({"lost": True}, "gpu_lost"),
        ({"clock_reasons": 0x20}, "gpu_throttled"),  # HW thermal slowdown
    ],
    ids=["memory-full", "lost", "thermal"],
)
def test_gpu_faults_are_resources_verdicts(tmp_path: Path, fields: dict, expected: str) -> None:
    assert verdict({"gpu": gpu_facts(tmp_path, **fields)}) == ("resources", expected)


def test_an_idle_gpu_while_requests_wait_is_a_stall(tmp_path: Path) -> None:
    engine = EngineInstanceFacts(
        "vllm", "vllm", None, True, None, None, 5.0, 0.0, 0.2, 100.0, 5.0, False, None
    )
    facts = {"gpu": gpu_facts(tmp_path, utilization_gpu=0), "engine": EngineFacts({"vllm": engine})}
    assert verdict(facts) == ("stall", "gpu_idle_with_backlog")


def test_no_gpu_is_said_not_blamed(tmp_path: Path) -> None:
    fake = FakeNvml(Scenario([], init_error=LIBRARY_NOT_FOUND))
    collector = GpuCollector(
        GpuConfig(call_timeout=2.0, nvidia_smi="/nonexistent/nvidia-smi"),
        (),
        FakeProc(tmp_path / "proc").path,
        fake,
    )
    facts = collector.collect().facts
    result = diagnose({"gpu": facts}, {})
    assert result.healthy
    assert [link.summary.startswith(NO_GPU) for link in result.links] == [True]


def test_an_incompatible_cuda_is_named_with_its_sentence(tmp_path: Path) -> None:
    sentence = "vllm: driver supports CUDA 12.2, service is built for 12.4"
    facts = replace(gpu_facts(tmp_path), compatibility_problems=(sentence,))
    result = diagnose({"gpu": facts}, {})
    assert result.verdict is not None
    assert (result.verdict.layer, result.verdict.reason) == ("resources", "cuda_incompatible")
    assert result.verdict.summary == sentence


def with_recent_xids(tmp_path: Path, *xids: int):
    facts = gpu_facts(tmp_path)
    device = replace(facts.gpus[0], xid_recent=xids, last_xid=xids[-1])
    return replace(facts, gpus=(device,))


@pytest.mark.parametrize(
    ("xid", "expected"),
    [
        (48, ("resources", "gpu_xid_errors")),
        (94, ("resources", "gpu_xid_errors")),
        (79, ("resources", "gpu_lost")),
    ],
    ids=["critical-double-bit-ecc", "warning-contained-ecc", "fell-off-the-bus"],
)
def test_an_xid_the_alerts_page_or_warn_on_breaks_the_gpu(tmp_path: Path, xid: int, expected: tuple) -> None:
    assert verdict({"gpu": with_recent_xids(tmp_path, xid)}) == expected


def test_an_xid_the_application_caused_is_evidence_not_a_gpu_fault(tmp_path: Path) -> None:
    result = diagnose({"gpu": with_recent_xids(tmp_path, 13, 43)}, {})
    assert result.healthy
    gpu_link = next(link for link in result.links if link.name.startswith("gpu 0"))
    assert gpu_link.ok
    assert any("XID 13" in line and "application" in line for line in gpu_link.evidence)


def test_a_gpu_at_its_power_cap_is_not_throttled(tmp_path: Path) -> None:
    assert verdict({"gpu": gpu_facts(tmp_path, clock_reasons=0x4)}) is None  # sw_power_cap
