"""The verdict is derived once per publish, in the publishing thread, after the observers of the
published facts; a scrape or a page only reads it and never derives or triggers anything."""

from __future__ import annotations

from collections.abc import Mapping

from autoglm_exporter.base.published import Published
from autoglm_exporter.collectors.base import Result
from autoglm_exporter.core.store import Store
from autoglm_exporter.diagnosis import Diagnoser, Diagnosis

from .conftest import parse_metrics, sample
from .verdict_facts import CONFIG, failing, processes


class Counting:
    """The real Diagnoser, counting how often it is asked."""

    def __init__(self) -> None:
        self.diagnoser = Diagnoser(CONFIG)
        self.calls: list[str | None] = []

    def __call__(self, published: Published):
        self.calls.append(published.publisher)
        return self.diagnoser.derive(published)


def store_with(observers=()) -> tuple[Store, Counting]:
    deriver = Counting()
    store = Store(deriver, observers)
    store.set_collectors(["process", "probe"])
    return store, deriver


def test_a_scrape_never_derives_the_verdict() -> None:
    store, deriver = store_with()
    assert store.derived() is None  # nothing published yet: nothing to serve, nothing derived
    store.publish_success("process", Result([], processes()), 0.01)
    assert deriver.calls == ["process"]
    for _ in range(20):
        store.render()
        store.render("application/openmetrics-text", compressed=True)
        assert isinstance(store.derived(), Diagnosis)
    assert deriver.calls == ["process"]
    store.publish_success("probe", Result([], failing("connect_refused")), 0.01)
    assert deriver.calls == ["process", "probe"]


def test_the_page_carries_the_verdict_of_the_last_publish() -> None:
    store, _ = store_with()
    store.publish_success("process", Result([], processes()), 0.01)
    page = parse_metrics(store.render()[0].decode())
    assert sample(page, "autoglm_diagnosis_healthy") == 1
    assert sample(page, "autoglm_diagnosis_users_hurt", service="api") == 0
    assert (
        sample(page, "autoglm_diagnosis_verdict", service="api", layer="client", reason="not_answering") == 0
    )


def test_observers_see_each_publish_before_the_verdict_and_cannot_break_it() -> None:
    seen: list[tuple[str, ...]] = []

    def observer(facts: Mapping[str, object]) -> None:
        seen.append(tuple(sorted(facts)))

    def broken_observer(facts: Mapping[str, object]) -> None:
        raise RuntimeError("an observer's bug")

    store, deriver = store_with([broken_observer, observer])
    store.publish_success("process", Result([], processes()), 0.01)
    store.publish_failure("probe", "timeout", "no result after 8s", 8.0)
    store.publish_failure("probe", "timeout", "no result after 8s", 8.0)
    assert seen == [("process",), ("process",), ("process",)]
    assert deriver.calls == ["process", "probe", "probe"]
    assert store.derived().verdict.reason == "collector_failed"


def test_a_failing_deriver_keeps_the_last_verdict_and_the_publish() -> None:
    store, deriver = store_with()
    store.publish_success("process", Result([], processes()), 0.01)
    before = store.derived()

    def broken(published: Published):
        raise RuntimeError("a bug in the verdict")

    store._deriver = broken
    store.publish_success("probe", Result([], failing()), 0.01)
    assert store.derived() is before
    assert "probe" in store.facts()  # the collector's own result is served all the same
