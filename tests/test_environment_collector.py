"""Environment drift through the collector: a real service process, a baseline, what changed."""

from __future__ import annotations

import uuid

from prometheus_client import generate_latest

from autoglm_exporter.base.health import CollectorHealth
from autoglm_exporter.collectors.environment import EnvironmentCollector
from autoglm_exporter.config import EnvironmentConfig, ProcessMatch, ServiceConfig
from autoglm_exporter.diagnosis import diagnose
from autoglm_exporter.snapshot import take_snapshot, write_snapshot

from .conftest import assert_promtool_clean, registry_of

SLEEPER = "import time; print('up', flush=True); time.sleep(60)"


def _service(child_processes) -> tuple[ServiceConfig, int]:
    tag = f"env-{uuid.uuid4().hex[:8]}"
    child = child_processes(SLEEPER, tag)
    assert child.stdout.readline().strip() == b"up"
    return ServiceConfig("api", ProcessMatch(cmdline=tag)), child.pid


def test_first_snapshot_is_the_baseline_and_nothing_drifts(child_processes) -> None:
    service, pid = _service(child_processes)
    collector = EnvironmentCollector((service,), EnvironmentConfig())
    result = collector.collect()
    env = result.facts.services["api"]
    assert env.pid == pid and env.drifted == () and env.baseline_taken_at is not None
    registry = registry_of(result)
    assert (
        registry.get_sample_value("autoglm_environment_drift", {"service": "api", "component": "packages"})
        == 0
    )
    assert_promtool_clean(generate_latest(registry))


def test_a_package_changed_since_the_baseline_file_is_named(child_processes, tmp_path) -> None:
    service, pid = _service(child_processes)
    baseline = take_snapshot(pid)
    real_version = baseline["service"]["packages"]["httpx"]
    baseline["service"]["packages"]["httpx"] = "0.0.1"
    path = tmp_path / "baseline.json"
    write_snapshot(baseline, str(path))
    collector = EnvironmentCollector((service,), EnvironmentConfig(baselines={"api": str(path)}))
    result = collector.collect()
    env = result.facts.services["api"]
    assert env.drifted == ("packages",)
    assert f"httpx 0.0.1 → {real_version}" in env.changes
    value = registry_of(result).get_sample_value(
        "autoglm_environment_drift", {"service": "api", "component": "packages"}
    )
    assert value == 1
    # The verdict of a broken chain mentions what changed.
    health = {"process": CollectorHealth(runs=1, success=False, last_error="x")}
    verdict = diagnose({"environment": result.facts}, health).verdict
    assert verdict is not None
    assert any(f"httpx 0.0.1 → {real_version}" in line for line in verdict.evidence)


def test_no_process_means_unknown_not_zero() -> None:
    service = ServiceConfig("ghost", ProcessMatch(cmdline=f"nothing-{uuid.uuid4().hex}"))
    result = EnvironmentCollector((service,), EnvironmentConfig()).collect()
    assert result.facts.services["ghost"].error == "no process"
    assert (
        registry_of(result).get_sample_value(
            "autoglm_environment_drift", {"service": "ghost", "component": "packages"}
        )
        is None
    )
