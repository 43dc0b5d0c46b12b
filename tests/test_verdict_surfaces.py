"""Since when and the timeline, as a person reads them on the status page and in /api/diagnosis."""

from __future__ import annotations

import json
import time

from autoglm_exporter.diagnosis import to_dict
from autoglm_exporter.web import statuspage

from .verdict_facts import Feed, failing, probes, processes, redis, service, target


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _ten_minutes_ago_today() -> float:
    """Ten minutes ago, or the start of today when that was yesterday (a run just after midnight):
    the page shows a moment of today without its date."""
    midnight = time.mktime((*time.localtime()[:3], 0, 0, 0, 0, 0, -1))
    return max(time.time() - 600, midnight + 1)


def broken_for_four_minutes() -> tuple[Feed, float]:
    feed = Feed()
    feed.now = _ten_minutes_ago_today()
    feed.healthy_start()
    feed.publish("redis", redis(up=False), after=10)
    broke = feed.now
    feed.publish("redis", redis(up=False), after=10)
    feed.publish("probe", failing("http_status", at=feed.now), after=1)
    feed.publish("probe", failing("http_status", at=feed.now), after=10)
    return feed, broke


def test_the_page_says_broken_since_when_and_for_how_long() -> None:
    feed, broke = broken_for_four_minutes()
    page = statuspage.render(feed.diagnosis, feed.health, now=broke + 245)
    assert f"broken since {_clock(broke)} (4 min)" in page
    assert "dependencies / redis_down: redis queue" in page
    assert "(users are hurt)" in page  # the client probe fails beside it


def test_the_page_and_the_json_show_the_timeline_newest_first_on_the_page() -> None:
    feed, broke = broken_for_four_minutes()
    page = statuspage.render(feed.diagnosis, feed.health, now=broke + 245)
    timeline = page[page.index("<section id='history'>") :]
    redis_row = timeline.index(f"<td>{_clock(broke)}</td><td>link</td><td>redis queue</td>")
    probe_row = timeline.index("<td>link</td><td>probe inference</td>")
    assert probe_row < redis_row  # newest first
    report = json.loads(json.dumps(to_dict(feed.diagnosis, now=broke + 245)))
    assert report["since"] == broke and report["since_text"] == f"broken since {_clock(broke)} (4 min)"
    assert [(c["kind"], c["name"], c["reason"]) for c in report["history"]] == [
        ("link", "redis queue", "redis_down"),
        ("verdict", "api", "redis_down"),
        ("link", "probe inference", "http_error"),
    ]
    assert report["history"][0]["at_text"] == _clock(broke)
    links = {link["name"]: link for link in report["links"]}
    assert links["redis queue"]["since"] == broke


def test_healthy_since_the_start_and_healthy_again_since_it_healed() -> None:
    feed = Feed()
    feed.now = _ten_minutes_ago_today()
    feed.healthy_start()
    assert to_dict(feed.diagnosis)["since_text"] == "healthy since the exporter started"
    feed.publish("process", processes(service(up=False)), after=10)
    feed.publish("probe", probes(target(at=feed.now)), after=1)  # its users still get answers
    feed.publish("process", processes(service(up=False)), after=9)
    assert feed.verdict() == ("service", "process_missing")
    feed.publish("process", processes(), after=10)
    feed.publish("process", processes(), after=10)
    healed = feed.now
    feed.publish("probe", probes(target(at=feed.now)), after=30)
    page = statuspage.render(feed.diagnosis, feed.health, now=healed + 90)
    assert f"healthy since {_clock(healed)} (2 min)" in page
    assert "<td>verdict</td><td>api</td><td>ok</td>" in page


def test_the_page_escapes_what_the_world_wrote_into_the_timeline() -> None:
    feed = Feed()
    feed.healthy_start()
    hostile = processes(service(up=False, name="<script>x</script>"))
    feed.publish("process", hostile, after=10)
    feed.publish("process", hostile, after=10)
    page = statuspage.render(feed.diagnosis, feed.health)
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
