"""The Grafana dashboards, generated into dashboards/*.json: one module each, beside panels.py
(what they share) and ../grafana.py (the typed builders of Grafana's JSON model).

Chain overview (the verdict and each link) → Service process → Queue and dependencies → GPU →
Exporter health. Every threshold line comes from config.THRESHOLDS, read when the dashboards are
built, so `make mixin` after changing a number moves the lines."""

from __future__ import annotations

import json

from ..grafana import Dashboard
from . import chain, dependencies, exporter, fleet, gpu, process

# In the order of the drop-down of dashboards: from the verdict down the chain, then the fleet.
MODULES = (chain, process, dependencies, gpu, exporter, fleet)


def dashboards() -> list[Dashboard]:
    return [module.dashboard() for module in MODULES]


def render(dashboard: Dashboard) -> str:
    return json.dumps(dashboard.to_json(), indent=2, sort_keys=True) + "\n"


def generated_files() -> dict[str, str]:
    """{repo-relative path: content} of every dashboard."""
    return {f"dashboards/{d.uid}.json": render(d) for d in dashboards()}


def queries() -> list[tuple[str, str]]:
    """("<uid>/<panel title>", expr) for every target and ("<uid>/$<name>", selector) for every query
    variable (the series selector inside its label_values()), raw: pass each through
    grafana.concrete() before sending it to a plain Prometheus."""
    return [query for d in dashboards() for query in d.queries()]
