"""The alerting and recording rules: promtool accepts them, their unit tests pass, every alert has a
firing and a quiet case, a runbook section and the annotations an operator needs, and the committed
rule files are what mixin/ generates from the thresholds in mixin/config.py."""

from __future__ import annotations

import functools
import importlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import mixin.alertmanager
import mixin.alerts
import mixin.config

from .alertreceiver import WebhookReceiver
from .conftest import REPO, free_port, require_binary, wait_until

ALERTS = REPO / mixin.alerts.ALERTS_FILE
RECORDING = REPO / mixin.alerts.RECORDING_FILE
RULE_TESTS = REPO / "alerts" / "tests"
RUNBOOKS = REPO / "docs" / "runbooks.md"
SEVERITIES = set(mixin.config.SEVERITY.values())
# Alerts with no non-firing case, and why: the Watchdog fires always by design (its silence is the
# page, which only a heartbeat service outside the stack can send; the e2e test sees it arrive).
ALWAYS_FIRING = {"AutoglmWatchdog"}
ANNOTATIONS = {"summary", "description", "runbook_url"}
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def rules_of(path: Path) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules_of(ALERTS) if "alert" in rule]


def rule_test_files() -> list[Path]:
    files = sorted(RULE_TESTS.glob("*.test.yml"))
    assert files, f"no promtool unit tests in {RULE_TESTS}"
    return files


@functools.cache
def rule_test_documents() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in rule_test_files()]


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # The timeout guards against a hang, under the promtool tests' own 600 s: a busy runner took 300 s for a file.
    command = [require_binary("promtool"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=540, cwd=REPO)


# --- the checkers (pure functions of parsed YAML, tested on crafted input below) -----------------------


def _complete(expected: dict[str, Any]) -> bool:
    """A firing case counts only if it pins the severity and every annotation, so templates are tested."""
    labels = expected.get("exp_labels") or {}
    annotations = expected.get("exp_annotations") or {}
    return "severity" in labels and all(key in annotations for key in ANNOTATIONS)


def alert_cases(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """alertname -> {"firing": the exp_labels of complete expected alerts, "quiet": empty cases}."""
    cases: dict[str, dict[str, Any]] = {}
    for document in documents:
        for test in document.get("tests") or []:
            for case in test.get("alert_rule_test") or []:
                counts = cases.setdefault(case["alertname"], {"firing": [], "quiet": 0})
                expected = case.get("exp_alerts") or []
                if not expected:
                    counts["quiet"] += 1
                elif all(_complete(alert) for alert in expected):
                    counts["firing"] += [alert["exp_labels"] for alert in expected]
    return cases


def rule_identity(rule: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """A rule's alert name and static labels: rules of one name (the burn-rate windows) differ there."""
    return rule["alert"], dict(rule.get("labels") or {})


def missing_cases(
    rules: list[tuple[str, dict[str, str]]],
    documents: list[dict[str, Any]],
    always_firing: set[str] = frozenset(),
) -> list[str]:
    """Every rule needs a firing case that pins its static labels and every annotation, and every
    alert name a non-firing case."""
    cases = alert_cases(documents)
    missing = []
    for name, labels in rules:
        counts = cases.get(name, {"firing": [], "quiet": 0})
        if not any(
            labels.items() <= {k: str(v) for k, v in fired.items()}.items() for fired in counts["firing"]
        ):
            missing.append(
                f"{name} {labels}: no firing case (exp_alerts with severity, summary, description, runbook_url)"
            )
        if not counts["quiet"] and name not in always_firing:
            missing.append(f"{name}: no non-firing case (an alert_rule_test with exp_alerts: [])")
    return sorted(set(missing))


def unexercised_records(record_names: list[str], documents: list[dict[str, Any]]) -> list[str]:
    used: set[str] = set()
    for document in documents:
        for test in document.get("tests") or []:
            for case in test.get("promql_expr_test") or []:
                used.update(METRIC_NAME.findall(case["expr"]))
    return [name for name in record_names if name not in used]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections(text: str) -> dict[str, str]:
    """`## ` heading -> the text of its section."""
    sections: dict[str, str] = {}
    heading = None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
            sections[heading] = ""
        elif line.startswith("# "):
            heading = None
        elif heading is not None:
            sections[heading] += line + "\n"
    return sections


# --- promtool ---------------------------------------------------------------------------------------


def test_promtool_check_rules_is_clean() -> None:
    checked = promtool("check", "rules", ALERTS, RECORDING)
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "WARNING" not in output and "FAILED" not in output, output
    assert f"SUCCESS: {len(rules_of(ALERTS))} rules found" in output, output


# One promtool run per file: together they take about a CPU minute (every rule evaluated at every
# step of every case), which the test workers then share instead of one of them.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("tests_file", rule_test_files(), ids=lambda path: path.name)
def test_promtool_unit_tests_pass(tests_file: Path) -> None:
    tested = promtool("test", "rules", tests_file)
    output = tested.stdout + tested.stderr
    if tested.returncode != 0:
        print(output)
    assert tested.returncode == 0, output
    assert output.count("SUCCESS") == 1, output


# --- coverage of the unit tests ---------------------------------------------------------------------


def test_every_alert_has_a_firing_and_a_non_firing_case() -> None:
    identities = [rule_identity(rule) for rule in alert_rules()]
    keys = [(name, sorted(labels.items())) for name, labels in identities]
    assert len(keys) == len(set(map(str, keys))), "two rules with the same name and labels"
    repeated = {name for name, _ in identities if sum(1 for other, _ in identities if other == name) > 1}
    assert repeated == {o.alert for o in mixin.config.OBJECTIVES}, "only burn-rate windows share a name"
    assert missing_cases(identities, rule_test_documents(), ALWAYS_FIRING) == []


def test_unit_tests_name_only_alerts_that_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert set(alert_cases(rule_test_documents())) <= names


def test_the_case_checker_catches_a_missing_case() -> None:
    firing = {
        "alertname": "AutoglmX",
        "exp_alerts": [
            {
                "exp_labels": {"severity": "page"},
                "exp_annotations": {"summary": "s", "description": "d", "runbook_url": "u"},
            }
        ],
    }
    quiet = {"alertname": "AutoglmX", "exp_alerts": []}
    both = [{"tests": [{"alert_rule_test": [quiet, firing]}]}]
    x = ("AutoglmX", {"severity": "page"})
    assert missing_cases([x], both) == []
    assert missing_cases([x], [{"tests": [{"alert_rule_test": [firing]}]}]) == [
        "AutoglmX: no non-firing case (an alert_rule_test with exp_alerts: [])"
    ]
    assert missing_cases([x], [{"tests": [{"alert_rule_test": [firing]}]}], {"AutoglmX"}) == []
    assert missing_cases([x], [{"tests": [{"alert_rule_test": [quiet]}]}]) == [
        "AutoglmX {'severity': 'page'}: no firing case (exp_alerts with severity, summary, description, runbook_url)"
    ]
    # a firing case that does not pin the annotations does not test the templates: it does not count
    untemplated = {"alertname": "AutoglmX", "exp_alerts": [{"exp_labels": {"severity": "page"}}]}
    assert missing_cases([x], [{"tests": [{"alert_rule_test": [quiet, untemplated]}]}]) == [
        "AutoglmX {'severity': 'page'}: no firing case (exp_alerts with severity, summary, description, runbook_url)"
    ]
    # a rule of the same name with other static labels (another burn-rate window) needs its own case
    other_window = ("AutoglmX", {"severity": "page", "long": "6h"})
    assert missing_cases([x, other_window], both) == [
        "AutoglmX {'severity': 'page', 'long': '6h'}: no firing case (exp_alerts with severity, summary, "
        "description, runbook_url)"
    ]
    assert len(missing_cases([x, ("AutoglmY", {"severity": "page"})], both)) == 2


def test_every_recording_rule_is_exercised() -> None:
    records = [rule["record"] for path in (RECORDING, ALERTS) for rule in rules_of(path) if "record" in rule]
    assert records
    assert unexercised_records(records, rule_test_documents()) == []
    assert unexercised_records(["a:b:c"], [{"tests": [{"promql_expr_test": [{"expr": "a:b:cd"}]}]}]) == [
        "a:b:c"
    ]


# --- what every alert carries -----------------------------------------------------------------------


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert set(rule["annotations"]) == ANNOTATIONS
    assert all(rule["annotations"][key].strip() for key in ANNOTATIONS)
    assert rule["annotations"]["runbook_url"] == f"{mixin.config.RUNBOOK_BASE}#{github_anchor(rule['alert'])}"


def test_runbook_sections_match_the_alerts_one_to_one() -> None:
    sections = runbook_sections(RUNBOOKS.read_text())
    anchors = {github_anchor(heading): heading for heading in sections}
    linked = {rule["annotations"]["runbook_url"].split("#", 1)[1]: rule["alert"] for rule in alert_rules()}
    assert sorted(set(linked) - set(anchors)) == [], "runbook_url anchors without a section"
    assert sorted(set(anchors) - set(linked)) == [], "runbook sections without an alert"
    assert sorted(sections) == sorted(linked.values())  # the heading is the alert name itself
    for heading, body in sections.items():
        assert "```" in body, f"{heading}: no command to confirm it by hand"


def test_runbook_parser() -> None:
    text = "# Runbooks\nintro\n## AutoglmA\na\n### detail\nmore\n## AutoglmB\nb\n"
    assert runbook_sections(text) == {"AutoglmA": "a\n### detail\nmore\n", "AutoglmB": "b\n"}
    assert github_anchor("AutoglmChainBroken") == "autoglmchainbroken"
    assert github_anchor("Silencing, with amtool") == "silencing-with-amtool"


# --- generated from one place -----------------------------------------------------------------------


def test_committed_rule_files_match_the_generator() -> None:
    for path, content in mixin.alerts.rule_files().items():
        committed = REPO / path
        assert committed.is_file(), f"{path} is missing: run make mixin"
        assert committed.read_text() == content, f"{path} differs from mixin/: run make mixin"


@pytest.fixture
def rebuilt_alerts(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Lets a test change mixin.config and rebuild mixin.alerts; restores both afterwards."""
    yield monkeypatch
    monkeypatch.undo()
    importlib.reload(mixin.alerts)


def _expressions() -> dict[str, dict[str, Any]]:
    rules = [alert.rule() for alert in mixin.alerts.all_alerts()]
    return {f"{r['alert']} {r['labels']}": {"expr": r["expr"], "for": r.get("for")} for r in rules}


@pytest.mark.parametrize(
    ("threshold", "alert"),
    [
        ("gpu_memory_used_ratio", "AutoglmGpuMemoryNearFull"),
        ("gpu_idle_utilization_ratio", "AutoglmGpuIdleWithBacklog"),
        ("context_switches_per_cpu_per_second", "AutoglmContextSwitchStorm"),
        ("cpu_throttled_ratio", "AutoglmCpuThrottled"),
        ("queue_backlog_min_depth", "AutoglmQueueBacklogGrowing"),
        ("queue_backlog_high_depth", "AutoglmQueueBacklogHigh"),
        ("restarts_per_window", "AutoglmServiceRestarting"),
        ("kv_cache_usage_ratio", "AutoglmKvCacheNearFull"),
        ("redis_memory_used_ratio", "AutoglmRedisMemoryNearMax"),
    ],
)
def test_thresholds_come_from_mixin_config(
    rebuilt_alerts: pytest.MonkeyPatch, threshold: str, alert: str
) -> None:
    before = _expressions()
    rebuilt_alerts.setitem(mixin.config.THRESHOLDS, threshold, 123457)
    importlib.reload(mixin.alerts)
    after = _expressions()
    changed = [key for key in before if before[key] != after[key]]
    assert [key.split(" ", 1)[0] for key in changed] == [alert]
    assert "123457" in after[changed[0]]["expr"]
    assert "123457" in mixin.alerts.rule_files()[mixin.alerts.ALERTS_FILE]


def _one(expressions: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [value for key, value in expressions.items() if key.split(" ", 1)[0] == name]
    return found


def test_for_durations_and_windows_come_from_mixin_config(rebuilt_alerts: pytest.MonkeyPatch) -> None:
    before = _expressions()
    rebuilt_alerts.setitem(mixin.config.FOR, "ticket", 37 * 60)
    rebuilt_alerts.setattr(mixin.config, "XID_WINDOW", 41 * 60)
    after = _expressions()
    assert (
        _one(after, "AutoglmGpuMemoryNearFull")["for"]
        == "37m"
        != _one(before, "AutoglmGpuMemoryNearFull")["for"]
    )
    assert "[41m]" in _one(after, "AutoglmGpuCriticalXid")["expr"]


def test_symptoms_wait_only_while_a_cause_of_their_service_fires() -> None:
    """A pending cause holds nothing back: a gate that closes on a cause going pending resets the
    symptom's `for:`, and a cause that keeps going pending without firing would hide the page for ever
    (alerts/tests/one_node.test.yml)."""
    alerts = mixin.alerts.all_alerts()
    causes = {a.name for a in alerts if a.role in ("cause", "network")}
    assert {"AutoglmRedisDown", "AutoglmProcessMissing", "AutoglmThreadsBlocked"} <= causes
    for alert in alerts:
        if alert.role == "symptom":
            assert "unless on (instance, service) ALERTS{alertname=~" in alert.expr, alert.name
            assert "unless on (instance) ALERTS{alertname=~" in alert.expr, alert.name
        elif alert.role == "slo":  # and for as long as the failures a cause explains stay in the short window
            short = alert.labels["short"]
            assert "unless on (service) max_over_time(ALERTS{alertname=~" in alert.expr, alert.name
            assert alert.expr.endswith(f"[{short}])"), alert.name
        elif alert.role == "network":  # while a cause of the link fires
            assert "unless on (instance, service) ALERTS{alertname=~" in alert.expr, alert.name
            continue
        else:
            assert "ALERTS" not in alert.expr, alert.name
        gates = re.findall(r"ALERTS\{([^}]*)\}", alert.expr)
        assert all('alertstate="firing"' in gate for gate in gates), alert.name
        gate = re.search(r'ALERTS\{alertname=~"([^"]+)", alertstate="firing", service!=""\}', alert.expr)
        if gate:
            assert set(gate.group(1).split("|")) == causes, alert.name


def test_alerts_about_the_chain_ride_out_a_scrape_gap_and_read_no_recorded_join() -> None:
    """An exporter restart makes every series stale for a scrape or two: the alerts of an open
    incident stay firing through it (keep_firing_for), and none reads a recording rule to name its
    service (the recording group is evaluated on its own schedule, so its join lags a restart)."""
    records = {rule["record"] for rule in rules_of(RECORDING)}
    for rule in alert_rules():
        assert not records & set(METRIC_NAME.findall(rule["expr"])), rule["alert"]
    rules = {rule["alert"]: rule for rule in alert_rules()}
    keep = mixin.config.duration(mixin.config.KEEP_FIRING)
    for name in ("AutoglmEngineDown", "AutoglmChainBroken", "AutoglmGpuLost", "AutoglmLatencyBudgetBurn"):
        assert rules[name].get("keep_firing_for") == keep, name
    assert "keep_firing_for" not in rules["AutoglmWatchdog"]


def test_severity_names_come_from_mixin_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """An Alertmanager that routes on other names: rename them in one place, rules and routing follow."""
    monkeypatch.setitem(mixin.config.SEVERITY, "critical", "P1")
    rules = [alert.rule() for alert in mixin.alerts.all_alerts()]
    assert "P1" in {rule["labels"]["severity"] for rule in rules}
    assert "critical" not in {rule["labels"]["severity"] for rule in rules}
    routes = mixin.alertmanager.routing()["route"]["routes"]
    assert any('severity="P1"' in route["matchers"] for route in routes)
    assert not any('severity="critical"' in route["matchers"] for route in routes)


def test_one_time_scale_shrinks_every_duration_of_the_rules() -> None:
    """The end-to-end test's shortcut: every `for:`, window and latency objective, by one factor."""
    shipped = yaml.safe_load(mixin.alerts.rule_files()[mixin.alerts.ALERTS_FILE])
    with mixin.config.time_scale(1 / 20):
        scaled = yaml.safe_load(mixin.alerts.rule_files()[mixin.alerts.ALERTS_FILE])
    pairs = [
        (a, b)
        for g1, g2 in zip(shipped["groups"], scaled["groups"], strict=True)
        for a, b in zip(g1["rules"], g2["rules"], strict=True)
    ]
    assert pairs
    for shipped_rule, scaled_rule in pairs:
        name = shipped_rule.get("alert") or shipped_rule["record"]
        for key in ("for", "keep_firing_for"):
            if key in shipped_rule:
                assert _seconds(scaled_rule[key]) * 20 == _seconds(shipped_rule[key]), name
        windows = re.findall(r"\[(\w+)\]", shipped_rule["expr"])
        assert [_seconds(w) / 20 for w in windows] == [
            _seconds(w) for w in re.findall(r"\[(\w+)\]", scaled_rule["expr"])
        ], name
    # the latency objective of 10 s becomes the 0.5 s bucket; the rules keep their shipped names
    names = {
        rule["record"]: rule["expr"]
        for group in scaled["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    assert 'le=~"10(\\\\.0)?"' not in names["service:autoglm_probe_slow:ratio_rate5m"]
    assert 'le="0.5"' in names["service:autoglm_probe_slow:ratio_rate5m"]
    assert "[15s]" in names["service:autoglm_probe_slow:ratio_rate5m"]
    with mixin.config.time_scale(1 / 7), pytest.raises(ValueError, match="no bucket bound"):
        mixin.alerts.rule_files()


def _seconds(duration: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|[smhd])", duration):
        total += int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return total


def test_prometheus_durations() -> None:
    assert [mixin.config.prometheus_duration(s) for s in (300, 90, 1.5, 3600, 86400 * 3, 0.05)] == [
        "5m", "90s", "1500ms", "1h", "3d", "50ms",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        mixin.config.prometheus_duration(0)


# --- Alertmanager's grouping, run for real --------------------------------------------------------

# The routing generated at this scale: a 30 s wait is 3 s, the 5 min group interval of before 30 s.
AM_SCALE = 1 / 10


class PostedAlerts:
    """A real Alertmanager with the generated routing at AM_SCALE, alerts posted to it as Prometheus
    does, and its notifications arriving at a webhook receiver in this test."""

    def __init__(self, tmp_path: Path, receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        with mixin.config.time_scale(AM_SCALE):
            document = mixin.alertmanager.routing(receiver.url)
        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        self.url = f"http://127.0.0.1:{free_port()}"
        args = [require_binary("prometheus-alertmanager"), f"--config.file={path}"]
        args += [f"--storage.path={tmp_path / 'data'}", f"--web.listen-address={self.url[7:]}"]
        self.process = subprocess.Popen([*args, "--cluster.listen-address="], stderr=subprocess.DEVNULL)
        self.wait(lambda: httpx.get(f"{self.url}/-/ready").status_code == 200, 30)

    def wait(self, predicate: Any, timeout: float) -> Any:
        def safe() -> Any:
            try:
                return predicate()
            except httpx.HTTPError:
                return False

        return wait_until(safe, timeout=timeout, interval=0.1)

    def post(self, *alerts: dict[str, str], resolved: bool = False) -> float:
        """Fire (or resolve) alerts given by their labels; the time they were posted."""
        now = datetime.now(UTC).isoformat()
        body = [
            {
                "labels": labels,
                "annotations": {"summary": labels["alertname"]},
                "startsAt": now,
                **({"endsAt": now} if resolved else {}),
            }
            for labels in alerts
        ]
        assert httpx.post(f"{self.url}/api/v2/alerts", json=body, timeout=5).status_code == 200
        return time.monotonic()

    def next_page(self, after: int, timeout: float = 60) -> tuple[dict[str, Any], float]:
        """The first notification after the first `after`, and when it arrived."""
        self.wait(lambda: len(self.receiver.received()) > after, timeout)
        return self.receiver.received()[after], time.monotonic()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _alert(name: str, **labels: str) -> dict[str, str]:
    return {"alertname": name, "severity": mixin.config.SEVERITY["critical"], **labels}


def _firing(notification: dict[str, Any]) -> set[str]:
    return {a["labels"]["alertname"] for a in notification["alerts"] if a["status"] == "firing"}


@pytest.fixture
def posted(tmp_path: Path) -> Iterator[PostedAlerts]:
    with WebhookReceiver() as receiver:
        alertmanager = PostedAlerts(tmp_path, receiver)
        try:
            yield alertmanager
        finally:
            alertmanager.close()


def test_a_second_cause_and_a_new_incident_page_within_the_initial_wait(posted: PostedAlerts) -> None:
    """Each cause pages in a group of its own: a second cause pages after the initial wait (its text
    names the first: alerts/tests/one_node.test.yml), not one group interval later; a new incident
    that begins while the last one's resolution is still on its way pages at once too, and without
    the last incident's alerts (Prometheus re-sends resolved alerts for 15 minutes: a group of the
    service alone would carry them)."""
    before = 5 * mixin.config.MINUTE * AM_SCALE  # the group interval the issue saw, at this scale
    stalled = _alert("AutoglmEngineStalled", service="open-autoglm", instance="node-1", engine="vllm")
    oom = _alert("AutoglmCudaOutOfMemory", service="open-autoglm", instance="node-1", log="error")

    posted.post(stalled)
    first, _ = posted.next_page(0)
    assert _firing(first) == {"AutoglmEngineStalled"}

    joined = posted.post(oom)
    second, arrived = posted.next_page(1)
    assert _firing(second) == {"AutoglmCudaOutOfMemory"}
    assert arrived - joined < before / 2, f"the second cause took {arrived - joined:.1f} s to page"

    posted.post(stalled, oom, resolved=True)
    missing = _alert("AutoglmProcessMissing", service="open-autoglm", instance="node-2", dependency="api")
    began = posted.post(missing)

    def new_incident() -> dict[str, Any] | None:
        pages = [n for n in posted.receiver.received() if "AutoglmProcessMissing" in _firing(n)]
        return pages[0] if pages else None

    page = posted.wait(new_incident, 60)
    arrived = time.monotonic()
    assert [a["labels"]["alertname"] for a in page["alerts"]] == ["AutoglmProcessMissing"]
    assert arrived - began < before / 2, f"the new incident took {arrived - began:.1f} s to page"


def test_a_node_fault_pages_once_for_its_node(posted: PostedAlerts) -> None:
    """A GPU lost and its XID 79 on one node: one notification naming both; another node's fault is
    another page."""
    labels = {"instance": "node-3", "gpu": "0"}
    posted.post(_alert("AutoglmGpuLost", **labels), _alert("AutoglmGpuCriticalXid", xid="79", **labels))
    page, _ = posted.next_page(0)
    posted.wait(
        lambda: _firing(posted.receiver.received()[-1]) == {"AutoglmGpuLost", "AutoglmGpuCriticalXid"}, 30
    )
    assert {json.dumps(n["groupLabels"]) for n in posted.receiver.received()} == {'{"instance": "node-3"}'}
    assert page["groupLabels"] == {"instance": "node-3"}
