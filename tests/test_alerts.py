"""The alerting and recording rules: promtool accepts them, their unit tests pass, every alert has a
firing and a quiet case, a runbook section and the annotations an operator needs, and the committed
rule files are what mixin/ generates from the thresholds in mixin/config.py."""

from __future__ import annotations

import functools
import importlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import mixin.alerts
import mixin.config

from .conftest import REPO, require_binary

ALERTS = REPO / mixin.alerts.ALERTS_FILE
RECORDING = REPO / mixin.alerts.RECORDING_FILE
RULE_TESTS = REPO / "alerts" / "tests"
RUNBOOKS = REPO / "docs" / "runbooks.md"
SEVERITIES = {"page", "ticket"}
ANNOTATIONS = {"summary", "description", "runbook_url"}
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def rules_of(path: Path) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return rules_of(ALERTS)


def rule_test_files() -> list[Path]:
    files = sorted(RULE_TESTS.glob("*.test.yml"))
    assert files, f"no promtool unit tests in {RULE_TESTS}"
    return files


@functools.cache
def rule_test_documents() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in rule_test_files()]


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *map(str, args)], capture_output=True, text=True, timeout=60, cwd=REPO
    )


# --- the checkers (pure functions of parsed YAML, tested on crafted input below) -----------------------


def _complete(expected: dict[str, Any]) -> bool:
    """A firing case counts only if it pins the severity and every annotation, so templates are tested."""
    labels = expected.get("exp_labels") or {}
    annotations = expected.get("exp_annotations") or {}
    return "severity" in labels and all(key in annotations for key in ANNOTATIONS)


def alert_cases(documents: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """alertname -> {"firing": cases that expect it with labels and annotations, "quiet": empty cases}."""
    cases: dict[str, dict[str, int]] = {}
    for document in documents:
        for test in document.get("tests") or []:
            for case in test.get("alert_rule_test") or []:
                counts = cases.setdefault(case["alertname"], {"firing": 0, "quiet": 0})
                expected = case.get("exp_alerts") or []
                if not expected:
                    counts["quiet"] += 1
                elif all(_complete(alert) for alert in expected):
                    counts["firing"] += 1
    return cases


def missing_cases(alert_names: list[str], documents: list[dict[str, Any]]) -> list[str]:
    cases = alert_cases(documents)
    missing = []
    for name in alert_names:
        counts = cases.get(name, {"firing": 0, "quiet": 0})
        if not counts["firing"]:
            missing.append(
                f"{name}: no firing case (exp_alerts with severity, summary, description, runbook_url)"
            )
        if not counts["quiet"]:
            missing.append(f"{name}: no non-firing case (an alert_rule_test with exp_alerts: [])")
    return missing


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
    assert f"SUCCESS: {len(alert_rules())} rules found" in output, output


def test_promtool_unit_tests_pass() -> None:
    tested = promtool("test", "rules", *rule_test_files())
    output = tested.stdout + tested.stderr
    if tested.returncode != 0:
        print(output)
    assert tested.returncode == 0, output
    assert output.count("SUCCESS") == len(rule_test_files()), output


# --- coverage of the unit tests ---------------------------------------------------------------------


def test_every_alert_has_a_firing_and_a_non_firing_case() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert missing_cases(names, rule_test_documents()) == []


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
    assert missing_cases(["AutoglmX"], both) == []
    assert missing_cases(["AutoglmX"], [{"tests": [{"alert_rule_test": [firing]}]}]) == [
        "AutoglmX: no non-firing case (an alert_rule_test with exp_alerts: [])"
    ]
    assert missing_cases(["AutoglmX"], [{"tests": [{"alert_rule_test": [quiet]}]}]) == [
        "AutoglmX: no firing case (exp_alerts with severity, summary, description, runbook_url)"
    ]
    # a firing case that does not pin the annotations does not test the templates: it does not count
    untemplated = {"alertname": "AutoglmX", "exp_alerts": [{"exp_labels": {"severity": "page"}}]}
    assert missing_cases(["AutoglmX"], [{"tests": [{"alert_rule_test": [quiet, untemplated]}]}]) == [
        "AutoglmX: no firing case (exp_alerts with severity, summary, description, runbook_url)"
    ]
    assert len(missing_cases(["AutoglmX", "AutoglmY"], both)) == 2


def test_every_recording_rule_is_exercised() -> None:
    records = [rule["record"] for rule in rules_of(RECORDING)]
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
    for path, content in mixin.alerts.generated_files().items():
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
    return {alert.name: {"expr": alert.expr, "for": alert.for_} for alert in mixin.alerts.all_alerts()}


@pytest.mark.parametrize(
    ("threshold", "alert"),
    [
        ("gpu_memory_used_ratio", "AutoglmGpuMemoryNearFull"),
        ("gpu_idle_utilization_ratio", "AutoglmGpuIdleWithBacklog"),
        ("context_switches_per_cpu_per_second", "AutoglmContextSwitchStorm"),
        ("cpu_throttled_ratio", "AutoglmCpuThrottled"),
        ("queue_backlog_min_depth", "AutoglmQueueBacklogGrowing"),
        ("restarts_per_window", "AutoglmServiceRestarting"),
    ],
)
def test_thresholds_come_from_mixin_config(
    rebuilt_alerts: pytest.MonkeyPatch, threshold: str, alert: str
) -> None:
    before = _expressions()
    rebuilt_alerts.setitem(mixin.config.THRESHOLDS, threshold, 123457)
    importlib.reload(mixin.alerts)
    after = _expressions()
    assert "123457" in after[alert]["expr"] and after[alert]["expr"] != before[alert]["expr"]
    assert "123457" in mixin.alerts.generated_files()[mixin.alerts.ALERTS_FILE]
    assert [name for name in before if before[name] != after[name]] == [alert]


def test_for_durations_and_windows_come_from_mixin_config(rebuilt_alerts: pytest.MonkeyPatch) -> None:
    before = _expressions()
    rebuilt_alerts.setitem(mixin.config.FOR, "ticket", "37m")
    rebuilt_alerts.setattr(mixin.config, "XID_WINDOW", "41m")
    importlib.reload(mixin.alerts)
    after = _expressions()
    assert after["AutoglmGpuMemoryNearFull"]["for"] == "37m" != before["AutoglmGpuMemoryNearFull"]["for"]
    assert "[41m]" in after["AutoglmGpuCriticalXid"]["expr"]
