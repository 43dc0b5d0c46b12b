"""One alerting rule as code: its name, severity, expression, text, `for:` and role in an incident,
and its rule as the rule files hold it, with the runbook link every alert carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import RUNBOOK_BASE, SEVERITY, duration

# What an alert is in an incident (see the package's docstring); "" for alerts that gate nothing
# and wait for nothing. A Literal, so that mypy rejects a misspelt role.
Role = Literal["cause", "node", "network", "symptom", "slo", ""]

# increase() extrapolates (1 event can read 1.05): counts are printed as whole numbers.
COUNT = '{{ printf "%.0f" $value }}'


def runbook_url(alert: str) -> str:
    """The alert's section of docs/runbooks.md (GitHub's anchor of its heading)."""
    return f"{RUNBOOK_BASE}#{alert.lower()}"


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str  # a key of config.SEVERITY
    expr: str
    summary: str
    description: str
    for_: float | None = None  # seconds; None: fire on the first evaluation that matches
    role: Role = ""
    labels: dict[str, str] = field(default_factory=dict)  # static labels besides severity
    # seconds the alert stays firing after its expression stops matching (a scrape gap, an exporter
    # restart): None for alerts that read no exporter series
    keep_firing: float | None = None

    def rule(self) -> dict:
        rule: dict = {"alert": self.name, "expr": self.expr}
        if self.for_:
            rule["for"] = duration(self.for_)
        if self.keep_firing:
            rule["keep_firing_for"] = duration(self.keep_firing)
        rule["labels"] = {"severity": SEVERITY[self.severity], **self.labels}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": runbook_url(self.name),
        }
        return rule
