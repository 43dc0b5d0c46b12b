"""The contract with the real vLLM: what we read from its /metrics is there, as we assume it.

One real vLLM (CPU build, the tiny Llama of scripts/vllm/, see tests/vllm_harness.py) serves the
whole module. The series we read are derived from our own sources, not listed by hand:

- the engine collector's names (ENGINE_NAMES["vllm"] in exporter/collectors/engine.py): each field
  finds one of its names, with the type the collector assumes (gauge or counter);
- every `vllm:` series in the rule files (alerts/*.yml) and dashboards (dashboards/*.json), with
  the type its name implies (`_bucket` a histogram's, `_total` a counter's, else a gauge) and every
  label the expression selects, groups by or asks label_values for.

The same contract holds on both pages of the golden test (vLLM 0.11.0's and 0.32.0's: users run
both), and the recorded 0.32 page (tests/fixtures/golden/vllm-0.32.0.metrics) must still match the
installed vLLM: same families, types and label names. And the exporter's own collectors,
run against the real server, read every engine field and put every probe into the histogram buckets
the latency objectives' recording rules count.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoglm_exporter.collectors.engine import ENGINE_NAMES, EngineCollector
from autoglm_exporter.collectors.probe import ProbeCollector
from autoglm_exporter.config import EngineConfig, ProbeTarget
from mixin import config

from .conftest import FIXTURES, REPO, registry_of
from .vllm_harness import TEST_TIMEOUT, VllmServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT)]

RECORDED_0_11 = FIXTURES / "golden" / "vllm-0.11.0.metrics"
RECORDED_0_32 = FIXTURES / "golden" / "vllm-0.32.0.metrics"
VLLM_NAME = re.compile(r"vllm:[A-Za-z0-9_:]+")
# What the collector assumes of each field (engine.py re-exports them as gauges and counters).
FIELD_TYPES = {
    "waiting": "gauge",
    "running": "gauge",
    "kv_cache": "gauge",
    "generation": "counter",
    "prompt": "counter",
}


class Page:
    """A /metrics page by sample name: its family's type and the label names its samples carry."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.labels: dict[str, set[str]] = {}
        self.families: dict[str, tuple[str, frozenset[str]]] = {}
        for family in text_string_to_metric_families(text):
            names: set[str] = set()
            for sample in family.samples:
                self.types[sample.name] = family.type
                self.labels.setdefault(sample.name, set()).update(sample.labels)
                names.update(sample.labels)
            self.families[family.name] = (family.type, frozenset(names))


@pytest.fixture(scope="module")
def served(vllm_server: VllmServer) -> Iterator[Page]:
    """The real page after traffic of both kinds (a plain and a streamed chat completion)."""
    assert vllm_server.chat("Hello there", max_tokens=8).status_code == 200
    assert vllm_server.chat("Stream it", max_tokens=8, stream=True).status_code == 200
    yield Page(vllm_server.metrics())


def expressions() -> Iterator[tuple[str, str]]:
    """(file, expression) for every rule expression and dashboard string that names a vllm: series."""
    for path in sorted((REPO / "alerts").glob("*.yml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                if VLLM_NAME.search(str(rule.get("expr", ""))):
                    yield path.name, str(rule["expr"])
    for path in sorted((REPO / "dashboards").glob("*.json")):
        for text in _strings(json.loads(path.read_text())):
            if VLLM_NAME.search(text):
                yield path.name, text


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def labels_read(expression: str) -> set[str]:
    """Label names the expression selects on, groups by, or asks label_values for.

    Our expressions that read vLLM's series read nothing else, so each of these must be on them."""
    labels: set[str] = set()
    for selector in re.findall(r"vllm:[A-Za-z0-9_:]+\{([^}]*)\}", expression):
        labels.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", selector))
    for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expression):
        labels.update(name.strip() for name in grouping.split(",") if name.strip())
    labels.update(re.findall(r"label_values\(\s*vllm:[A-Za-z0-9_:]+\s*,\s*(\w+)\s*\)", expression))
    return labels


def implied_type(sample_name: str) -> str:
    if sample_name.endswith(("_bucket", "_sum", "_count")):
        return "histogram"
    return "counter" if sample_name.endswith("_total") else "gauge"


def test_the_rules_and_dashboards_read_vllm_series_found_by_the_scan() -> None:
    # The scan itself: the dashboards do read vLLM's histograms and its model label.
    found = {name for _, expression in expressions() for name in VLLM_NAME.findall(expression)}
    assert "vllm:time_to_first_token_seconds_bucket" in found
    assert "model_name" in labels_read("label_values(vllm:num_requests_running, model_name)")
    assert labels_read('sum by (le, model_name) (rate(vllm:x_bucket{model_name=~"$m"}[5m]))') == {
        "le",
        "model_name",
    }


def problems_reading(page: Page) -> list[str]:
    """What the rules, the dashboards and the engine collector would miss on this page."""
    problems = []
    for source, expression in expressions():
        wanted = labels_read(expression)
        for name in set(VLLM_NAME.findall(expression)):
            if name not in page.types:
                problems.append(f"{source}: {name} is not served")
                continue
            if page.types[name] != implied_type(name):
                problems.append(f"{source}: {name} is a {page.types[name]}, not a {implied_type(name)}")
            if missing := wanted - page.labels[name]:
                problems.append(f"{source}: {name} has no label {sorted(missing)}")
    names = ENGINE_NAMES["vllm"]
    for field, kind in FIELD_TYPES.items():
        candidates = getattr(names, field)
        present = [name for name in candidates if name in page.types]
        if not present:
            problems.append(f"engine collector: {field}: none of {candidates} is served")
        elif page.types[present[0]] != kind:
            problems.append(
                f"engine collector: {field}: {present[0]} is a {page.types[present[0]]}, not a {kind}"
            )
    return problems


def test_every_series_we_read_is_served_by_the_real_vllm_as_assumed(served: Page) -> None:
    problems = problems_reading(served)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("recorded", [RECORDED_0_11, RECORDED_0_32], ids=lambda path: path.name)
def test_every_series_we_read_is_on_each_recorded_vllm_page(recorded: Path) -> None:
    # Users run both versions: what we read must be on both.
    problems = problems_reading(Page(recorded.read_text()))
    assert not problems, "\n".join(problems)


def sleep_state_problems(text: str) -> list[str]:
    """vLLM 0.32's sleep state, as the engine collector reads it: a gauge per engine core with a
    `sleep_state` label whose values include `awake` (1 while awake), beside the sleep levels."""
    names = ENGINE_NAMES["vllm"].sleep_state
    page = Page(text)
    served = [name for name in names if name in page.types]
    if not served:
        return [f"engine collector: sleep_state: none of {names} is served"]
    states = {
        sample.labels.get("sleep_state")
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == served[0]
    }
    problems = [] if page.types[served[0]] == "gauge" else [f"{served[0]} is a {page.types[served[0]]}"]
    if not {"awake", "weights_offloaded", "discard_all"} <= states:
        problems.append(f"{served[0]}: sleep_state values {sorted(map(str, states))}")
    return problems


def test_the_sleep_state_is_served_as_the_engine_collector_reads_it(vllm_server: VllmServer) -> None:
    for text in (vllm_server.metrics(), RECORDED_0_32.read_text()):
        assert not sleep_state_problems(text), sleep_state_problems(text)
    # Awake, it says so: the collector reads it as not sleeping.
    engine = EngineConfig("vllm", "vllm", f"{vllm_server.url}/metrics", timeout=10)
    assert EngineCollector((engine,)).collect().facts.engines["vllm"].sleeping is False


def test_the_engine_collector_reads_every_field_from_the_real_engine(vllm_server: VllmServer) -> None:
    engine = EngineConfig("vllm", "vllm", f"{vllm_server.url}/metrics", timeout=10)
    collector = EngineCollector((engine,))
    first = collector.collect().facts.engines["vllm"]
    # ignore_eos: the random weights may otherwise end the answer before its fourth token.
    assert vllm_server.chat("More tokens", max_tokens=4, ignore_eos=True).status_code == 200
    second = collector.collect().facts.engines["vllm"]
    assert second.up and second.error is None, second
    assert second.waiting is not None and second.running is not None, second
    assert second.kv_cache_usage is not None and 0 <= second.kv_cache_usage <= 1, second
    assert second.prompt_tokens is not None and second.prompt_tokens > 0, second
    assert first.generation_tokens is not None
    assert second.tokens_since_last == 4, (first, second)  # the counter moves with what it generated


def test_the_recorded_0_32_page_still_matches_the_installed_vllm(served: Page) -> None:
    recorded = Page(RECORDED_0_32.read_text())
    live = {name: spec for name, spec in served.families.items() if name.startswith("vllm:")}
    kept = {name: spec for name, spec in recorded.families.items() if name.startswith("vllm:")}
    assert kept == live, (
        "vLLM's families differ from tests/fixtures/golden/vllm-0.32.0.metrics: re-record it "
        f"(its header says how). Only recorded: {sorted(kept.keys() - live.keys())}; "
        f"only served: {sorted(live.keys() - kept.keys())}; "
        f"other type or labels: {sorted(n for n in kept.keys() & live.keys() if kept[n] != live[n])}"
    )


def test_every_latency_objective_is_a_bucket_of_the_probe_histogram_it_counts(
    vllm_server: VllmServer,
) -> None:
    """The probes against the real engine (plain and streaming) fill the histograms whose buckets
    the recording rules of the latency objectives select: every such selector matches a bucket."""
    url = f"{vllm_server.url}/v1/chat/completions"
    targets = (
        ProbeTarget("chat", "openai_chat", url, timeout=60),
        ProbeTarget("chat-stream", "openai_chat", url, timeout=60, stream=True),
    )
    result = ProbeCollector(targets).collect()
    for name, fact in result.facts.targets.items():
        assert fact.outcome.success, (name, fact.outcome)
    page = generate_latest(registry_of(result)).decode()
    buckets: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.setdefault(sample.name, set()).add(sample.labels["le"])

    for objective in (o for o in config.OBJECTIVES if o.threshold is not None):
        selectors = list(_bucket_selectors(f"service:autoglm_{objective.name}:"))
        assert selectors, f"no rule counts the buckets of objective {objective.name}"
        for histogram, le in selectors:
            assert histogram in buckets, f"{objective.name}: {histogram} is not rendered by the probes"
            matched = [bound for bound in buckets[histogram] if re.fullmatch(le, bound)]
            assert matched, (objective.name, histogram, le, sorted(buckets[histogram]))


def _bucket_selectors(record_prefix: str) -> Iterator[tuple[str, str]]:
    """(bucket series, le as a regex) for every bucket the rules recording `record_prefix*` select."""
    for path in sorted((REPO / "alerts").glob("*.yml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                if not str(rule.get("record", "")).startswith(record_prefix):
                    continue
                for name, op, value in re.findall(r'(\w+_bucket)\{[^}]*?le(=~|=)"([^"]*)"', rule["expr"]):
                    # PromQL strings escape a backslash as two; `=` matches the value exactly.
                    yield name, value.replace("\\\\", "\\") if op == "=~" else re.escape(value)


def test_the_harness_finds_the_engine_core_under_the_api_server(vllm_server: VllmServer) -> None:
    core = vllm_server.engine_core_pid()
    assert core is not None and core in vllm_server.descendants(), vllm_server.descendants()
    assert Path(f"/proc/{core}/cmdline").read_bytes().startswith(b"VLLM::EngineCore")
    # A cmdline rule for the API server does not match its engine core.
    assert b"vllm.entrypoints" in Path(f"/proc/{vllm_server.pid}/cmdline").read_bytes()
    assert b"vllm.entrypoints" not in Path(f"/proc/{core}/cmdline").read_bytes()
