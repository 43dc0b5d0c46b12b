"""The verdict as a pure function: the seed's flowchart, case by case, from facts alone."""

from __future__ import annotations

from autoglm_exporter.collectors.probe import ProbeFacts, ProbeOutcome, TargetFacts
from autoglm_exporter.collectors.process import ProcessFacts, ServiceFacts
from autoglm_exporter.core.store import CollectorHealth
from autoglm_exporter.diagnosis import REASONS, diagnose, verdict_families

NOW = 1_800_000_000.0
HEALTH = {name: CollectorHealth(runs=1, success=True) for name in ("process", "probe")}


def service(up: bool = True, ports: tuple[int, ...] = (8080,), expected: int = 8080) -> ProcessFacts:
    facts = ServiceFacts("api", expected_port=expected)
    if up:
        facts.pids = [4242]
        facts.threads = 12
        facts.listening_ports = list(ports)
        facts.expected_port_listening = expected in ports
    return ProcessFacts({"api": facts})


def probes(*targets: TargetFacts) -> ProbeFacts:
    return ProbeFacts({t.name: t for t in targets})


def target(name: str = "inference", ok: bool = True, reason: str | None = None, **kwargs) -> TargetFacts:
    module = kwargs.pop("module", "inference")
    layer = kwargs.pop("layer", "client")
    url = kwargs.pop("url", "http://127.0.0.1:8080/inference")
    outcome = ProbeOutcome(ok, reason=reason, error=None if ok else f"failed: {reason}", **kwargs)
    return TargetFacts(name, module, layer, kwargs.get("service", "api"), url, outcome, 0 if ok else 2, NOW)


def verdict(facts: dict):
    result = diagnose(facts, HEALTH, now=NOW)
    return (result.verdict.layer, result.verdict.reason) if result.verdict else None


def test_everything_answers_is_healthy() -> None:
    assert verdict({"process": service(), "probe": probes(target())}) is None


def test_refused_and_no_process_means_the_process_is_dead() -> None:
    facts = {"process": service(up=False), "probe": probes(target(ok=False, reason="connect_refused"))}
    assert verdict(facts) == ("network", "process_dead")


def test_refused_while_the_process_listens_elsewhere_is_a_wrong_port() -> None:
    facts = {"process": service(ports=(8081,)), "probe": probes(target(ok=False, reason="connect_refused"))}
    result = diagnose(facts, HEALTH, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("network", "wrong_port")
    assert "listens on 8081 instead" in result.verdict.summary


def test_refused_while_the_process_listens_nowhere_is_not_listening() -> None:
    facts = {"process": service(ports=()), "probe": probes(target(ok=False, reason="connect_refused"))}
    assert verdict(facts) == ("network", "not_listening")


def test_connect_timeout_points_at_the_network_path() -> None:
    facts = {"process": service(), "probe": probes(target(ok=False, reason="connect_timeout"))}
    result = diagnose(facts, HEALTH, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("network", "connect_timeout")
    assert "firewall" in result.verdict.summary


def test_connects_but_no_answer_with_no_deeper_cause_is_the_client_verdict() -> None:
    facts = {"process": service(), "probe": probes(target(ok=False, reason="read_timeout", connected=True))}
    result = diagnose(facts, HEALTH, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("client", "not_answering")
    assert result.verdict.next_command.startswith("curl -sv")


def test_engine_that_cannot_generate_while_health_is_200() -> None:
    generate = target(
        "vllm-generate",
        ok=False,
        reason="read_timeout",
        module="openai_chat",
        layer="dependencies",
        url="http://127.0.0.1:8000/v1/chat/completions",
    )
    health = target("vllm-health", module="http", layer="dependencies", url="http://127.0.0.1:8000/health")
    client = target(ok=False, reason="read_timeout", connected=True)
    result = diagnose({"process": service(), "probe": probes(client, generate, health)}, HEALTH, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("dependencies", "engine_not_generating")
    assert any("not proof of life" in line for line in result.verdict.evidence)
    assert any(line.startswith("symptom: probe inference") for line in result.verdict.evidence)


def test_a_failing_collector_is_named_when_nothing_else_is_broken() -> None:
    health = {
        **HEALTH,
        "system": CollectorHealth(runs=3, success=False, stuck=True, last_error="no result after 8s"),
    }
    result = diagnose({"process": service(), "probe": probes(target())}, health, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("exporter", "collector_stuck")


def test_verdict_metrics_cover_every_reason_with_exactly_one_set() -> None:
    result = diagnose(
        {"process": service(up=False), "probe": probes(target(ok=False, reason="connect_refused"))},
        HEALTH,
        now=NOW,
    )
    verdict_family, healthy = verdict_families(result)
    samples = {(s.labels["layer"], s.labels["reason"]): s.value for s in verdict_family.samples}
    assert len(samples) == sum(len(reasons) for reasons in REASONS.values())
    assert [key for key, value in samples.items() if value == 1] == [("network", "process_dead")]
    assert healthy.samples[0].value == 0


def test_container_limits_are_named_as_resources() -> None:
    from autoglm_exporter.collectors.container import ContainerFacts, ContainerServiceFacts

    def with_cgroup(**kwargs) -> dict:
        facts = ContainerServiceFacts("api", pid=4242, cgroup_version=2, cgroup_path="/svc", **kwargs)
        return {"container": ContainerFacts({"api": facts})}

    throttled = with_cgroup(cpu_quota_cores=0.5, cpu_throttled_fraction=0.6)
    assert verdict(throttled) == ("resources", "cpu_throttled")
    pressure = with_cgroup(
        memory_limit_bytes=8 * 2**30,
        memory_working_set_bytes=int(7.8 * 2**30),
        memory_working_set_ratio=0.975,
    )
    assert verdict(pressure) == ("resources", "memory_limit_pressure")
    assert verdict(with_cgroup(oom_kills=3, oom_kills_delta=1, memory_limit_bytes=2**30)) == (
        "resources",
        "oom_killed",
    )
    assert verdict(with_cgroup(cpu_throttled_fraction=0.01)) is None
