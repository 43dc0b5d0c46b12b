"""Start-up tracking: time from process start to listening and to the first good answer."""

from __future__ import annotations

from autoglm_exporter.diagnosis.startup import StartupTracker
from autoglm_exporter.facts.probe import ProbeFacts, ProbeOutcome, TargetFacts
from autoglm_exporter.facts.process import ProcessFacts, ServiceFacts

START = 1_800_000_000.0


def facts(start: float, listening: bool, success_at: float | None) -> dict:
    service = ServiceFacts("api", pids=[10], start_time=start, expected_port=8080)
    service.expected_port_listening = listening
    outcome = ProbeOutcome(success_at is not None)
    target = TargetFacts(
        "inference", "inference", "client", "api", "http://x", outcome, 0, success_at or start
    )
    return {"process": ProcessFacts({"api": service}), "probe": ProbeFacts({"inference": target})}


def values(families) -> dict:
    return {s.labels["milestone"]: s.value for f in families for s in f.samples}


def test_milestones_of_a_start_the_exporter_watched() -> None:
    tracker = StartupTracker()
    assert values(tracker.observe(facts(START, False, None), now=START + 5)) == {}
    assert values(tracker.observe(facts(START, True, None), now=START + 40)) == {"listening": 40.0}
    got = values(tracker.observe(facts(START, True, START + 52.5), now=START + 55))
    assert got == {"listening": 40.0, "first_success": 52.5}


def test_milestones_reached_before_the_exporter_looked_are_not_guessed() -> None:
    tracker = StartupTracker()
    assert values(tracker.observe(facts(START, True, START + 100), now=START + 3600)) == {}


def test_a_restart_starts_the_clock_again() -> None:
    tracker = StartupTracker()
    tracker.observe(facts(START, False, None), now=START + 1)
    tracker.observe(facts(START, True, START + 20), now=START + 20)
    restart = START + 500
    assert values(tracker.observe(facts(restart, False, None), now=restart + 2)) == {}
    assert values(tracker.observe(facts(restart, True, None), now=restart + 30)) == {"listening": 30.0}
