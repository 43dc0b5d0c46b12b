"""The Redis collector against a real redis-server started for each test."""

from __future__ import annotations

import logging
import subprocess
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from autoglm_exporter.collectors.redis import FAILURE_REASONS, RedisCollector
from autoglm_exporter.config import RedisConfig, RedisQueue
from autoglm_exporter.facts.redis import RedisFacts

from . import faultservers as fs
from .conftest import RedisServer, assert_promtool_clean, free_port, registry_of, require_binary, wait_until

PASSWORD = "Tr0ub4dor-pw-7c1e9a"  # distinctive, so a leak anywhere is found by a plain search
WRONG_PASSWORD = "wrong-pw-5d2f80b3"


def _instance(server: RedisServer, name: str = "main", **kwargs) -> RedisConfig:
    kwargs.setdefault("timeout", 0.5)
    return RedisConfig(name, address=server.address, **kwargs)


def _registry(collector: RedisCollector) -> tuple[CollectorRegistry, RedisFacts]:
    result = collector.collect()
    return registry_of(result), result.facts


def _failures(registry: CollectorRegistry, name: str) -> dict[str, float | None]:
    return {
        reason: registry.get_sample_value("autoglm_redis_failures_total", {"redis": name, "reason": reason})
        for reason in FAILURE_REASONS
    }


def test_a_running_server_is_up_with_plausible_values(redis_server) -> None:
    server = redis_server(None, "--maxmemory", "100mb")
    registry, facts = _registry(RedisCollector((_instance(server),)))
    instance = facts.instances["main"]
    assert instance.up and instance.failure is None and instance.error is None
    assert registry.get_sample_value("autoglm_redis_up", {"redis": "main"}) == 1
    ping = registry.get_sample_value("autoglm_redis_ping_duration_seconds", {"redis": "main"})
    assert ping is not None and 0 < ping < 0.5
    assert registry.get_sample_value("autoglm_redis_connected_clients", {"redis": "main"}) >= 1
    assert registry.get_sample_value("autoglm_redis_blocked_clients", {"redis": "main"}) == 0
    assert registry.get_sample_value("autoglm_redis_memory_used_bytes", {"redis": "main"}) > 100_000
    assert registry.get_sample_value("autoglm_redis_memory_max_bytes", {"redis": "main"}) == 100 * 1024 * 1024
    assert _failures(registry, "main") == dict.fromkeys(FAILURE_REASONS, 0)


def test_no_memory_limit_reads_zero_and_blocked_clients_are_counted(redis_server) -> None:
    server = redis_server()
    blocker = server.client()
    waiting = subprocess.Popen(  # a worker waiting on an empty queue, as the seed's workers do
        [require_binary("redis-cli"), "-p", str(server.port), "BLPOP", "jobs", "5"], stdout=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: blocker.info("clients")["blocked_clients"] == 1, timeout=5)
        registry, facts = _registry(RedisCollector((_instance(server),)))
    finally:
        waiting.kill()
        waiting.wait(5)
    assert facts.instances["main"].memory_max == 0
    assert registry.get_sample_value("autoglm_redis_memory_max_bytes", {"redis": "main"}) == 0
    assert registry.get_sample_value("autoglm_redis_blocked_clients", {"redis": "main"}) == 1
    assert facts.instances["main"].connected_clients >= 3  # the test's client, redis-cli and ours


def test_every_queue_type_reads_its_real_depth_and_a_missing_key_is_zero(redis_server) -> None:
    server = redis_server()
    data = server.client()
    data.rpush("jobs", "a", "b", "c")
    for index in range(4):
        data.xadd("events", {"n": index})
    data.zadd("delayed", {"x": 1, "y": 2})
    data.xgroup_create("tasks", "workers", id="0", mkstream=True)
    for index in range(5):
        data.xadd("tasks", {"n": index})
    data.xreadgroup("workers", "worker-1", {"tasks": ">"}, count=2)  # delivered, never acknowledged
    queues = (
        RedisQueue("jobs", "list"),
        RedisQueue("events", "stream"),
        RedisQueue("delayed", "zset"),
        RedisQueue("tasks", "stream"),
        RedisQueue("tasks", "stream_pending", "workers"),
        RedisQueue("empty-list", "list"),
        RedisQueue("empty-stream", "stream"),
        RedisQueue("empty-zset", "zset"),
        RedisQueue("empty-pending", "stream_pending", "workers"),
    )
    registry, facts = _registry(RedisCollector((_instance(server, queues=queues),)))
    expected = {
        ("jobs", "list"): 3,
        ("events", "stream"): 4,
        ("delayed", "zset"): 2,
        ("tasks", "stream"): 5,
        ("tasks:workers", "stream_pending"): 2,
        ("empty-list", "list"): 0,
        ("empty-stream", "stream"): 0,
        ("empty-zset", "zset"): 0,
        ("empty-pending", "stream_pending"): 0,
    }
    for (queue, kind), depth in expected.items():
        labels = {"redis": "main", "queue": queue, "type": kind}
        assert registry.get_sample_value("autoglm_redis_queue_depth", labels) == depth, queue
        assert (
            registry.get_sample_value("autoglm_redis_queue_read_ok", {"redis": "main", "queue": queue}) == 1
        )
        assert facts.instances["main"].queues[queue] == depth
    assert facts.instances["main"].queue_errors == {}


def test_a_wrong_key_type_or_missing_group_gives_no_depth_but_read_ok_zero(redis_server) -> None:
    server = redis_server()
    data = server.client()
    data.set("jobs", "not a list")
    data.xadd("tasks", {"n": 1})
    data.rpush("good", "x")
    queues = (
        RedisQueue("jobs", "list"),
        RedisQueue("tasks", "stream_pending", "no-such-group"),
        RedisQueue("good", "list"),
    )
    registry, facts = _registry(RedisCollector((_instance(server, queues=queues),)))
    instance = facts.instances["main"]
    assert instance.up
    for queue, kind in (("jobs", "list"), ("tasks", "stream_pending")):
        assert (
            registry.get_sample_value("autoglm_redis_queue_read_ok", {"redis": "main", "queue": queue}) == 0
        )
        labels = {"redis": "main", "queue": queue, "type": kind}
        assert registry.get_sample_value("autoglm_redis_queue_depth", labels) is None
        assert instance.queues[queue] is None
    assert instance.queue_errors["jobs"].startswith("WRONGTYPE")
    assert instance.queue_errors["tasks"].startswith("NOGROUP")
    labels = {"redis": "main", "queue": "good", "type": "list"}
    assert registry.get_sample_value("autoglm_redis_queue_depth", labels) == 1
    assert registry.get_sample_value("autoglm_redis_up", {"redis": "main"}) == 1


def test_queue_growth_is_the_change_since_the_previous_run(redis_server) -> None:
    server = redis_server()
    data = server.client()
    data.rpush("jobs", *range(3))
    collector = RedisCollector((_instance(server, queues=(RedisQueue("jobs", "list"),)),))
    first = collector.collect().facts.instances["main"]
    assert first.queues == {"jobs": 3} and first.queue_growth == {"jobs": 0}
    data.rpush("jobs", *range(5))
    assert collector.collect().facts.instances["main"].queue_growth == {"jobs": 5}
    data.lpop("jobs", 2)
    assert collector.collect().facts.instances["main"].queue_growth == {"jobs": -2}


def test_a_killed_server_is_down_as_connect_refused_within_one_collect(redis_server) -> None:
    server = redis_server()
    queues = (RedisQueue("jobs", "list"),)
    collector = RedisCollector((_instance(server, queues=queues),))
    registry, _ = _registry(collector)
    assert registry.get_sample_value("autoglm_redis_up", {"redis": "main"}) == 1
    server.kill()
    started = time.monotonic()
    registry, facts = _registry(collector)
    assert time.monotonic() - started < 0.5
    instance = facts.instances["main"]
    assert not instance.up and instance.failure == "connect_refused"
    assert registry.get_sample_value("autoglm_redis_up", {"redis": "main"}) == 0
    for absent in ("ping_duration_seconds", "connected_clients", "memory_used_bytes", "memory_max_bytes"):
        assert registry.get_sample_value(f"autoglm_redis_{absent}", {"redis": "main"}) is None, absent
    labels = {"redis": "main", "queue": "jobs", "type": "list"}
    assert registry.get_sample_value("autoglm_redis_queue_depth", labels) is None  # unknown, not 0
    assert registry.get_sample_value("autoglm_redis_queue_read_ok", {"redis": "main", "queue": "jobs"}) == 0
    assert _failures(registry, "main") == {**dict.fromkeys(FAILURE_REASONS, 0), "connect_refused": 1}
    registry, _ = _registry(collector)
    assert _failures(registry, "main")["connect_refused"] == 2


def test_a_paused_server_times_out_within_the_timeout_and_recovers(redis_server) -> None:
    server = redis_server()
    collector = RedisCollector((_instance(server, timeout=0.5),))
    assert collector.collect().facts.instances["main"].up
    admin = server.client()
    admin.execute_command("CLIENT", "PAUSE", "5000", "ALL")
    started = time.monotonic()
    registry, facts = _registry(collector)
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 1.5
    assert facts.instances["main"].failure == "timeout"
    assert registry.get_sample_value("autoglm_redis_up", {"redis": "main"}) == 0
    assert _failures(registry, "main")["timeout"] == 1
    admin.execute_command("CLIENT", "UNPAUSE")
    assert collector.collect().facts.instances["main"].up


def _trickles_after(quick_replies: int) -> fs.Handler:
    """A Redis look-alike: PONG to the first `quick_replies` commands, then a 2 kB reply 20 bytes
    every 0.2 s (each read returns in time; the reply would take 20 s)."""

    def handle(conn, server: fs.FaultServer) -> None:
        answered = 0
        while conn.recv(65536):
            if answered < quick_replies:
                conn.sendall(b"+PONG\r\n")
                answered += 1
                continue
            reply = b"$2000\r\n" + b"a" * 2000 + b"\r\n"
            for start in range(0, len(reply), 20):
                if server.stopped.wait(0.2):
                    return
                conn.sendall(reply[start : start + 20])

    return handle


@pytest.mark.parametrize("quick_replies", [0, 2], ids=["first_reply", "pipelined_replies"])
def test_replies_that_trickle_in_are_timeout_within_about_the_timeout(quick_replies: int) -> None:
    with fs.FaultServer(_trickles_after(quick_replies)) as server:
        instance = RedisConfig("main", address=f"127.0.0.1:{server.port}", timeout=0.5)
        collector = RedisCollector((instance,))
        started = time.monotonic()
        registry, facts = _registry(collector)
        assert time.monotonic() - started < 5  # the whole reply: 20 s
    assert facts.instances["main"].failure == "timeout"
    assert facts.instances["main"].error == "no complete answer within 0.5s"
    assert registry.get_sample_value("autoglm_redis_up", {"redis": "main"}) == 0


def test_password_from_env_and_from_file(redis_server, monkeypatch, tmp_path) -> None:
    server = redis_server(PASSWORD)
    monkeypatch.setenv("AUTOGLM_TEST_REDIS_PASSWORD", PASSWORD)
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(PASSWORD + "\n")
    collector = RedisCollector(
        (
            _instance(server, "from-env", password_env="AUTOGLM_TEST_REDIS_PASSWORD"),
            _instance(server, "from-file", password_file=str(secret_file)),
        )
    )
    facts = collector.collect().facts
    assert facts.instances["from-env"].up
    assert facts.instances["from-file"].up


def test_a_wrong_or_missing_password_is_auth(redis_server) -> None:
    server = redis_server(PASSWORD)
    collector = RedisCollector(
        (
            _instance(server, "wrong", password_env="AUTOGLM_TEST_WRONG_PASSWORD"),
            _instance(server, "none"),
        )
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOGLM_TEST_WRONG_PASSWORD", WRONG_PASSWORD)
        registry, facts = _registry(collector)
    for name in ("wrong", "none"):
        assert facts.instances[name].failure == "auth", facts.instances[name]
        assert registry.get_sample_value("autoglm_redis_up", {"redis": name}) == 0
        assert _failures(registry, name)["auth"] == 1


def test_a_missing_secret_is_auth_config_and_does_not_hurt_other_instances(redis_server, tmp_path) -> None:
    server = redis_server()
    collector = RedisCollector(
        (
            _instance(server, "no-env", password_env="AUTOGLM_TEST_UNSET_VARIABLE_4f1b"),
            _instance(server, "no-file", password_file=str(tmp_path / "missing")),
            _instance(server, "fine"),
        )
    )
    registry, facts = _registry(collector)
    assert facts.instances["no-env"].failure == "auth_config"
    assert "AUTOGLM_TEST_UNSET_VARIABLE_4f1b" in facts.instances["no-env"].error
    assert facts.instances["no-file"].failure == "auth_config"
    assert _failures(registry, "no-env")["auth_config"] == 1
    assert registry.get_sample_value("autoglm_redis_up", {"redis": "fine"}) == 1


def test_a_rotated_password_file_is_picked_up_on_the_next_collect(redis_server, tmp_path) -> None:
    server = redis_server(PASSWORD)
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(WRONG_PASSWORD)
    collector = RedisCollector((_instance(server, password_file=str(secret_file)),))
    assert collector.collect().facts.instances["main"].failure == "auth"
    secret_file.write_text(PASSWORD)
    assert collector.collect().facts.instances["main"].up


def test_passwords_appear_in_no_metric_fact_or_log(redis_server, monkeypatch, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server = redis_server(PASSWORD)
    monkeypatch.setenv("AUTOGLM_TEST_GOOD", PASSWORD)
    monkeypatch.setenv("AUTOGLM_TEST_BAD", WRONG_PASSWORD)
    collector = RedisCollector(
        (
            _instance(server, "good", password_env="AUTOGLM_TEST_GOOD"),
            _instance(server, "bad", password_env="AUTOGLM_TEST_BAD"),
        )
    )
    seen = []
    for _ in range(2):
        registry, facts = _registry(collector)
        seen += [generate_latest(registry).decode(), repr(facts)]
    server.kill()  # and once more with the connection refused
    registry, facts = _registry(collector)
    seen += [generate_latest(registry).decode(), repr(facts), caplog.text, repr(collector.__dict__)]
    assert facts.instances["good"].failure == "connect_refused"
    assert "redis instance cannot be read" in caplog.text  # the log did say something
    for text in seen:
        assert PASSWORD not in text
        assert WRONG_PASSWORD not in text


def test_every_series_is_there_from_the_first_scrape_and_promtool_is_clean(redis_server) -> None:
    server = redis_server()
    server.client().rpush("jobs", "x")
    queues = (RedisQueue("jobs", "list"), RedisQueue("tasks", "stream_pending", "workers"))
    down = RedisConfig("down", address=f"127.0.0.1:{free_port()}", timeout=0.5, queues=queues)
    collector = RedisCollector((_instance(server, queues=queues), down))
    registry, _ = _registry(collector)
    for name in ("main", "down"):
        assert _failures(registry, name) == {
            **dict.fromkeys(FAILURE_REASONS, 0),
            "connect_refused": 1 if name == "down" else 0,
        }
        for queue in ("jobs", "tasks"):
            labels = {"redis": name, "queue": queue}
            assert registry.get_sample_value("autoglm_redis_queue_read_ok", labels) is not None
    text = generate_latest(registry)
    for spec in RedisCollector.metrics:
        assert f"# HELP {spec.exposed_name} ".encode() in text
    assert_promtool_clean(text)
