"""The page a scrape gets is the page of the latest publish, byte for byte what prometheus_client
writes for the store's families, whatever happened before: the store renders only the parts that
changed, and a part kept from an earlier render must never be served after it changed."""

from __future__ import annotations

import gzip
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from autoglm_exporter.collectors.base import Result
from autoglm_exporter.core import store as store_module
from autoglm_exporter.core.store import Published, Store

COLLECTORS = ("system", "process", "probe")
ACCEPTS = (
    "",
    "application/openmetrics-text; version=1.0.0",
    "text/plain; version=1.0.0; escaping=underscores",
)
# Values whose texts differ although some compare equal (0.0 == -0.0, 1 == 1.0 == True).
VALUES = st.sampled_from([0.0, -0.0, 1, 1.0, True, 2.5, float("inf"), float("nan"), 1e-300])

# A timestamp's OpenMetrics text differs for 1 and 1.0 too.
TIMESTAMPS = st.sampled_from([None, 1, 1.0])
publish = st.tuples(
    st.just("publish"), st.sampled_from(COLLECTORS), st.lists(VALUES, min_size=1, max_size=3), TIMESTAMPS
)
fail = st.tuples(st.just("fail"), st.sampled_from(COLLECTORS))
collectors = st.tuples(st.just("collectors"), st.lists(st.sampled_from(COLLECTORS), unique=True))
stuck = st.tuples(st.just("stuck"), st.sampled_from(COLLECTORS), st.booleans())
other = st.tuples(st.sampled_from(["touch", "reload_ok", "reload_failed", "scrape"]))
OPERATIONS = st.lists(st.one_of(publish, fail, collectors, stuck, other), max_size=25)


def families_of(name: str, values: list[object], timestamp: float | None = None) -> list[Metric]:
    gauge = GaugeMetricFamily(f"autoglm_test_{name}_value", f"A value of {name}.", labels=["index"])
    counter = CounterMetricFamily(f"autoglm_test_{name}_events", "Events.", labels=["index"])
    stamped = GaugeMetricFamily(f"autoglm_test_{name}_stamped", "A value with a timestamp.")
    for index, value in enumerate(values):
        gauge.add_metric([str(index)], value)  # type: ignore[arg-type]
        counter.add_metric([str(index)], abs(float(value)))  # type: ignore[arg-type]
    stamped.add_metric([], 1.0, timestamp=timestamp)
    return [gauge, counter, stamped]


class Verdict:
    """A deriver whose families change with every derivation (as the verdict's may)."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def __call__(self, published: Published) -> tuple[list[Metric], object]:
        family = GaugeMetricFamily("autoglm_test_facts", "How many collectors have facts.")
        family.add_metric([], len(published.facts))
        self.families = [family]
        return self.families, None


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def whole_page(accept: str, store: Store, results: Mapping[str, list[Metric]], verdict: Verdict) -> bytes:
    """What prometheus_client writes for everything the page shows, rendered in one go."""
    families = [family for result in results.values() for family in result] + verdict.families
    families += store_module._self_metrics(store.health(), store._reload_ok, store._reload_time)
    encoder, _ = choose_encoder(accept)
    return encoder(_Families(families))  # type: ignore[arg-type]


def served(store: Store, accept: str, compressed: bool) -> bytes:
    body, _ = store.render(accept, compressed)
    return gzip.decompress(body) if compressed else body


@settings(max_examples=150, deadline=None)
@given(OPERATIONS)
def test_every_scrape_gets_the_whole_page_of_the_latest_publish(operations: list[tuple]) -> None:
    verdict = Verdict()
    store = Store(verdict)
    store.set_collectors(COLLECTORS)
    enabled = set(COLLECTORS)
    results: dict[str, list[Metric]] = {}  # in the page's order, as a user sees it
    for operation in operations:
        kind = operation[0]
        if kind == "publish" and operation[1] in enabled:
            results[operation[1]] = families_of(operation[1], operation[2], operation[3])
            store.publish_success(operation[1], Result(results[operation[1]]), 0.01)
        elif kind == "fail":
            results.pop(operation[1], None)
            store.publish_failure(operation[1], "timeout", "no answer", 1.0)
        elif kind == "collectors":
            enabled = set(operation[1])
            results = {name: result for name, result in results.items() if name in enabled}
            store.set_collectors(operation[1])
        elif kind == "stuck":
            store.set_stuck(operation[1], operation[2])
        elif kind == "touch":
            store.touch()
        elif kind in ("reload_ok", "reload_failed"):
            store.set_reload_result(kind == "reload_ok")
        for accept in ACCEPTS:  # scraped after every step: formats asked once are rendered ahead after
            expected = whole_page(accept, store, results, verdict)
            assert served(store, accept, compressed=False) == expected
            assert served(store, accept, compressed=True) == expected


def test_a_publish_of_one_collector_leaves_the_text_of_the_others_as_it_was() -> None:
    store = Store()
    store.set_collectors(COLLECTORS)
    for name in COLLECTORS:
        store.publish_success(name, Result(families_of(name, [1.0])), 0.01)
    before, _ = store.render()
    store.publish_success("process", Result(families_of("process", [-0.0])), 0.01)
    after, _ = store.render()
    assert b'autoglm_test_process_value{index="0"} -0.0\n' in after
    unchanged = b'autoglm_test_system_value{index="0"} 1.0\n'
    assert unchanged in before and unchanged in after
    assert after.index(b"autoglm_test_system") < after.index(b"autoglm_test_process")  # order kept


def test_a_family_changed_in_place_and_published_again_is_served_as_it_is_now() -> None:
    store = Store()
    store.set_collectors(["probe"])
    families = families_of("probe", [1.0])
    store.publish_success("probe", Result(families), 0.01)
    assert b'autoglm_test_probe_value{index="0"} 1.0' in store.render()[0]
    sample = families[0].samples[0]
    families[0].samples[0] = sample._replace(labels={"index": "renamed"})  # same value, same object
    store.publish_success("probe", Result(families), 0.01)
    assert b'autoglm_test_probe_value{index="renamed"} 1.0' in store.render()[0]
