"""A password written into an address never reaches a surface: the status page, /api/diagnosis,
/metrics, `doctor` text and JSON, the next command, the collectors' last errors, stack captures.

The facts are those a collector makes from such an address (the config load refuses most of them;
these surfaces must hold anyway), served by the real Diagnoser, Store and HTTP server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from autoglm_exporter.collectors.base import Result
from autoglm_exporter.commands.doctor import Running, render_json, render_text
from autoglm_exporter.core.store import Store
from autoglm_exporter.diagnosis import Diagnoser, to_dict
from autoglm_exporter.facts.redis import RedisFacts, RedisInstanceFacts
from autoglm_exporter.forensics.analysis import Analysis
from autoglm_exporter.forensics.pyspy import Dump, Frame, ThreadStack
from autoglm_exporter.forensics.store import CaptureStore
from autoglm_exporter.logs.urls import display_url
from autoglm_exporter.web import statuspage
from autoglm_exporter.web.server import ExporterHTTPServer, ServerHooks

from .verdict_facts import CONFIG, Feed, engine, probes, processes, system, target

SECRET = "Hunter2Secret"
ADDRESSES = [
    f"redis://:{SECRET}@127.0.0.1:6379",  # the audit's case
    f"default:{SECRET}@127.0.0.1:6379",  # no scheme
    f"redis://bob:{SECRET}@[::1]:6379/0",  # IPv6
    f"bob:{SECRET.replace('2', '%32')}@127.0.0.1:6379",  # percent-encoded
]
LEAKED = (SECRET, SECRET.replace("2", "%32"))


def redis_down(address: str) -> RedisFacts:
    error = f"Error 111 connecting to {address}. Connection refused."
    return RedisFacts({"queue": RedisInstanceFacts("queue", address, False, "connect_refused", error)})


def probe_failing() -> object:
    url = f"http://bob:{SECRET}@127.0.0.1:8080/inference"
    return probes(target(ok=False, reason="http_status", connected=True, status=500, url=url))


def assert_clean(text: str) -> None:
    for secret in LEAKED:
        assert secret not in text, text[max(0, text.find(secret) - 200) : text.find(secret) + 50]


@pytest.fixture(params=ADDRESSES)
def broken_feed(request: pytest.FixtureRequest) -> Feed:
    feed = Feed()
    feed.healthy_start()
    for _ in range(2):
        feed.publish("redis", redis_down(request.param), after=10)
    assert feed.verdict() == ("dependencies", "redis_down")
    return feed


def test_the_page_json_and_doctor_never_show_the_password(broken_feed: Feed) -> None:
    diagnosis = broken_feed.diagnosis
    assert diagnosis is not None and diagnosis.verdict is not None
    assert diagnosis.verdict.next_command is not None and "redis-cli" in diagnosis.verdict.next_command
    page = statuspage.render(diagnosis, broken_feed.health)
    assert "127.0.0.1:6379" in page or "[::1]:6379" in page  # where it is stays readable
    running = Running("http://127.0.0.1:9877", diagnosis=to_dict(diagnosis))
    for shown in (
        page,
        render_text(diagnosis, color=False, running=running),
        render_json(diagnosis, running),
        json.dumps(to_dict(diagnosis)),
        repr(diagnosis.history),
    ):
        assert_clean(shown)


def test_a_failing_probe_url_never_shows_its_password_in_the_next_command() -> None:
    feed = Feed()
    feed.healthy_start()
    for _ in range(2):
        feed.publish("probe", probe_failing(), after=10)
    assert feed.diagnosis is not None and feed.diagnosis.verdict is not None
    command = feed.diagnosis.verdict.next_command or ""
    assert "127.0.0.1:8080/inference" in command
    assert_clean(command)
    assert_clean(render_text(feed.diagnosis, color=False))


def test_display_url_hides_credentials_of_addresses_without_a_scheme() -> None:
    assert display_url(f"default:{SECRET}@127.0.0.1:6379") == "127.0.0.1:6379"
    assert display_url(f"redis://:{SECRET}@[::1]:6379/0") == "redis://[::1]:6379/0"
    assert_clean(display_url(f"http://[bob:{SECRET}@bad/x"))  # not a URL urllib can take apart


@pytest.fixture
def served_store() -> Iterator[tuple[Store, int]]:
    diagnoser = Diagnoser(CONFIG)
    store = Store(deriver=diagnoser.derive)
    store.set_collectors(["process", "probe", "redis", "engine", "system", "broken"])
    server = ExporterHTTPServer(("127.0.0.1", 0), store, ServerHooks(reload=lambda: (True, "ok")))
    server.start_background()
    yield store, server.port
    server.stop()


@pytest.mark.parametrize("address", ADDRESSES)
def test_what_the_server_serves_never_shows_the_password(
    served_store: tuple[Store, int], address: str
) -> None:
    store, port = served_store
    for name, facts in (("process", processes()), ("engine", engine()), ("system", system())):
        store.publish_success(name, Result([], facts), 0.01)
    for _ in range(3):
        store.publish_success("redis", Result([], redis_down(address)), 0.01)
        store.publish_success("probe", Result([], probe_failing()), 0.01)
    store.publish_failure("broken", "error", f"cannot reach {address}: refused", 0.01)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        diagnosis = client.get("/api/diagnosis")
        assert diagnosis.status_code == 200 and diagnosis.json()["verdict"] is not None
        page = client.get("/")
        assert "cannot reach" in page.text  # the collector's last error is shown, redacted
        for response in (diagnosis, page, client.get("/metrics")):
            assert_clean(response.text)


def test_a_stack_capture_never_keeps_a_password(tmp_path: Path) -> None:
    frame = Frame("connect", "/srv/app.py", 12)
    thread = ThreadStack(1, 11, f"worker redis://:{SECRET}@127.0.0.1:6379", True, False, (frame,))
    dump = Dump(1_800_000_000.0, 4242, (thread,))
    analysis = Analysis(4242, 1, 0.0, False, (), False, f"1 thread waits on default:{SECRET}@127.0.0.1:6379")
    store = CaptureStore(tmp_path)
    saved = store.save("api", "probe_failing", [dump], analysis)
    text = store.read_bytes(saved.name).decode()
    assert "worker redis://:***@127.0.0.1:6379" in text
    assert_clean(text)
    assert_clean(json.dumps(saved.to_dict()))
