"""The verdict as a pure function of typed facts, and over time: the seed's flowchart case by case,
the cause by onset and specificity, no flapping, trends over windows, stale readings."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from autoglm_exporter.base.health import CollectorHealth
from autoglm_exporter.base.thresholds import QUEUE_MIN_DEPTH, SAME_CYCLE_SECONDS
from autoglm_exporter.config import EngineConfig, ProbeTarget
from autoglm_exporter.diagnosis import REASONS, chains_of, diagnose, to_dict, verdict_families
from autoglm_exporter.diagnosis.model import Link
from autoglm_exporter.diagnosis.ranking import Broken, pick
from autoglm_exporter.facts.container import ContainerFacts, ContainerServiceFacts
from autoglm_exporter.facts.engine import EngineFacts
from autoglm_exporter.facts.process import DeadWorker, ProcessFacts, WorkerFacts

from .verdict_facts import (
    CONFIG,
    NOT_WAITING,
    T0,
    Feed,
    cuda_oom_log,
    deadlock,
    engine,
    failing,
    probes,
    processes,
    redis,
    service,
    system,
    target,
    throttled_cgroup,
    waiting,
)

NOW = T0
HEALTH = {name: CollectorHealth(runs=1, success=True) for name in ("process", "probe")}


def verdict(facts: dict, **kwargs):
    result = diagnose(facts, HEALTH, now=NOW, **kwargs)
    return (result.verdict.layer, result.verdict.reason) if result.verdict else None


# --- one reading, the seed's flowchart ------------------------------------------------------------


def test_everything_answers_is_healthy() -> None:
    assert verdict({"process": processes(), "probe": probes(target())}) is None


def test_refused_and_no_process_means_the_process_is_dead() -> None:
    facts = {"process": processes(service(up=False)), "probe": failing("connect_refused")}
    assert verdict(facts) == ("network", "process_dead")


def test_refused_while_the_process_listens_elsewhere_is_a_wrong_port() -> None:
    facts = {"process": processes(service(ports=(8081,))), "probe": failing("connect_refused")}
    result = diagnose(facts, HEALTH, now=NOW, observed_at={"process": NOW - 2})
    assert (result.verdict.layer, result.verdict.reason) == ("network", "wrong_port")
    assert "connection refused on 8080: api listens on 8081 instead" in result.verdict.summary


def test_a_refusal_is_never_blamed_on_a_port_the_process_listened_on() -> None:
    # Killed between the two readings: the process reading (3 s older) still shows it on 8080.
    facts = {"process": processes(service(ports=(8080,))), "probe": failing("connect_refused")}
    result = diagnose(facts, HEALTH, now=NOW, observed_at={"process": NOW - 3})
    assert (result.verdict.layer, result.verdict.reason) == ("network", "connect_refused")
    assert "wrong_port" not in result.verdict.summary and "instead" not in result.verdict.summary
    assert "though api (pid 4242) listened on it 3 s earlier" in result.verdict.summary


def test_wrong_port_is_judged_on_readings_of_the_same_moment_or_called_stale() -> None:
    facts = {"process": processes(service(ports=(8081,))), "probe": failing("connect_refused")}
    old = NOW - SAME_CYCLE_SECONDS - 30
    result = diagnose(facts, HEALTH, now=NOW, observed_at={"process": old})
    probe = next(link for link in result.links if link.name == "probe inference")
    assert (probe.layer, probe.reason) == ("network", "connect_refused")
    assert "the process reading was taken 45 s before it" in probe.summary
    assert any("stale" in line for line in probe.evidence)
    assert result.verdict.reason != "wrong_port"


def test_refused_while_the_process_listens_nowhere_is_not_listening() -> None:
    facts = {"process": processes(service(ports=())), "probe": failing("connect_refused")}
    assert verdict(facts) == ("network", "not_listening")


def test_connect_timeout_points_at_the_network_path() -> None:
    facts = {"process": processes(), "probe": failing("connect_timeout")}
    result = diagnose(facts, HEALTH, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("network", "connect_timeout")
    assert "firewall" in result.verdict.summary


@pytest.mark.parametrize(
    ("url", "module", "where", "command"),
    [
        (
            "http://[::1]:8080/inference",
            "inference",
            "[::1]:8080",
            "nc -vz -w 5 ::1 8080; ss -ltn 'sport = :8080'",
        ),
        (
            "https://api.internal/v1/chat/completions",
            "openai_chat",
            "api.internal:443",
            "nc -vz -w 5 api.internal 443; ss -ltn 'sport = :443'",
        ),
        ("10.0.0.7:6379", "tcp", "10.0.0.7:6379", "nc -vz -w 5 10.0.0.7 6379; ss -ltn 'sport = :6379'"),
    ],
)
def test_a_connect_timeout_names_the_address_the_probe_dials(
    url: str, module: str, where: str, command: str
) -> None:
    # IPv6 in brackets, a URL's default port, a tcp target's HOST:PORT: the command must run as given.
    failed = target(ok=False, reason="connect_timeout", url=url, module=module)
    result = diagnose({"process": processes(), "probe": probes(failed)}, HEALTH, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("network", "connect_timeout")
    assert result.verdict.summary.startswith(f"connect to {where} timed out")
    assert result.verdict.next_command == command


def test_connects_but_no_answer_with_no_deeper_cause_is_the_client_verdict() -> None:
    facts = {"process": processes(), "probe": failing("read_timeout")}
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
        service="vllm",
    )
    health = target(
        "vllm-health", module="http", layer="dependencies", url="http://127.0.0.1:8000/health", service="vllm"
    )
    client = target(ok=False, reason="read_timeout", connected=True)
    result = diagnose({"process": processes(), "probe": probes(client, generate, health)}, HEALTH, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("dependencies", "engine_not_generating")
    assert any("not proof of life" in line for line in result.verdict.evidence)
    assert any(line.startswith("symptom: probe inference") for line in result.verdict.evidence)


def test_a_failing_collector_is_named_when_nothing_else_is_broken() -> None:
    health = {
        **HEALTH,
        "system": CollectorHealth(runs=3, success=False, stuck=True, last_error="no result after 8s"),
    }
    result = diagnose({"process": processes(), "probe": probes(target())}, health, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("exporter", "collector_stuck")
    assert "no new run until it does" in result.verdict.summary


def test_a_command_killed_at_its_deadline_is_a_failed_run_not_a_stuck_collector() -> None:
    killed = CollectorHealth(
        runs=3, success=False, last_error="nvidia-smi took the whole 5s", last_error_kind="timeout"
    )
    result = diagnose({"process": processes(), "probe": probes(target())}, {**HEALTH, "gpu": killed}, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("exporter", "collector_failed")
    assert "passed its deadline and was given up (a command is killed)" in result.verdict.summary
    assert "stuck" not in result.verdict.summary
    # An NVML call that never returns cannot be killed: later runs are skipped, the collector is stuck.
    hung = CollectorHealth(
        runs=4, success=False, last_error="NVML call stuck", last_error_kind="skipped_stuck"
    )
    result = diagnose({"process": processes(), "probe": probes(target())}, {**HEALTH, "gpu": hung}, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("exporter", "collector_stuck")


def test_container_limits_are_named_as_resources() -> None:
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


# --- probes still in flight ----------------------------------------------------------------------


def test_a_probe_still_waiting_past_hang_after_is_not_answering_so_far() -> None:
    facts = {"process": processes(), "probe": probes(target()), "inflight": waiting(6.2)}
    result = diagnose(facts, HEALTH, now=NOW, hang_after=5.0)
    assert (result.verdict.layer, result.verdict.reason) == ("client", "not_answering")
    assert result.verdict.summary.startswith("no answer for 6 s so far")
    assert result.verdict.next_command.startswith("py-spy dump --pid 4242")
    assert verdict({**facts, "inflight": waiting(3.0)}, hang_after=5.0) is None  # still a normal wait


def test_a_wait_the_exporter_itself_spent_stalled_is_not_a_hang() -> None:
    """The exporter starved for 6 s of a probe's 8.7 s wait (the real vLLM flood on 2 cores): the
    answer may be there, unread. It is judged by the 2.7 s the exporter watched, a hang once that
    passes hang_after."""
    facts = {"process": processes(), "probe": probes(target()), "inflight": waiting(8.7, stalled=6.0)}
    assert verdict(facts, hang_after=5.0) is None
    later = {**facts, "inflight": waiting(11.5, stalled=6.0)}
    assert verdict(later, hang_after=5.0) == ("client", "not_answering")


def test_a_waiting_probe_to_a_dead_process_is_not_a_hang() -> None:
    facts = {"process": processes(service(up=False)), "probe": probes(target()), "inflight": waiting(9.0)}
    assert verdict(facts) == ("service", "process_missing")


def test_a_probe_that_cannot_even_connect_is_a_network_fault_so_far() -> None:
    facts = {"process": processes(), "inflight": waiting(7.0, connected=False)}
    result = diagnose(facts, HEALTH, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("network", "connect_timeout")
    assert "no connection after 7 s so far" in result.verdict.summary


def test_a_generation_probe_waiting_beside_a_healthy_health_check_is_an_engine_not_generating() -> None:
    generate = target(
        "vllm-generate", module="openai_chat", layer="dependencies", service="vllm", url="http://e/v1/chat"
    )
    health = target("vllm-health", module="http", layer="dependencies", service="vllm", url="http://e/health")
    facts = {
        "process": processes(),
        "probe": probes(target(), generate, health),
        "inflight": waiting(8.0, name="vllm-generate", service="vllm", layer="dependencies"),
    }
    result = diagnose(facts, HEALTH, now=NOW)
    assert (result.verdict.layer, result.verdict.reason) == ("dependencies", "engine_not_generating")
    assert any("no answer for 8 s so far" in line for line in result.verdict.evidence)


# --- which broken link is the cause ---------------------------------------------------------------


def test_a_host_busy_with_other_work_never_outranks_what_the_service_did() -> None:
    facts = {"process": processes(), "probe": failing("read_timeout"), "system": system(busy=0.99)}
    health = {**HEALTH, "system": CollectorHealth(runs=1, success=True)}
    hung = diagnose(facts, health, now=NOW)
    # Other work keeps the CPUs busy and the service hangs: the hang is named, the CPU is evidence.
    assert (hung.verdict.layer, hung.verdict.reason) == ("client", "not_answering")
    assert any(line.startswith("the machine (cpu saturated): ") for line in hung.verdict.evidence)
    for reason, named in (("http_status", "http_error"), ("bad_body", "bad_answer"), ("reset", "reset")):
        answered = diagnose({**facts, "probe": failing(reason)}, health, now=NOW)
        assert (answered.verdict.layer, answered.verdict.reason) == ("client", named)
    explained = diagnose({**facts, "forensics": deadlock(NOW)}, health, now=NOW)
    assert (explained.verdict.layer, explained.verdict.reason) == ("stall", "threads_blocked")
    throttled = diagnose({**facts, "container": throttled_cgroup()}, health, now=NOW)
    assert (throttled.verdict.layer, throttled.verdict.reason) == ("resources", "cpu_throttled")
    # With nothing about the service or its users broken, the busy machine is the verdict.
    alone = diagnose({**facts, "probe": probes(target())}, health, now=NOW)
    assert (alone.verdict.layer, alone.verdict.reason) == ("resources", "cpu_saturated")


def test_a_busy_host_is_about_the_service_when_the_service_itself_burns_the_cpu() -> None:
    feed = Feed()
    feed.healthy_start()
    for spent in (10.0, 13.8, 17.6):  # 1.9 CPU seconds per second (2 s apart) of 2 CPUs
        feed.publish("process", processes(service(cpu_user_seconds=spent)))
        feed.publish("system", system(busy=0.99))
    assert feed.verdict() == ("resources", "cpu_saturated")
    assert feed.diagnosis.verdict.subject == "api"
    assert "api itself takes most of it" in feed.diagnosis.verdict.evidence


def test_the_cause_is_the_link_that_broke_first_not_the_first_layer() -> None:
    # Redis went first, then the service logged errors: a fixed layer order would name the log.
    feed = Feed()
    feed.healthy_start()
    feed.publish("redis", redis(up=False))
    broke = feed.now
    feed.publish("redis", redis(up=False), after=10)
    feed.publish("logs", cuda_oom_log(feed.now))
    feed.publish("logs", cuda_oom_log(feed.now - 1))
    feed.publish("probe", failing("http_status", at=feed.now))
    feed.publish("probe", failing("http_status", at=feed.now))
    assert feed.verdict() == ("dependencies", "redis_down")
    assert feed.diagnosis.chains[0].since == broke
    assert any(line.startswith("symptom: probe inference") for line in feed.diagnosis.verdict.evidence)

    other = Feed()
    other.healthy_start()
    other.publish("logs", cuda_oom_log(other.now))
    other.publish("logs", cuda_oom_log(other.now))
    other.publish("redis", redis(up=False), after=10)
    other.publish("redis", redis(up=False), after=10)
    assert other.verdict() == ("service", "log_errors")


# --- over time: no flapping, onsets, history -----------------------------------------------------


def test_one_noisy_reading_never_changes_the_verdict() -> None:
    feed = Feed()
    feed.healthy_start()
    for n in range(10):
        feed.publish("probe", failing(at=feed.now) if n % 2 else probes(target(at=feed.now)), after=10)
        feed.publish("system", system())
        assert feed.verdict() is None
    assert feed.verdict_changes() == []


def test_a_steady_fault_gives_one_verdict_after_two_readings_of_its_own_collector() -> None:
    feed = Feed()
    feed.healthy_start()
    feed.publish("probe", failing(at=feed.now), after=10)
    first_failure = feed.now
    for _ in range(5):  # other collectors publishing are not readings of the probe
        feed.publish("system", system())
        feed.publish("process", processes())
        assert feed.verdict() is None
    feed.publish("probe", failing(at=feed.now), after=10)
    assert feed.verdict() == ("client", "not_answering")
    assert feed.diagnosis.chains[0].since == first_failure
    for _ in range(6):
        feed.publish("probe", failing(at=feed.now), after=10)
        feed.publish("system", system())
    assert feed.verdict_changes() == [("client", "not_answering")]
    # It heals the same way: two good readings.
    feed.publish("probe", probes(target(at=feed.now)), after=10)
    assert feed.verdict() == ("client", "not_answering")
    feed.publish("probe", probes(target(at=feed.now)), after=10)
    assert feed.verdict() is None
    assert feed.verdict_changes() == [("client", "not_answering"), (None, None)]
    assert feed.diagnosis.chains[0].since == feed.now


def test_confirm_readings_is_configurable() -> None:
    feed = Feed(confirm=3)
    feed.healthy_start()
    for expected in (None, None, ("client", "not_answering")):
        feed.publish("probe", failing(at=feed.now), after=10)
        assert feed.verdict() == expected


def test_broken_at_start_is_broken_since_before_the_exporter_started() -> None:
    feed = Feed()
    feed.publish("process", processes(service(up=False)))
    feed.publish("probe", failing("connect_refused", at=feed.now))
    feed.publish("process", processes(service(up=False)), after=10)
    feed.publish("probe", failing("connect_refused", at=feed.now), after=1)
    assert feed.verdict() == ("network", "process_dead")
    chain = feed.diagnosis.chains[0]
    assert chain.since is None
    assert to_dict(feed.diagnosis, now=feed.now)["since_text"] == "broken since before the exporter started"
    since = {s.labels["service"]: s.value for s in feed.families[2].samples}
    assert since == {"api": feed.diagnoser.started_at}


def _killed(feed: Feed, readings: tuple[str, ...]) -> None:
    """The service was killed: each collector in `readings` reads it, half a second apart."""
    for name in readings:
        if name == "process":
            feed.publish(name, processes(service(up=False)), after=0.5)
        else:
            feed.publish(name, failing("connect_refused", at=feed.now + 0.5), after=0.5)


def test_a_killed_service_gets_one_verdict_whichever_collector_reads_first() -> None:
    for order in sorted(set(itertools.permutations(("process", "process", "probe", "probe")))):
        feed = Feed()
        feed.healthy_start()
        killed_at = feed.now
        _killed(feed, order)
        assert feed.verdict_changes() == [("network", "process_dead")], order
        assert feed.diagnosis.chains[0].since == killed_at + 0.5, order  # the first reading that saw it


def test_a_killed_service_back_again_goes_straight_to_healthy() -> None:
    """On the way back the user's probe answers twice before the process collector reads twice:
    the service's side of the fault (process missing), which its own reading already saw fixed,
    must not be named alone for a moment after the user's side cleared."""
    feed = Feed()
    feed.healthy_start()
    _killed(feed, ("process", "probe", "process", "probe"))
    assert feed.verdict() == ("network", "process_dead")
    feed.publish("process", processes(service(pid=5151)), after=5)  # started again: seen once
    feed.publish("probe", probes(target(at=feed.now + 0.5)), after=0.5)
    feed.publish("probe", probes(target(at=feed.now + 2)), after=2)  # the user's side confirmed fixed
    assert feed.verdict() is None
    assert feed.verdict_changes() == [("network", "process_dead"), (None, None)]


def test_a_freed_port_goes_straight_to_healthy() -> None:
    """Another process held the service's port (its users got its HTTP errors). Once the service
    listens again, the process reading clears its side and the probe, read again, answers: the
    users' side must not be named alone for a moment on the way back."""
    feed = Feed()
    feed.healthy_start()
    taken = service(ports=(), port_taken_by=[(999, "python3 -m http.server 8080")])
    for _ in range(2):
        feed.publish("process", processes(taken), after=5)
        feed.publish("probe", failing("http_status", at=feed.now + 1), after=1)
    assert feed.verdict() == ("service", "port_taken")
    feed.publish("process", processes(service(pid=5151)), after=5)  # listening again: seen once
    assert "probe" in feed.read_again  # its users' side is asked at once
    feed.publish("probe", probes(target(at=feed.now + 0.5)), after=0.5)  # answers
    feed.publish("process", processes(service(pid=5151)), after=2)  # the service's side confirmed
    assert feed.verdict() is None
    assert feed.verdict_changes() == [("service", "port_taken"), (None, None)]


def test_redis_back_goes_straight_to_healthy_with_the_users_errors() -> None:
    """Redis down made the service answer 500s. Redis answers again: the probe is read again while
    Redis's fix is confirmed, and the 500s it no longer sees clear with their cause; the symptom is
    not named alone for a moment on the way back."""
    feed = Feed()
    feed.healthy_start()
    for _ in range(2):
        feed.publish("redis", redis(up=False), after=5)
        feed.publish("probe", failing("http_status", at=feed.now + 1), after=1)
    assert feed.verdict() == ("dependencies", "redis_down")
    feed.publish("redis", redis(), after=5)  # back: seen once
    assert "probe" in feed.read_again
    feed.publish("probe", probes(target(at=feed.now + 0.5)), after=0.5)  # the users' side answers
    feed.publish("redis", redis(), after=2)  # Redis's fix confirmed
    assert feed.verdict() is None
    assert feed.verdict_changes() == [("dependencies", "redis_down"), (None, None)]


def test_users_errors_confirmed_before_redis_down_name_redis_down_at_once() -> None:
    """Redis died: the probe's 500s were confirmed by its second reading before Redis's own down
    state was (one reading of it so far). The symptom alone is never the verdict: Redis down,
    seen once, explains it and is named at once."""
    feed = Feed()
    feed.healthy_start()
    feed.publish("redis", redis(up=False), after=5)
    feed.publish("probe", failing("http_status", at=feed.now + 0.5), after=0.5)
    feed.publish("probe", failing("http_status", at=feed.now + 2), after=2)
    assert feed.verdict() == ("dependencies", "redis_down")
    assert feed.verdict_changes() == [("dependencies", "redis_down")]


def test_a_vanished_process_waits_for_the_users_probe_at_most_one_reading() -> None:
    feed = Feed()
    feed.healthy_start()
    _killed(feed, ("process", "process"))
    assert feed.verdict() is None  # the probe, not read since, will name it
    _killed(feed, ("process",))  # the probe did not read (stuck, failing): named from the process side
    assert feed.verdict_changes() == [("service", "process_missing")]


def test_a_refusal_the_process_reading_predates_waits_for_the_next_one_at_most_one_reading() -> None:
    feed = Feed()
    feed.healthy_start()
    _killed(feed, ("probe", "probe"))
    assert feed.verdict() is None  # the process listened at its last reading: has it died since?
    _killed(feed, ("probe",))  # the process collector did not read: the refusal alone
    assert feed.verdict_changes() == [("network", "connect_refused")]
    assert "though api (pid 4242) listened on it" in feed.diagnosis.verdict.summary


def test_more_specific_about_the_same_symptom_replaces_the_verdict_at_once() -> None:
    feed = Feed()
    feed.healthy_start()
    feed.publish("inflight", waiting(5.2))
    hung = feed.now
    feed.publish("inflight", waiting(6.2))
    assert feed.verdict() == ("client", "not_answering")
    assert feed.diagnosis.verdict.summary.startswith("no answer for 6 s so far")
    feed.touch(deadlock(feed.now))  # the capture finished: no further reading needed
    assert feed.verdict() == ("stall", "threads_blocked")
    assert feed.diagnosis.chains[0].since == hung  # broken since the symptom began
    assert feed.verdict_changes() == [("client", "not_answering"), ("stall", "threads_blocked")]
    # The probe finally times out: the same symptom, nothing changes.
    feed.publish("inflight", NOT_WAITING)
    feed.publish("probe", failing(at=feed.now))
    feed.publish("inflight", NOT_WAITING)
    assert feed.verdict() == ("stall", "threads_blocked")


def test_a_flapping_busy_host_never_displaces_a_hang_or_its_deadlock() -> None:
    feed = Feed()
    feed.healthy_start()
    for n in range(8):
        feed.publish("inflight", waiting(5.0 + n))
        feed.publish("system", system(busy=0.99 if n % 2 else 0.2))
    assert feed.verdict() == ("client", "not_answering")
    feed.touch(deadlock(feed.now))
    for n in range(6):
        feed.publish("system", system(busy=0.99))
        feed.publish("inflight", waiting(14.0 + n))
    assert feed.verdict() == ("stall", "threads_blocked")
    assert feed.verdict_changes() == [("client", "not_answering"), ("stall", "threads_blocked")]


def test_history_tells_which_link_broke_first_what_followed_and_when_it_cleared() -> None:
    feed = Feed()
    feed.healthy_start()
    feed.publish("redis", redis(up=False), after=10)
    feed.publish("redis", redis(up=False), after=10)
    feed.publish("probe", failing("http_status", at=feed.now), after=1)
    feed.publish("probe", failing("http_status", at=feed.now), after=10)
    feed.publish("redis", redis(), after=10)
    feed.publish("redis", redis(), after=10)
    feed.publish("probe", probes(target(at=feed.now)), after=1)
    feed.publish("probe", probes(target(at=feed.now)), after=10)
    timeline = [(c.kind, c.name, c.reason) for c in feed.diagnosis.history]
    assert timeline == [
        ("link", "redis queue", "redis_down"),
        ("verdict", "api", "redis_down"),
        ("link", "probe inference", "http_error"),
        ("link", "redis queue", None),
        ("verdict", "api", "http_error"),
        ("link", "probe inference", None),
        ("verdict", "api", None),
    ]
    assert feed.diagnosis.history[0].at == T0 + 16  # when the redis collector first saw it down


# --- trends judged over several readings ----------------------------------------------------------


def test_one_burst_onto_an_idle_queue_is_not_a_backlog() -> None:
    feed = Feed()
    feed.healthy_start()
    for depth in (0, 5, 5, 5, 6):  # one LPUSH of 5 items
        feed.publish("redis", redis(depth=depth), after=10)
    assert feed.verdict() is None


def test_queue_growth_needs_several_readings_and_a_minimum_depth() -> None:
    feed = Feed()
    feed.healthy_start()
    for depth in (1, 2, 3, 4, 5, 5, 5):  # grows, but a handful of requests is normal traffic
        feed.publish("redis", redis(depth=depth), after=10)
    assert feed.verdict() is None
    feed.publish("redis", redis(depth=QUEUE_MIN_DEPTH), after=10)
    grew_at = feed.now
    assert feed.verdict() is None  # one rise is not yet a trend
    feed.publish("redis", redis(depth=QUEUE_MIN_DEPTH + 4), after=10)
    assert feed.verdict() == ("stall", "queue_backlog_growing")  # held over 3 readings: no extra wait
    assert feed.diagnosis.chains[0].since == grew_at
    assert feed.diagnosis.chains[0].users_hurt


def test_engine_tokens_flat_for_less_than_the_window_is_not_a_stall() -> None:
    feed = Feed()
    feed.healthy_start()
    for flat in (1, 2):  # flat, but not yet over the window (the collector's `stalled`)
        feed.publish("engine", engine(waiting=4, flat=flat), after=10)
        feed.publish("system", system())
        assert feed.verdict() is None
    feed.publish("engine", engine(waiting=4, flat=3, stalled=True), after=10)
    assert feed.verdict() == ("stall", "engine_stalled")  # held over its window: no extra wait
    assert "no token generated for 3 readings" in feed.diagnosis.verdict.summary
    feed.publish("engine", engine(waiting=0, tokens=150), after=10)
    feed.publish("engine", engine(waiting=0, tokens=200), after=10)
    assert feed.verdict() is None


# --- metrics and chains ---------------------------------------------------------------------------


def test_verdict_metrics_cover_every_reason_with_exactly_one_set() -> None:
    result = diagnose(
        {"process": processes(service(up=False)), "probe": failing("connect_refused")}, HEALTH, now=NOW
    )
    verdict_family, healthy, since, hurt = verdict_families(result)
    samples = {(s.labels["layer"], s.labels["reason"]): s.value for s in verdict_family.samples}
    assert {s.labels["service"] for s in verdict_family.samples} == {"api"}
    assert len(samples) == sum(len(reasons) for reasons in REASONS.values())
    assert [key for key, value in samples.items() if value == 1] == [("network", "process_dead")]
    assert healthy.samples[0].value == 0
    assert hurt.samples[0].labels == {"service": "api"} and hurt.samples[0].value == 1


def test_resources_only_with_a_healthy_client_does_not_hurt_users() -> None:
    feed = Feed()
    feed.healthy_start()
    feed.publish("container", throttled_cgroup())
    feed.publish("container", throttled_cgroup())
    assert feed.verdict() == ("resources", "cpu_throttled")
    hurt = {s.labels["service"]: s.value for s in feed.families[3].samples}
    assert hurt == {"api": 0}
    feed.publish("probe", failing(at=feed.now))
    feed.publish("probe", failing(at=feed.now))
    assert {s.labels["service"]: s.value for s in feed.families[3].samples} == {"api": 1}


def test_each_service_has_its_own_verdict_from_what_it_depends_on() -> None:
    from dataclasses import replace

    from autoglm_exporter.config import ProbeTarget, ProcessMatch, ServiceConfig

    from .verdict_facts import CONFIG

    config = replace(
        CONFIG,
        services=CONFIG.services + (ServiceConfig("search", ProcessMatch(port=9090), port=9090),),
        targets=CONFIG.targets + (ProbeTarget("search", "http", "http://127.0.0.1:9090/", service="search"),),
    )
    feed = Feed(config)
    feed.healthy_start()
    feed.publish("redis", redis(up=False))
    feed.publish("redis", redis(up=False))
    chains = {c.service: c.verdict.reason if c.verdict else None for c in feed.diagnosis.chains}
    assert chains == {"api": "redis_down", "search": None}
    ones = {s.labels["service"] for s in feed.families[0].samples if s.value == 1}
    assert ones == {"api"}


# --- the most specific link about one thing, whenever it came ------------------------------------


def test_of_two_links_about_one_thing_the_more_specific_wins_even_when_it_broke_later() -> None:
    def broken(name: str, layer: str, reason: str, subject: str, since: float) -> Broken:
        return Broken(Link(name, layer, False, reason, reason, subject=subject), since)

    # The generation probe fails first (after hang_after); the engine's own metrics then show
    # requests waiting while no token comes: the stall says more about the same engine.
    not_generating = broken("probe vllm-generate", "dependencies", "engine_not_generating", "vllm", 100.0)
    stalled = broken("engine vllm generation", "stall", "engine_stalled", "vllm", 120.0)
    assert pick([not_generating, stalled]).cause.reason == "engine_stalled"
    # A thread spinning (stacks) says more than the service's own busy CPU.
    own_cpu = broken("system", "resources", "cpu_saturated", "api", 100.0)
    spinning = broken("stacks api", "stall", "cpu_bound_loop", "api", 115.0)
    assert pick([own_cpu, spinning]).cause.reason == "cpu_bound_loop"
    # About different things, the one that broke first is the cause.
    redis_down = broken("redis queue", "dependencies", "redis_down", "queue", 100.0)
    assert pick([redis_down, stalled]).cause.reason == "redis_down"


def test_a_collector_stuck_on_a_saturated_machine_is_the_machines_evidence() -> None:
    """A flood of requests on the real vLLM starved the 2-core machine: the exporter's own runs
    passed their deadlines after the CPU was saturated. The saturation is the cause; the stuck
    collector is its evidence. A command killed at its deadline (a hung nvidia-smi) is no
    evidence of a busy machine, and a collector stuck before the machine was busy stays the cause."""

    def broken(name: str, layer: str, reason: str, since: float) -> Broken:
        return Broken(Link(name, layer, False, f"{name} is {reason}", reason), since)

    saturated = broken("system", "resources", "cpu_saturated", 100.0)
    stuck = broken("collector engine", "exporter", "collector_stuck", 120.0)
    chosen = pick([saturated, stuck])
    assert chosen is not None and chosen.cause.reason == "cpu_saturated"
    assert any("collector engine, on the saturated machine" in line for line in chosen.cause.evidence)

    alone = pick([stuck])
    assert alone is not None and alone.cause.reason == "collector_stuck"
    killed = pick([saturated, broken("collector gpu", "exporter", "collector_failed", 120.0)])
    assert killed is not None and killed.cause.reason == "collector_failed"
    stuck_first = pick([saturated, broken("collector gpu", "exporter", "collector_stuck", 90.0)])
    assert stuck_first is not None and stuck_first.cause.reason == "collector_stuck"


def test_a_process_replaced_again_and_again_is_a_crash_loop_until_it_stops() -> None:
    feed = Feed()
    feed.healthy_start()
    for pid in (5001, 5002):  # another process at each reading: the one before died
        feed.publish("process", processes(service(pid=pid)), after=10)
    assert feed.verdict() == ("service", "restarting")
    assert "keeps restarting: 2 new processes" in feed.diagnosis.verdict.summary
    for _ in range(14):  # it stays up: the loop ages out of its window
        feed.publish("process", processes(service(pid=5002)), after=10)
    assert feed.verdict() is None


def test_two_restarts_of_processes_that_served_a_while_are_not_a_crash_loop() -> None:
    """An operator moves the port back, then fixes a config: two restarts within 70 s, each process
    replaced having served for more than a minute. That is not a loop; processes dying young are."""
    feed = Feed()
    feed.healthy_start()
    t = feed.now
    started = {4242: t - 600, 5001: t + 15, 5002: t + 85, 5003: t + 105, 5004: t + 115}

    def reading(pid: int) -> None:  # every 10 s
        feed.publish("process", processes(service(pid=pid, start_time=started[pid])), after=10)

    for pid in (4242, 5001, 5001, 5001, 5001, 5001, 5001, 5001, 5002, 5002):  # t+10 ... t+100
        reading(pid)
    assert feed.verdict() is None  # restarted at t+20 and t+90, after 620 s and 75 s of service
    reading(5003)  # t+110: 5002 died 25 s after it started: once is not a loop
    assert feed.verdict() is None
    reading(5004)  # t+120: 5003 died young too
    assert feed.verdict() == ("service", "restarting")
    for _ in range(4):  # t+160: 5004 has run 45 s, the loop may still go on
        reading(5004)
    assert feed.verdict() == ("service", "restarting")
    for _ in range(4):  # t+200: 5004 has outlived any young death: the loop stopped
        reading(5004)
    assert feed.verdict() is None  # before the restarts leave their 2 min window (t+230)


def test_the_crash_loop_windows_come_from_the_config() -> None:
    """diagnosis.restart_loop_young / _window: with processes counted young under 15 s, restarts of
    processes that served 30 s are no loop (they would be at the default minute); deaths at 12 s are."""
    from autoglm_exporter.config import DiagnosisConfig

    feed = Feed(
        config=dataclasses.replace(
            CONFIG, diagnosis=DiagnosisConfig(restart_loop_young=15.0, restart_loop_window=60.0)
        )
    )
    feed.healthy_start()
    t = feed.now
    started = {4242: t - 600, 5001: t - 10, 5002: t + 15, 5003: t + 28}

    def reading(pid: int) -> None:  # every 10 s
        feed.publish("process", processes(service(pid=pid, start_time=started[pid])), after=10)

    for pid in (4242, 5001, 5001, 5002):  # t+10 ... t+40: replaced after 600 s and 30 s of service
        reading(pid)
    assert feed.verdict() is None
    reading(5003)  # t+50: 5002 died after 35 s: not young here
    assert feed.verdict() is None
    started[5004] = t + 58
    reading(5004)  # t+60: 5003 died 32 s after it started
    assert feed.verdict() is None
    started[5005] = t + 69
    reading(5005)  # t+70: 5004 died 12 s after it started (young)
    started[5006] = t + 79
    reading(5006)  # t+80: 5005 died young too: a loop
    assert feed.verdict() == ("service", "restarting")
    assert "in the last 60 s" in feed.diagnosis.verdict.summary


def test_a_process_caught_down_between_restarts_counts_as_gone() -> None:
    feed = Feed()
    feed.healthy_start()
    for up, pid in ((False, 0), (True, 6001), (False, 0)):  # up, gone, back, gone
        feed.publish("process", processes(service(up=up, pid=pid)), after=10)
    assert feed.verdict() == ("service", "restarting")


def test_a_hung_generation_probe_corroborates_one_flat_reading_of_a_stalled_engine() -> None:
    generate = ProbeTarget(
        "vllm-generate", "openai_chat", "http://127.0.0.1:8000/v1/chat/completions", "dependencies", "vllm"
    )
    feed = Feed(config=dataclasses.replace(CONFIG, targets=(*CONFIG.targets, generate)))
    feed.healthy_start()
    feed.publish("engine", engine(waiting=4, flat=1), after=10)
    assert feed.verdict() is None  # one flat reading alone is not a stall
    # The engine's own generation probe has waited past hang_after for its token: the same stall,
    # seen a second way; no need to wait for a second flat reading.
    feed.publish("inflight", waiting(8.0, name="vllm-generate", service="vllm", layer="dependencies"))
    feed.publish("inflight", waiting(9.0, name="vllm-generate", service="vllm", layer="dependencies"))
    assert feed.verdict() == ("stall", "engine_stalled")


def test_a_generation_hanging_on_an_engine_reads_the_engine_again_and_names_the_stall() -> None:
    """The engine's last reading still saw tokens (the stall began after it); its generation probe
    then hangs past hang_after. The hang awaits the engine's next reading, asked for at once, which
    sees the flat tokens: the stall is named then, not an interval later behind the probe alone."""
    generate = ProbeTarget(
        "vllm-generate", "openai_chat", "http://127.0.0.1:8000/v1/chat/completions", "dependencies", "vllm"
    )
    feed = Feed(config=dataclasses.replace(CONFIG, targets=(*CONFIG.targets, generate)))
    feed.healthy_start()
    answered = target("vllm-generate", module="openai_chat", layer="dependencies", service="vllm")
    feed.publish("probe", probes(target(), answered))  # its last generation answered
    feed.publish("engine", engine(waiting=4), after=10)  # tokens still came since the last reading
    hung = waiting(8.0, name="vllm-generate", service="vllm", layer="dependencies")
    feed.publish("inflight", hung)
    assert "engine" in feed.read_again
    feed.publish("inflight", waiting(9.0, name="vllm-generate", service="vllm", layer="dependencies"))
    assert feed.verdict() is None  # the hang waits for the engine's reading (at most one more of its own)
    feed.publish("engine", engine(waiting=4, flat=1), after=1)  # read again: no token since
    assert feed.verdict() == ("stall", "engine_stalled")
    assert feed.verdict_changes() == [("stall", "engine_stalled")]


# --- a worker child stuck while its parent answers (vLLM's engine core) ----------------------------


_LETTERS = {"sleeping": "S", "stopped": "T", "zombie": "Z", "disk_sleep": "D"}


def _worker(state: str = "sleeping", idle: int = 0, readings: int = 2, letter: str = "") -> WorkerFacts:
    """vLLM's engine core, in `state` at `readings` readings in a row, idle at `idle` of them."""
    return WorkerFacts(
        5151, 4242, "VLLM::EngineCore", state, 1000, 30.0, 2.0, 40, {state: 40}, 9000, 100,
        state_readings=readings, idle_readings=idle, idle_since=T0 if idle else None,
        letter=letter or _LETTERS[state],
    )  # fmt: skip


def _with_worker(worker: WorkerFacts) -> ProcessFacts:
    api = service(child_processes=1, worker=worker, children=[worker])
    return processes(api)


def test_a_stopped_engine_core_is_named_with_its_pid_and_state_while_a_probe_hangs() -> None:
    feed = Feed()
    feed.healthy_start()
    feed.publish("process", _with_worker(_worker("stopped")))
    assert feed.verdict() is None  # stopped, but nothing hangs on it (yet)
    feed.publish("inflight", waiting(6.0))
    feed.publish("inflight", waiting(7.0))
    feed.publish("process", _with_worker(_worker("stopped")))
    assert feed.verdict() == ("stall", "worker_stuck")
    verdict = feed.diagnosis.verdict
    assert verdict.summary.startswith("worker process VLLM::EngineCore (pid 5151, state T) is stopped")
    assert "probe inference has waited 7 s for its answer" in verdict.summary
    assert verdict.evidence[0].startswith("pid 5151 VLLM::EngineCore: state T (stopped), 40 threads")
    assert "py-spy dump --nonblocking --pid 5151" in verdict.next_command


def test_a_child_held_by_a_tracer_or_blocked_for_one_reading_only_is_not_stuck() -> None:
    """A tracer (py-spy, a debugger) holds a process for a moment, I/O blocks one: not a stuck engine
    core. A SIGSTOP (T) stays until someone continues it: stuck at once."""
    for moment in (_worker("stopped", readings=1, letter="t"), _worker("disk_sleep", readings=1)):
        facts = {"process": _with_worker(moment), "inflight": waiting(9.0)}
        assert verdict(facts) == ("client", "not_answering")
        held = {**facts, "process": _with_worker(dataclasses.replace(moment, state_readings=2))}
        assert verdict(held) == ("stall", "worker_stuck")
    sigstop = {"process": _with_worker(_worker("stopped", readings=1)), "inflight": waiting(9.0)}
    assert verdict(sigstop) == ("stall", "worker_stuck")


def test_a_health_200_is_no_proof_of_life_of_a_stopped_engine_core() -> None:
    health = target("vllm-health", module="http", layer="dependencies", url="http://127.0.0.1:8080/health")
    facts = {"process": _with_worker(_worker("stopped")), "probe": probes(target(), health)}
    assert verdict({**facts, "inflight": waiting(9.0)}) == ("stall", "worker_stuck")
    assert verdict(facts) is None  # every probe answers: a stopped child alone hurts nobody


# --- a worker child dead while its parent lives (vLLM's engine core killed) ---------------------------


def _dead(ended: str | None = "killed by SIGKILL", **fields) -> ProcessFacts:
    dead = DeadWorker(5151, "VLLM::EngineCore", 4242, T0 - 12, T0 - 2, ended)
    return processes(service(dead_worker=dead, **fields))


def test_a_dead_engine_core_is_named_while_its_parent_answers_500() -> None:
    facts = {"process": _dead(), "probe": failing("http_status", at=T0)}
    assert verdict(facts) == ("service", "worker_died")
    cause = diagnose(facts, HEALTH, now=NOW).verdict
    assert cause.summary.startswith(
        "worker process VLLM::EngineCore (pid 5151) died while its parent lived: killed by SIGKILL; "
        "probe inference fails"
    )
    assert any("its parent, api pid 4242, outlived it" in line for line in cause.evidence)
    # Nothing broken since: a worker gone alone hurts nobody (a server may run on without it).
    assert verdict({"process": _dead(), "probe": probes(target())}) is None


def test_a_dead_worker_outranks_the_refusal_and_the_exit_it_causes() -> None:
    """vLLM's API server closes its port seconds after its engine core dies, and exits a minute later."""
    refused = failing("connect_refused", at=T0)
    port_closed = {"process": _dead(ended=None, ports=()), "probe": refused}
    assert verdict(port_closed) == ("service", "worker_died")
    assert (
        "gone (its parent reaped it: how it ended is not known)"
        in diagnose(port_closed, HEALTH, now=NOW).verdict.summary
    )
    assert verdict({**port_closed, "process": processes(service(ports=()))}) == ("network", "not_listening")
    exited = {"process": _dead(up=False), "probe": refused}
    assert verdict(exited) == ("service", "worker_died")
    assert "api exited after it" in diagnose(exited, HEALTH, now=NOW).verdict.summary


def test_a_probe_failure_read_before_the_worker_died_is_not_blamed_on_it() -> None:
    stale = {"process": _dead(), "probe": failing("http_status", at=T0 - 60)}
    assert verdict(stale) == ("client", "http_error")


def test_a_dead_engine_core_is_believed_at_once_when_it_explains_the_failing_probe() -> None:
    feed = Feed()
    feed.healthy_start()
    feed.publish("probe", failing("http_status", at=feed.now))
    feed.publish("probe", failing("http_status", at=feed.now))
    assert feed.verdict() == ("client", "http_error")
    feed.publish("process", _dead())
    assert feed.verdict() == ("service", "worker_died")  # it says why: no second reading needed


def test_an_idle_worker_is_stuck_only_while_its_engine_has_work() -> None:
    """A hung API server hands its worker nothing: the idle worker is not the cause then."""
    config = dataclasses.replace(CONFIG, engines=(EngineConfig("vllm", service="api"),))
    idle = {"process": _with_worker(_worker(idle=3)), "inflight": waiting(9.0)}
    assert diagnose(idle, HEALTH, now=NOW).verdict.reason == "not_answering"
    busy = dataclasses.replace(engine(waiting=2, flat=1).engines["vllm"], service="api")
    result = diagnose(
        {**idle, "engine": EngineFacts({"vllm": busy})}, HEALTH, now=NOW, chains=chains_of(config)
    )
    assert (result.verdict.layer, result.verdict.reason) == ("stall", "worker_stuck")
    assert "is idle: no CPU used and no context switch at 3 readings" in result.verdict.summary


# --- an engine asleep on purpose (vLLM 0.32's sleep mode) ------------------------------------------


def test_a_sleeping_engine_with_requests_waiting_is_named_asleep_never_stalled_or_stuck() -> None:
    config = dataclasses.replace(CONFIG, engines=(EngineConfig("vllm", service="api"),))
    asleep = dataclasses.replace(
        engine(waiting=3).engines["vllm"], service="api", sleeping=True, sleep_level=1
    )
    # Its worker idles on purpose too: no worker_stuck for it.
    facts = {
        "process": _with_worker(_worker(idle=3)),
        "inflight": waiting(9.0),
        "engine": EngineFacts({"vllm": asleep}),
    }
    result = diagnose(facts, HEALTH, now=NOW, chains=chains_of(config))
    assert (result.verdict.layer, result.verdict.reason) == ("dependencies", "engine_sleeping")
    assert "was put to sleep (level 1: weights offloaded): 3 requests wait" in result.verdict.summary
    assert "/wake_up" in result.verdict.next_command
    # Its probe timed out and took its request away: still asleep, still the cause.
    timed_out = {
        "engine": EngineFacts({"vllm": dataclasses.replace(asleep, waiting=0.0)}),
        "probe": failing(),
    }
    result = diagnose(timed_out, HEALTH, now=NOW, chains=chains_of(config))
    assert (result.verdict.layer, result.verdict.reason) == ("dependencies", "engine_sleeping")
    # Asleep with nothing waiting on it: nothing is broken.
    idle = {"engine": EngineFacts({"vllm": dataclasses.replace(asleep, waiting=0.0)})}
    assert diagnose(idle, HEALTH, now=NOW, chains=chains_of(config)).verdict is None
