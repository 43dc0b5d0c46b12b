"""The Grafana dashboards of the mixin: committed copies match the generator, every panel is
complete and laid out, every query only names metrics that exist and parses, every threshold line
comes from mixin/config.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from demo.engine import EngineState
from mixin import alerts as mixin_alerts
from mixin import config, dashboards
from mixin.grafana import DATASOURCE, GRID_WIDTH, concrete
from mixin.rules import RECORDING_RULES

from .conftest import REPO

UIDS = {"autoglm-chain", "autoglm-process", "autoglm-dependencies", "autoglm-gpu", "autoglm-exporter"}
UIDS |= {"autoglm-fleet"}
UNITS = {"s", "bytes", "percentunit", "celsius", "watt", "hertz", "ops", "cps", "short", "none"}
UNITS |= {"suffix:cores", "count:tokens/s", "joule"}  # joule: Grafana's Energy category
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__range_s"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
PROMQL_WORDS |= {"offset", "inf", "nan"}
SCRAPE_METRICS = {"up", "scrape_duration_seconds", "ALERTS"}
# Metrics the team's contract promises the exporter (TEAM.md) that the README's generated reference
# lists once their branches are merged; until then the dashboards' panels for them show no data.
CONTRACT_METRICS = {
    "autoglm_diagnosis_verdict_since_timestamp_seconds",
    "autoglm_probe_in_flight_seconds",
    "autoglm_exporter_threads",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
}
CONTRACT_METRICS |= {
    f"{name}{suffix}"
    for name in ("autoglm_probe_request_duration_seconds", "autoglm_probe_first_token_seconds")
    for suffix in ("_bucket", "_sum", "_count")
}

# Which config.THRESHOLDS entry each threshold line shows (dashboard uid, panel title).
THRESHOLD_PANELS = {
    ("autoglm-process", "System context switches per CPU"): "context_switches_per_cpu_per_second",
    ("autoglm-process", "CPU throttled ratio"): "cpu_throttled_ratio",
    (
        "autoglm-process",
        f"Restarts in {config.prometheus_duration(config.RESTART_WINDOW)}",
    ): "restarts_per_window",
    ("autoglm-dependencies", "KV cache usage"): "kv_cache_usage_ratio",
    ("autoglm-dependencies", "Queue depth"): "queue_backlog_min_depth",
    ("autoglm-dependencies", "Requests waiting and running"): "engine_queue_scale_out",
    ("autoglm-gpu", "Memory used ratio"): "gpu_memory_used_ratio",
    ("autoglm-gpu", "Temperature"): "gpu_temperature_celsius",
    ("autoglm-gpu", "Utilization per service"): "gpu_scale_out_utilization_ratio",
    ("autoglm-exporter", "Last success age"): "collector_stale_seconds",
    ("autoglm-chain", "Probe duration"): "probe_latency_warning_seconds",
    ("autoglm-chain", "Time to first token"): "probe_latency_warning_seconds",
    ("autoglm-chain", "Probe duration percentiles"): "probe_latency_warning_seconds",
}
# Panels coloured by fixed classes rather than a tunable threshold: (uid, title) -> their steps.
CLASS_PANELS = {("autoglm-chain", "Last HTTP status"): [value for value, _ in config.HTTP_STATUS_STEPS]}


def generated() -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON, as the generator makes it now."""
    boards = [json.loads(content) for content in dashboards.generated_files().values()]
    return {board["uid"]: board for board in boards}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (not rows)."""
    return (panel for panel in board["panels"] if panel["type"] != "row")


def expressions(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: its targets, its annotations' queries and the series
    selectors its query variables take label values from."""
    exprs = [target["expr"] for panel in panels(board) for target in panel["targets"]]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            selector = re.fullmatch(r"label_values\((.+), (\w+)\)", var["definition"])
            assert selector and selector[2] == var["name"], var["definition"]
            exprs.append(selector[1])
    return exprs


def threshold_values(panel: dict[str, Any]) -> list[float]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0]["value"] is None, panel["title"]
    return [step["value"] for step in steps[1:]]


def engine_metrics() -> set[str]:
    """The vLLM metric names the demo engine exports (the dashboards read them from the engine)."""
    state = EngineState()
    clock = state.enqueue()
    state.schedule(1, 1, clock)
    state.generated(clock)
    state.finish(1, 1, clock)
    return {
        sample.name
        for family in text_string_to_metric_families(state.exposition("m").decode())
        for sample in family.samples
    }


def documented_metrics() -> set[str]:
    """Metric names of the README's generated metrics reference (histograms with their series)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("<!-- metrics reference") : readme.index("<!-- end of metrics reference")]
    names: set[str] = set()
    for name, kind in re.findall(r"^\| `([a-z_:]+)` \| (\w+) \|", section, flags=re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: strings, matchers, ranges, label lists and function
    names taken out first."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    words = re.findall(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()", text)
    return {word for word in words if word.lower() not in PROMQL_WORDS}


def balanced(expr: str) -> bool:
    closing = {")": "(", "}": "{", "]": "["}
    stack: list[str] = []
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if char in "({[":
            stack.append(char)
        elif char in closing and (not stack or stack.pop() != closing[char]):
            return False
    return not stack


def test_committed_dashboards_match_the_generator() -> None:
    files = dashboards.generated_files()
    assert set(files) == {f"dashboards/{uid}.json" for uid in UIDS}
    stale = [
        path
        for path, content in files.items()
        if not (REPO / path).is_file() or (REPO / path).read_text() != content
    ]
    assert stale == [], f"{stale} differ from the mixin: run `make mixin` and commit the result"
    committed = {f"dashboards/{path.name}" for path in (REPO / "dashboards").glob("*.json")}
    assert committed == set(files), "dashboards/ holds a JSON file the mixin does not generate"


def test_each_dashboard_has_its_stable_uid_title_and_settings() -> None:
    boards = generated()
    assert set(boards) == UIDS
    titles = {board["title"] for board in boards.values()}
    assert len(titles) == len(boards) and all(title.startswith("AutoGLM / ") for title in titles)
    for board in boards.values():
        assert board["schemaVersion"] == 39
        assert board["refresh"] == "10s"
        assert board["time"] == {"from": "now-1h", "to": "now"}
        assert "autoglm" in board["tags"]
        assert board["description"]


def test_the_dashboards_link_to_each_other() -> None:
    for board in generated().values():
        links = [link for link in board["links"] if link["type"] == "dashboards"]
        assert links, board["uid"]
        assert all(link["tags"] == ["autoglm"] and link["includeVars"] and link["keepTime"] for link in links)


def _panel(uid: str, title: str) -> dict[str, Any]:
    return next(p for p in panels(generated()[uid]) if p["title"] == title)


def test_the_chain_overview_links_to_runbooks_and_the_status_page() -> None:
    verdict = _panel("autoglm-chain", "Verdict")
    assert {link["url"] for link in verdict["links"]} == {config.RUNBOOK_BASE}
    assert [link["url"] for link in verdict["fieldConfig"]["defaults"]["links"]] == [config.STATUS_PAGE_URL]
    alerts = _panel("autoglm-chain", "Firing alerts")
    (data_link,) = alerts["fieldConfig"]["defaults"]["links"]
    assert data_link["url"] == config.RUNBOOK_BASE + "#${__data.fields.alertname}"
    # every runbook section answers to its alert's name as it is (the table cannot lower-case it)
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    for name in {alert.name for alert in mixin_alerts.all_alerts()}:
        assert f'<a id="{name}"></a>' in runbooks, name
    # a link panel of the chain opens the runbook of the alert that watches its link
    process_up = _panel("autoglm-chain", "Process up")
    assert process_up["links"][0]["url"].endswith("#autoglmprocessmissing")


def test_the_chain_overview_says_how_long_the_verdict_held_and_marks_changes() -> None:
    held = _panel("autoglm-chain", "Verdict held for")
    assert held["fieldConfig"]["defaults"]["unit"] == "s"
    assert "time() - autoglm_diagnosis_verdict_since_timestamp_seconds" in held["targets"][0]["expr"]
    annotations = {a["name"]: a for a in generated()["autoglm-chain"]["annotations"]["list"] if "expr" in a}
    assert set(annotations) == {"Verdict changes", "Process starts"}
    assert all(a["useValueForTime"] and "* 1000" in a["expr"] for a in annotations.values())


def test_a_host_without_gpu_is_neutral_and_http_status_is_coloured() -> None:
    for uid in ("autoglm-chain", "autoglm-gpu"):
        mapping = _panel(uid, "GPU available")["fieldConfig"]["defaults"]["mappings"][0]["options"]
        assert mapping["0"]["color"] not in {"red", "orange", "yellow"}, uid
    steps = _panel("autoglm-chain", "Last HTTP status")["fieldConfig"]["defaults"]["thresholds"]["steps"]
    colours = {step["value"]: step["color"] for step in steps}
    assert colours[None] == "red" and colours[200] == "green" and colours[500] == "red"


def test_latency_percentiles_of_the_probes_and_of_vllm() -> None:
    row = [
        p
        for p in panels(generated()["autoglm-chain"])
        if "percentiles" in p["title"] or p["title"].startswith("Engine ")
    ]
    exprs = " ".join(t["expr"] for p in row for t in p["targets"])
    for histogram in (
        "autoglm_probe_request_duration_seconds",
        "autoglm_probe_first_token_seconds",
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
    ):
        for q in ("0.5", "0.95", "0.99"):
            assert f"histogram_quantile({q}, sum by (le, " in exprs and f"{histogram}_bucket" in exprs, (
                histogram
            )


def test_units_say_cores_and_tokens() -> None:
    assert _panel("autoglm-process", "CPU by mode")["fieldConfig"]["defaults"]["unit"] == "suffix:cores"
    assert _panel("autoglm-chain", "CPU busy")["fieldConfig"]["defaults"]["unit"] == "suffix:cores"
    assert _panel("autoglm-dependencies", "Token rate")["fieldConfig"]["defaults"]["unit"] == "count:tokens/s"


def test_each_link_panel_is_built_once() -> None:
    """The panels two dashboards share (Redis up, Engine up, GPU available) come from one function."""
    source = "".join(path.read_text() for path in (REPO / "mixin" / "dashboards").glob("*.py"))
    for title in ("Redis up", "Engine up", "GPU available"):
        assert source.count(f'"{title}"') == 1, title


def test_every_panel_has_a_unit_a_description_and_the_datasource_variable() -> None:
    for board in generated().values():
        for panel in panels(board):
            where = f"{board['uid']}/{panel['title']}"
            assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, where
            description = panel["description"]
            assert description.endswith(".") and ". " not in description, f"{where}: one sentence"
            assert panel["datasource"] == DATASOURCE == {"type": "prometheus", "uid": "${datasource}"}, where
            assert panel["targets"], where
            assert all(target["datasource"] == DATASOURCE for target in panel["targets"]), where


def test_panels_with_value_mappings_show_what_0_and_1_mean() -> None:
    mapped = 0
    for board in generated().values():
        for panel in panels(board):
            defaults = panel["fieldConfig"]["defaults"]
            for mapping in defaults["mappings"]:
                mapped += 1
                assert defaults["unit"] == "none", panel["title"]
                assert all(option["text"] and option["color"] for option in mapping["options"].values())
    assert mapped >= 20


def test_panels_are_laid_out_in_24_columns_without_overlap() -> None:
    for board in generated().values():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), board["uid"]
        cells: dict[tuple[int, int], str] = {}
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= GRID_WIDTH, panel["title"]
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = panel["title"]
        assert board["panels"][0]["type"] == "row"


def test_the_variables_every_query_uses_are_defined_and_matched_as_regexes() -> None:
    for board in generated().values():
        variables = {var["name"] for var in board["templating"]["list"]}
        assert {"datasource", "instance"} <= variables
        instance = next(var for var in board["templating"]["list"] if var["name"] == "instance")
        assert instance["definition"] == "label_values(autoglm_exporter_build_info, instance)"
        assert instance["multi"] and instance["includeAll"] and instance["allValue"] == ".*"
        for expr in expressions(board):
            used = {a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", expr)}
            assert used - BUILTIN_VARIABLES <= variables, f"{board['uid']}: {expr}"
            for op, value in re.findall(r'\w+\s*(=~|!~|!=|=)\s*"([^"]*)"', expr):
                assert "$" not in value or op == "=~", f"{board['uid']}: {expr}"


def test_every_metric_in_every_query_exists() -> None:
    known = documented_metrics() | {name for name, _ in RECORDING_RULES} | SCRAPE_METRICS | CONTRACT_METRICS
    known |= engine_metrics()
    assert "vllm:time_to_first_token_seconds_bucket" in known
    assert "autoglm_process_up" in known and "autoglm_trace_stage_duration_seconds_bucket" in known
    used: set[str] = set()
    for board in generated().values():
        for expr in expressions(board):
            names = metric_names(expr)
            assert names, f"{board['uid']}: no metric in {expr}"
            assert names <= known, f"{board['uid']}: unknown {names - known} in {expr}"
            used |= names
    assert len(used) > 60


def test_the_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, stage) (rate(a_bucket{x=~"$x", y="b c"}[5m])))'
        ' / on (instance, job) group_left (layer) b_info{z!="q"} or label_replace(c, "d", "e", "", "")'
        " - 1e-9 * time()"
    )
    assert metric_names(expr) == {"a_bucket", "b_info", "c"}
    assert metric_names("instance_service:autoglm_gpu_utilization_ratio:avg") == {
        "instance_service:autoglm_gpu_utilization_ratio:avg"
    }


def test_queries_lists_every_target_and_variable() -> None:
    listed = dashboards.queries()
    assert len({name for name, _ in listed}) > 70
    assert sorted(expr for _, expr in listed) == sorted(
        expr for board in generated().values() for expr in expressions(board)
    )
    assert {name.split("/", 1)[0] for name, _ in listed} == UIDS
    assert ("autoglm-gpu/$gpu", 'autoglm_gpu_info{instance=~"$instance"}') in listed


def test_concrete_replaces_every_grafana_variable() -> None:
    assert concrete('rate(x{a=~"$instance", b=~"${service}", c=~"${gpu:regex}"}[$__rate_interval])') == (
        'rate(x{a=~".*", b=~".*", c=~".*"}[1m])'
    )
    assert concrete("increase(x[$__range]) / $__interval") == "increase(x[1h]) / 1m"
    for name, expr in dashboards.queries():
        plain = concrete(expr)
        assert "$" not in plain, name
        assert balanced(plain), name
    assert not balanced('sum(rate(x{a="("}[1m])')


def test_every_query_parses_in_promtool(tmp_path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make deps` (Debian package prometheus)"
    rules = [
        {"record": f"dashboard:query:{i}", "expr": concrete(expr)}
        for i, (_, expr) in enumerate(dashboards.queries())
    ]
    good = tmp_path / "queries.yml"
    good.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    run = subprocess.run([promtool, "check", "rules", str(good)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    # the check does read the expressions: a broken one fails it
    bad = tmp_path / "bad.yml"
    bad.write_text(
        yaml.safe_dump({"groups": [{"name": "bad", "rules": [{"record": "r:x", "expr": "sum by (x (up)"}]}]})
    )
    assert (
        subprocess.run([promtool, "check", "rules", str(bad)], capture_output=True, timeout=60).returncode
        != 0
    )


def test_threshold_lines_show_the_config_values() -> None:
    boards = generated()
    shown = {
        (uid, panel["title"]): threshold_values(panel)
        for uid, board in boards.items()
        for panel in panels(board)
    }
    assert {key for key, values in shown.items() if values} == set(THRESHOLD_PANELS) | set(CLASS_PANELS)
    for key, name in THRESHOLD_PANELS.items():
        assert shown[key] == [config.THRESHOLDS[name]], key
    for key, steps in CLASS_PANELS.items():
        assert shown[key] == steps, key
    timeseries = [
        p for b in boards.values() for p in panels(b) if p["type"] == "timeseries" and threshold_values(p)
    ]
    assert all(
        p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line" for p in timeseries
    )


def test_changing_a_threshold_in_the_config_moves_its_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    sentinels = {name: 1000.0 + i + 0.5 for i, name in enumerate(config.THRESHOLDS)}
    for name, value in sentinels.items():
        monkeypatch.setitem(config.THRESHOLDS, name, value)
    boards = generated()
    for (uid, title), name in THRESHOLD_PANELS.items():
        panel = next(p for p in panels(boards[uid]) if p["title"] == title)
        assert threshold_values(panel) == [sentinels[name]], (uid, title)
    # and no panel keeps a number of its own
    for uid, board in boards.items():
        for panel in panels(board):
            if (uid, panel["title"]) not in CLASS_PANELS:
                assert set(threshold_values(panel)) <= set(sentinels.values()), panel["title"]
