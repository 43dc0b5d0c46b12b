"""Client probes against real misbehaving servers on 127.0.0.1: the right reason for each fault."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from prometheus_client import generate_latest

from autoglm_exporter.collectors import build_collectors
from autoglm_exporter.collectors.inflight import InFlightCollector, InFlightRegistry
from autoglm_exporter.collectors.probe import ProbeCollector, classify_os_error
from autoglm_exporter.config import ExpectConfig, ProbeTarget, parse_config
from autoglm_exporter.logs.urls import display_url

from . import faultservers as fs
from .conftest import assert_promtool_clean, free_port, registry_of, wait_until


def probe(target: ProbeTarget, collector: ProbeCollector | None = None):
    collector = collector or ProbeCollector((target,))
    return collector.collect().facts.targets[target.name]


def inference(url: str, **kwargs) -> ProbeTarget:
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("connect_timeout", 1.0)
    return ProbeTarget("api", "inference", url + "/inference", **kwargs)


def test_healthy_inference_answer_with_phases() -> None:
    with fs.FaultServer(fs.answer(200, '{"text": "Hello there"}', delay=0.05)) as server:
        fact = probe(inference(server.url, expect=ExpectConfig(json_field="text")))
        request = server.requests[0]
    assert fact.outcome.success, fact.outcome
    assert fact.outcome.status == 200
    assert fact.outcome.phases["processing"] >= 0.05  # the server thought for 50 ms
    assert set(fact.outcome.phases) >= {"resolve", "connect", "processing", "transfer"}
    assert request.startswith(b"POST /inference HTTP/1.1")
    assert request.endswith(b'{"prompt":"Hello","max_tokens":50}')  # the seed's request


def test_refused_port_is_connect_refused() -> None:
    fact = probe(inference(f"http://127.0.0.1:{free_port()}"))
    assert (fact.outcome.success, fact.outcome.reason, fact.outcome.connected) == (
        False,
        "connect_refused",
        False,
    )


def test_accepts_but_never_answers_is_a_read_timeout_after_connecting() -> None:
    with fs.FaultServer(fs.never_answer) as server:
        started = time.monotonic()
        fact = probe(inference(server.url, timeout=0.5))
    assert time.monotonic() - started < 2.0
    assert (fact.outcome.reason, fact.outcome.connected) == ("read_timeout", True)


def test_a_body_that_trickles_past_the_total_deadline_times_out() -> None:
    with fs.FaultServer(fs.slow_body) as server:
        started = time.monotonic()
        fact = probe(inference(server.url, timeout=1.0))
    assert fact.outcome.reason == "read_timeout"
    assert time.monotonic() - started < 2.5  # the total deadline holds although bytes keep coming


def test_http_500_is_http_status() -> None:
    with fs.FaultServer(fs.answer(500, '{"error": "boom"}')) as server:
        fact = probe(inference(server.url))
    assert (fact.outcome.reason, fact.outcome.status) == ("http_status", 500)


@pytest.mark.parametrize(
    ("body", "field"), [("<html>oops</html>", None), ('{"text": 1', None), ('{"other": 1}', "text")]
)
def test_bad_json_or_missing_field_is_bad_body(body: str, field: str | None) -> None:
    with fs.FaultServer(fs.answer(200, body)) as server:
        fact = probe(inference(server.url, expect=ExpectConfig(json_field=field)))
    assert fact.outcome.reason == "bad_body"


def test_reset_mid_body_is_reset() -> None:
    with fs.FaultServer(fs.reset_mid_body) as server:
        fact = probe(inference(server.url))
    assert (fact.outcome.reason, fact.outcome.connected) == ("reset", True)


@pytest.mark.parametrize("handler", [fs.plain_reply, fs.never_answer], ids=["plain-http-reply", "silent"])
def test_tls_to_a_port_that_does_not_speak_tls_is_a_tls_failure(handler) -> None:
    with fs.FaultServer(handler) as server:
        target = ProbeTarget(
            "secure", "http", f"https://127.0.0.1:{server.port}/", timeout=1.0, connect_timeout=0.5
        )
        fact = probe(target)
    assert fact.outcome.reason == "tls", fact.outcome


def test_http_module_expectations() -> None:
    with fs.FaultServer(fs.answer(200, "engine ok", content_type="text/plain")) as server:
        ok = probe(
            ProbeTarget("h", "http", server.url + "/health", timeout=2, expect=ExpectConfig(body_regex="ok$"))
        )
        wrong = probe(
            ProbeTarget(
                "h", "http", server.url + "/health", timeout=2, expect=ExpectConfig(body_regex="^ready")
            )
        )
        status = probe(
            ProbeTarget("h", "http", server.url + "/health", timeout=2, expect=ExpectConfig(status=(204,)))
        )
    assert ok.outcome.success
    assert wrong.outcome.reason == "bad_body"
    assert status.outcome.reason == "http_status"


def test_openai_chat_discovers_the_model_and_generates_one_token() -> None:
    with fs.FaultServer(fs.openai(model="glm-4-9b")) as server:
        target = ProbeTarget("engine", "openai_chat", server.url + "/v1/chat/completions", timeout=2)
        fact = probe(target)
        chat = [r for r in server.requests if r.startswith(b"POST")][0]
    assert fact.outcome.success, fact.outcome
    assert b'"model":"glm-4-9b"' in chat and b'"max_tokens":1' in chat


def test_openai_chat_streaming_measures_time_to_first_token() -> None:
    with fs.FaultServer(fs.openai(stream_delay=0.2)) as server:
        target = ProbeTarget(
            "engine", "openai_chat", server.url + "/v1/chat/completions", timeout=3, stream=True
        )
        collector = ProbeCollector((target,))
        result = collector.collect()
    fact = result.facts.targets["engine"]
    assert fact.outcome.success, fact.outcome
    assert 0.2 <= fact.outcome.ttft < 2.0
    values = {(s.name, tuple(s.labels.values())): s.value for f in result.families for s in f.samples}
    assert values[("autoglm_probe_time_to_first_token_seconds", ("engine",))] == fact.outcome.ttft


def test_tcp_module() -> None:
    with fs.FaultServer(fs.never_answer) as server:
        assert probe(ProbeTarget("t", "tcp", f"127.0.0.1:{server.port}", timeout=1)).outcome.success
    refused = probe(ProbeTarget("t", "tcp", f"127.0.0.1:{free_port()}", timeout=1))
    assert refused.outcome.reason == "connect_refused"


def test_dns_failure_is_classified() -> None:
    # No DNS query leaves this machine in tests: check the classification of the resolver's error.
    assert classify_os_error(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))[0] == "dns"


def test_bearer_token_is_sent_but_never_shown(monkeypatch) -> None:
    monkeypatch.setenv("AUTOGLM_TEST_TOKEN", "tok-5ecr3t-value")
    with fs.FaultServer(fs.answer(200, "{}")) as server:
        target = inference(server.url, bearer_token_env="AUTOGLM_TEST_TOKEN")
        collector = ProbeCollector((target,))
        result = collector.collect()
        sent = server.requests[0]
    assert b"Authorization: Bearer tok-5ecr3t-value" in sent
    page = generate_latest(registry_of(result)).decode()
    assert "tok-5ecr3t-value" not in page and "tok-5ecr3t-value" not in repr(result.facts)


def test_missing_token_variable_is_a_config_failure(monkeypatch) -> None:
    monkeypatch.delenv("AUTOGLM_NO_SUCH_TOKEN", raising=False)
    fact = probe(inference("http://127.0.0.1:1", bearer_token_env="AUTOGLM_NO_SUCH_TOKEN"))
    assert fact.outcome.reason == "config"
    assert "AUTOGLM_NO_SUCH_TOKEN is not set" in fact.outcome.error


def test_targets_run_concurrently_so_a_cycle_costs_the_slowest_not_the_sum() -> None:
    with fs.FaultServer(fs.never_answer) as server:
        targets = tuple(
            ProbeTarget(f"t{i}", "http", server.url + "/", timeout=0.5, connect_timeout=0.5)
            for i in range(20)
        )
        started = time.monotonic()
        facts = ProbeCollector(targets).collect().facts.targets
        elapsed = time.monotonic() - started
    assert all(f.outcome.reason == "read_timeout" for f in facts.values())
    assert elapsed < 2.0  # sequential would be 10 s


def test_failures_are_counted_by_reason_and_in_a_row() -> None:
    target = inference(f"http://127.0.0.1:{free_port()}")
    collector = ProbeCollector((target,))
    for _ in range(3):
        result = collector.collect()
    values = {(s.name, tuple(s.labels.values())): s.value for f in result.families for s in f.samples}
    assert values[("autoglm_probe_failures_total", ("api", "connect_refused"))] == 3
    assert values[("autoglm_probe_failures_total", ("api", "read_timeout"))] == 0
    assert values[("autoglm_probe_consecutive_failures", ("api",))] == 3
    assert values[("autoglm_probe_success", ("api",))] == 0


def test_default_targets_probe_by_generating_and_lint_clean() -> None:
    config = parse_config("")
    modules = {t.name: t.module for t in config.targets}
    assert modules["inference"] == "inference" and modules["vllm-generate"] == "openai_chat"
    result = ProbeCollector(config.targets).collect()  # nothing listens here: all refused
    assert_promtool_clean(generate_latest(registry_of(result)))


def test_display_url_hides_credentials_and_query() -> None:
    assert display_url("https://user:pw@host:8443/v1/x?key=abc") == "https://host:8443/v1/x"


# --- histograms of every probe ----------------------------------------------------------------------

CONTRACT_BUCKETS = [str(float(b)) for b in (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60)] + ["+Inf"]


def histogram_of(result, name: str, target: str) -> tuple[dict[str, float], float, float]:
    """(cumulative count per le, _count, _sum) of one target's histogram in a collector Result."""
    buckets, count, total = {}, None, None
    for family in result.families:
        for s in family.samples:
            if s.labels.get("target") != target:
                continue
            if s.name == name + "_bucket":
                buckets[s.labels["le"]] = s.value
            elif s.name == name + "_count":
                count = s.value
            elif s.name == name + "_sum":
                total = s.value
    assert count is not None and total is not None, f"no {name} for {target}"
    return buckets, count, total


def test_every_probe_lands_in_the_duration_histogram_failed_ones_too() -> None:
    with fs.FaultServer(fs.answer(200, '{"text": "hi"}')) as server:
        collector = ProbeCollector((inference(server.url, timeout=0.5),))
        durations, reasons = [], []
        for handler in (fs.answer(200, '{"text": "hi"}'), fs.answer(500, "{}"), fs.never_answer):
            server.handler = handler
            result = collector.collect()
            durations.append(result.facts.targets["api"].outcome.duration)
            reasons.append(result.facts.targets["api"].outcome.reason)
    assert reasons == [None, "http_status", "read_timeout"]
    buckets, count, total = histogram_of(result, "autoglm_probe_request_duration_seconds", "api")
    assert list(buckets) == CONTRACT_BUCKETS
    assert count == 3 and buckets["+Inf"] == 3  # availability = 1 - failures / _count
    for le, cumulative in buckets.items():
        bound = float("inf") if le == "+Inf" else float(le)
        assert cumulative == sum(1 for d in durations if d <= bound), (le, durations)
    assert total == pytest.approx(sum(durations))
    assert durations[2] >= 0.5  # the timed-out probe counts with the time it waited
    assert_promtool_clean(generate_latest(registry_of(result)))


def test_first_token_histogram_only_for_streaming_chat_targets() -> None:
    with fs.FaultServer(fs.openai(stream_delay=0.1)) as server:
        url = server.url + "/v1/chat/completions"
        streamed = ProbeTarget("streamed", "openai_chat", url, timeout=3, stream=True)
        plain = ProbeTarget("plain", "openai_chat", url, timeout=3)
        result = ProbeCollector((streamed, plain)).collect()
    ttft = result.facts.targets["streamed"].outcome.ttft
    buckets, count, total = histogram_of(result, "autoglm_probe_first_token_seconds", "streamed")
    assert count == 1 and total == ttft and list(buckets) == CONTRACT_BUCKETS
    first_token = [f for f in result.families if f.name == "autoglm_probe_first_token_seconds"]
    assert {s.labels["target"] for s in first_token[0].samples} == {"streamed"}
    assert histogram_of(result, "autoglm_probe_request_duration_seconds", "plain")[1] == 1


# --- what the server said, redacted -------------------------------------------------------------------


def test_what_the_server_answered_is_quoted_in_the_failure_with_secrets_masked() -> None:
    body = '{"error": "upstream refused api_key=sk-proj-Zx81kLm20QqT5vBn77Hs for org 42"}'
    with fs.FaultServer(fs.answer(500, body)) as server:
        failed = probe(inference(server.url))
    assert failed.outcome.error.startswith("HTTP 500: {")
    assert "upstream refused api_key=***" in failed.outcome.error
    assert "Zx81kLm20QqT5vBn77Hs" not in failed.outcome.error
    with fs.FaultServer(fs.answer(200, "<html>\n  <body>Bad   gateway</body></html>" + "x" * 500)) as server:
        html = probe(inference(server.url))
    assert html.outcome.error.startswith(
        "answer is not valid JSON: <html> <body>Bad gateway</body></html>xxx"
    )
    assert len(html.outcome.error) < 200 and html.outcome.error.endswith("...")


# --- probes in flight ----------------------------------------------------------------------------------


def test_a_probe_waiting_for_its_answer_is_in_flight_connected_and_counting() -> None:
    registry = InFlightRegistry()
    with fs.FaultServer(fs.never_answer) as server:
        target = inference(server.url, timeout=60.0, service="api")
        collector = ProbeCollector((target,), registry)
        watcher = InFlightCollector((target,), registry)
        assert watcher.collect().facts.targets == {}
        before = time.time()
        probing = threading.Thread(target=collector.collect)
        probing.start()

        def waiting_connected():
            result = watcher.collect()
            fact = result.facts.targets.get("api")
            return (fact, result) if fact is not None and fact.connected and fact.waited >= 0.3 else None

        fact, result = wait_until(waiting_connected, timeout=30)
        assert server.requests  # the request went out; the answer is what we wait for
    probing.join(30)  # the server closed the connection: the probe ends
    assert not probing.is_alive()
    assert (fact.target, fact.service, fact.layer, fact.url) == ("api", "api", "client", target.url)
    assert before <= fact.started_at <= time.time()
    assert registry_of(result).get_sample_value("autoglm_probe_in_flight_seconds", {"target": "api"}) >= 0.3
    done = watcher.collect()
    assert done.facts.targets == {}
    assert registry_of(done).get_sample_value("autoglm_probe_in_flight_seconds", {"target": "api"}) == 0


def test_a_failed_probe_leaves_nothing_in_flight() -> None:
    registry = InFlightRegistry()
    target = inference(f"http://127.0.0.1:{free_port()}")
    ProbeCollector((target,), registry).collect()
    result = InFlightCollector((target,), registry).collect()
    assert result.facts.targets == {}
    assert registry_of(result).get_sample_value("autoglm_probe_in_flight_seconds", {"target": "api"}) == 0


def test_after_a_reload_the_new_inflight_collector_still_sees_the_old_probe_waiting() -> None:
    with fs.FaultServer(fs.never_answer) as server:
        config = f"""
targets: [{{name: api, module: inference, url: '{server.url}/inference', service: svc, timeout: 60s}}]
services: [{{name: svc, match: {{port: {server.port}}}}}]
forensics: {{hang_after: HANG}}
"""
        before = {c.name: c for c in build_collectors(parse_config(config.replace("HANG", "5s")))}
        # Only the threshold changed: the daemon keeps the probe collector, replaces the inflight one.
        after = {c.name: c for c in build_collectors(parse_config(config.replace("HANG", "2s")))}
        assert before["probe"].settings == after["probe"].settings
        assert before["inflight"].settings != after["inflight"].settings
        probing = threading.Thread(target=before["probe"].collect)
        probing.start()

        def waiting():
            facts = after["inflight"].collect().facts
            return facts if facts.targets else None

        facts = wait_until(waiting, timeout=30)
    probing.join(30)
    assert list(facts.targets) == ["api"] and facts.hang_after == 2.0


def test_the_inflight_collector_runs_every_second_by_default() -> None:
    assert parse_config("").collector("inflight").interval == 1.0
    assert parse_config("global: {interval: 0.5s}").collector("inflight").interval == 0.5
    assert parse_config("collectors: {inflight: {interval: 3s}}").collector("inflight").interval == 3.0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_probe_naming_a_model_the_server_does_not_serve_is_misconfigured_not_an_http_error(
    stream: bool,
) -> None:
    with fs.FaultServer(fs.openai(model="glm-4-9b")) as server:
        url = server.url + "/v1/chat/completions"
        wrong = probe(ProbeTarget("engine", "openai_chat", url, timeout=2, model="glm-4", stream=stream))
        served = probe(ProbeTarget("engine", "openai_chat", url, timeout=2, model="glm-4-9b", stream=stream))
    assert (wrong.outcome.reason, wrong.outcome.status) == ("config", 404)
    assert wrong.outcome.error == "the server does not serve model 'glm-4' (it serves glm-4-9b)"
    assert served.outcome.success, served.outcome


def test_a_404_without_a_model_list_to_compare_stays_an_http_error() -> None:
    with fs.FaultServer(fs.answer(404, '{"error": "not found"}')) as server:
        url = server.url + "/v1/chat/completions"
        fact = probe(ProbeTarget("engine", "openai_chat", url, timeout=2, model="glm-4"))
    assert (fact.outcome.reason, fact.outcome.status) == ("http_status", 404)
