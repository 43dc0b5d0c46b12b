"""Small typed builders for Grafana's dashboard JSON model (schemaVersion 39).

A dashboard is a list of rows; a row is a list of panels laid out left to right, wrapping at 24
columns, so positions never overlap and ids are unique. Every query goes to the Prometheus data
source picked by the `datasource` variable.

Not Grafana's typed SDK (grafana-foundation-sdk, checked at 1769699520!11.4.0 and "next"): its
dashboard schema has no fields for a Prometheus annotation's `useValueForTime`, `titleFormat`,
`textFormat`, `tagKeys` or `step` (without useValueForTime a verdict change is a region as long as
its series, not a mark where it happened), nor for a query variable's `definition`; the tests in
tests/test_dashboards.py check both."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

SCHEMA_VERSION = 39
GRID_WIDTH = 24
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}

# Units (fieldConfig.defaults.unit) the dashboards use.
SECONDS = "s"
BYTES = "bytes"
RATIO = "percentunit"
CELSIUS = "celsius"
WATTS = "watt"
JOULES = "joule"
HERTZ = "hertz"
PER_SECOND = "cps"  # counts per second
OPS = "ops"  # operations (probes, runs) per second
CORES = "suffix:cores"  # CPU seconds per second: how many cores are busy
TOKENS_PER_SECOND = "count:tokens/s"  # scaled like a count (1.2K tokens/s)
SHORT = "short"
NONE = "none"  # booleans and text: value mappings say what the number means

Json = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False

    def to_json(self, ref_id: str) -> Json:
        return {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": self.expr,
            "format": "table" if self.table else "time_series",
            "instant": self.instant or self.table,
            "legendFormat": self.legend or "__auto",
            "range": not (self.instant or self.table),
            "refId": ref_id,
        }


@dataclass(frozen=True)
class Step:
    """A threshold: from `value` on, the panel shows `color` (and a line on time series)."""

    value: float
    color: str = "red"


@dataclass(frozen=True)
class State:
    """A value mapping: the number `value` is shown as `text` in `color`."""

    value: int
    text: str
    color: str


def up_down(down: str = "down", up: str = "up") -> tuple[State, ...]:
    """0 is bad (red), 1 is good (green)."""
    return (State(0, down, "red"), State(1, up, "green"))


def flag(off: str = "no", on: str = "yes", on_color: str = "red") -> tuple[State, ...]:
    """0 is fine (green), 1 is a problem (`on_color`)."""
    return (State(0, off, "green"), State(1, on, on_color))


def mappings_json(mapped: tuple[State, ...]) -> list[Json]:
    if not mapped:
        return []
    options = {str(s.value): {"color": s.color, "index": i, "text": s.text} for i, s in enumerate(mapped)}
    return [{"options": options, "type": "value"}]


def thresholds_json(steps: tuple[Step, ...], base: str = "green") -> Json:
    ordered = sorted(steps, key=lambda step: step.value)
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}] + [{"color": s.color, "value": s.value} for s in ordered],
    }


@dataclass(frozen=True)
class Link:
    """A link from a panel (its corner menu) or from a value (a data link): `url` may use Grafana's
    variables, e.g. ${__field.labels.instance} for the series clicked."""

    title: str
    url: str

    def to_json(self) -> Json:
        return {"targetBlank": True, "title": self.title, "url": self.url}


@dataclass(frozen=True)
class Panel:
    """A panel of any kind; use timeseries(), stat(), state_timeline() or table() to make one."""

    kind: str
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str
    width: int = 12
    height: int = 8
    steps: tuple[Step, ...] = ()
    mapped: tuple[State, ...] = ()
    base_color: str = "green"
    defaults: Json = field(default_factory=dict)
    custom: Json = field(default_factory=dict)
    options: Json = field(default_factory=dict)
    transformations: tuple[Json, ...] = ()
    links: tuple[Link, ...] = ()  # the panel's own links
    data_links: tuple[Link, ...] = ()  # links from each value shown

    def with_links(self, links: tuple[Link, ...] = (), data_links: tuple[Link, ...] = ()) -> Panel:
        return replace(self, links=self.links + links, data_links=self.data_links + data_links)

    def to_json(self, panel_id: int, x: int, y: int) -> Json:
        defaults: Json = {
            "color": {"mode": "palette-classic" if self.kind == "timeseries" else "thresholds"},
            "custom": self.custom,
            "links": [link.to_json() for link in self.data_links],
            "mappings": mappings_json(self.mapped),
            "thresholds": thresholds_json(self.steps, self.base_color),
            "unit": self.unit,
            **self.defaults,
        }
        return {
            "datasource": DATASOURCE,
            "description": self.description,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "id": panel_id,
            "links": [link.to_json() for link in self.links],
            "options": self.options,
            "targets": [t.to_json(chr(ord("A") + i)) for i, t in enumerate(self.targets)],
            "title": self.title,
            "transformations": list(self.transformations),
            "type": self.kind,
        }


def _legend(show: bool = True) -> Json:
    return {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": show}


def _limits(low: float | None, high: float | None) -> Json:
    limits: Json = {}
    if low is not None:
        limits["min"] = low
    if high is not None:
        limits["max"] = high
    return limits


def timeseries(
    title: str,
    description: str,
    targets: tuple[Target, ...],
    unit: str,
    *,
    steps: tuple[Step, ...] = (),
    low: float | None = 0,
    high: float | None = None,
    stack: bool = False,
    bars: bool = False,
    axis_label: str = "",
    width: int = 12,
    height: int = 8,
) -> Panel:
    """Lines over time; each threshold step is drawn as a line."""
    custom: Json = {
        "axisLabel": axis_label,
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 80 if bars else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "line" if steps else "off"},
    }
    options = {"legend": _legend(), "tooltip": {"mode": "multi", "sort": "desc"}}
    return Panel(
        "timeseries", title, description, targets, unit, width, height, steps,
        defaults=_limits(low, high), custom=custom, options=options,
    )  # fmt: skip


def stat(
    title: str,
    description: str,
    targets: tuple[Target, ...],
    unit: str,
    *,
    mapped: tuple[State, ...] = (),
    steps: tuple[Step, ...] = (),
    text_mode: str = "auto",
    no_value: str = "",
    base_color: str = "green",
    width: int = 6,
    height: int = 5,
) -> Panel:
    """The value of each series now (instant queries: a series that ended earlier in the time range
    is not shown), coloured by its value mapping or threshold."""
    options = {
        "colorMode": "background",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showPercentChange": False,
        "textMode": text_mode,
        "wideLayout": True,
    }
    defaults: Json = {"noValue": no_value} if no_value else {}
    now = tuple(replace(target, instant=True) for target in targets)
    return Panel(
        "stat", title, description, now, unit, width, height, steps, mapped, base_color,
        defaults=defaults, options=options,
    )  # fmt: skip


def state_timeline(
    title: str,
    description: str,
    targets: tuple[Target, ...],
    *,
    mapped: tuple[State, ...],
    no_value: str = "",
    base_color: str = "text",
    width: int = 24,
    height: int = 6,
) -> Panel:
    """One row per series, coloured by what its value means over time."""
    options = {
        "alignValue": "left",
        "legend": _legend(show=False),
        "mergeValues": True,
        "rowHeight": 0.9,
        "showValue": "auto",
        "tooltip": {"mode": "single", "sort": "none"},
    }
    custom = {"fillOpacity": 80, "lineWidth": 0, "spanNulls": False}
    defaults: Json = {"noValue": no_value} if no_value else {}
    return Panel(
        "state-timeline", title, description, targets, NONE, width, height, (), mapped, base_color,
        defaults=defaults, custom=custom, options=options,
    )  # fmt: skip


def table(
    title: str,
    description: str,
    target: Target,
    *,
    hide: tuple[str, ...] = ("Time", "Value", "__name__", "job"),
    width: int = 24,
    height: int = 6,
) -> Panel:
    """The labels of the series a query returns now, one row each (for _info metrics)."""
    organize = {
        "id": "organize",
        "options": {"excludeByName": dict.fromkeys(hide, True), "indexByName": {}, "renameByName": {}},
    }
    options = {
        "cellHeight": "sm",
        "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
        "showHeader": True,
    }
    custom = {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False}
    table_target = Target(target.expr, target.legend, instant=True, table=True)
    return Panel(
        "table", title, description, (table_target,), NONE, width, height,
        custom=custom, options=options, transformations=(organize,),
    )  # fmt: skip


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Variable:
    """A query variable: the values of `label` on the series `selector` selects."""

    name: str
    label: str
    selector: str
    label_name: str
    multi: bool = True

    @property
    def definition(self) -> str:
        return f"label_values({self.selector}, {self.label_name})"

    def to_json(self) -> Json:
        return {
            "allValue": ".*",
            "current": {},
            "datasource": DATASOURCE,
            "definition": self.definition,
            "hide": 0,
            "includeAll": self.multi,
            "label": self.label,
            "multi": self.multi,
            "name": self.name,
            "options": [],
            "query": {
                "qryType": 1,
                "query": self.definition,
                "refId": "PrometheusVariableQueryEditor-VariableQuery",
            },
            "refresh": 2,
            "regex": "",
            "skipUrlSync": False,
            "sort": 1,
            "type": "query",
        }


def datasource_variable() -> Json:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
        "type": "datasource",
    }


def layout(rows: tuple[Row, ...]) -> list[Json]:
    """Rows top to bottom; a row's panels left to right, wrapping when the next would not fit."""
    panels: list[Json] = []
    y = 0
    for row in rows:
        panels.append(_row_json(row.title, len(panels) + 1, y))
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append(panel.to_json(len(panels) + 1, x, y))
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return panels


def _row_json(title: str, panel_id: int, y: int) -> Json:
    return {
        "collapsed": False,
        "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
        "id": panel_id,
        "panels": [],
        "title": title,
        "type": "row",
    }


@dataclass(frozen=True)
class Annotation:
    """Events drawn on every time series panel, from a query whose value is the event's time in
    milliseconds since the epoch (Grafana's "series value as timestamp")."""

    name: str
    expr: str
    title: str  # legend-style template: {{label}}
    text: str
    color: str
    tag_keys: tuple[str, ...] = ()

    def to_json(self) -> Json:
        return {
            "datasource": DATASOURCE,
            "enable": True,
            "expr": self.expr,
            "hide": False,
            "iconColor": self.color,
            "name": self.name,
            "step": "$__interval",
            "tagKeys": ",".join(self.tag_keys),
            "textFormat": self.text,
            "titleFormat": self.title,
            "useValueForTime": True,
        }


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    variables: tuple[Variable, ...]
    tags: tuple[str, ...] = ("autoglm",)
    annotations: tuple[Annotation, ...] = ()

    def to_json(self) -> Json:
        return {
            "annotations": {"list": [_builtin_annotations()] + [a.to_json() for a in self.annotations]},
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [_dashboards_link(self.tags)],
            "panels": layout(self.rows),
            "refresh": "10s",
            "schemaVersion": SCHEMA_VERSION,
            "tags": list(self.tags),
            "templating": {"list": [datasource_variable()] + [v.to_json() for v in self.variables]},
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }

    def queries(self) -> list[tuple[str, str]]:
        """(uid/panel title, expr) for every target, and (uid/$name, selector) for every variable."""
        found = [(f"{self.uid}/${v.name}", v.selector) for v in self.variables]
        found += [(f"{self.uid}/@{a.name}", a.expr) for a in self.annotations]
        for row in self.rows:
            found += [(f"{self.uid}/{p.title}", t.expr) for p in row.panels for t in p.targets]
        return found


def _builtin_annotations() -> Json:
    return {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


def _dashboards_link(tags: tuple[str, ...]) -> Json:
    """A drop-down of every dashboard with our tag, keeping the time range and the variables."""
    return {
        "asDropdown": True,
        "icon": "external link",
        "includeVars": True,
        "keepTime": True,
        "tags": list(tags),
        "targetBlank": False,
        "title": "AutoGLM dashboards",
        "tooltip": "",
        "type": "dashboards",
        "url": "",
    }


# Grafana's built-in variables and what a plain Prometheus query gets instead.
_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def concrete(expr: str) -> str:
    """The expression as a plain Prometheus accepts it: intervals become 1m, the range 1h, and every
    dashboard variable `.*` (so every matcher that uses one must be a regex match, `=~`)."""
    return _VARIABLE.sub(lambda m: _BUILTINS.get(m.group(1) or m.group(2), ".*"), expr)
