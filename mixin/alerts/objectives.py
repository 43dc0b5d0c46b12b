"""The autoglm.slo group: multiwindow burn-rate alerts, one per objective and pair of windows
(config.OBJECTIVES, config.BURN_WINDOWS), reading the ratios rules.slo_rules records."""

from __future__ import annotations

from .. import config
from ..config import FOR, Objective, duration
from ..rules import slo_rule_name
from .alert import Alert


def _burn_alert(objective: Objective, pair: config.BurnWindows) -> Alert:
    long_rule, short_rule = slo_rule_name(objective, pair.long), slo_rule_name(objective, pair.short)
    factor = f"{pair.burn_rate * objective.budget:g}"
    long, short = duration(pair.long), duration(pair.short)
    budget_share = pair.burn_rate * pair.long / config.SLO_PERIOD
    threshold = None if objective.threshold is None else config.latency_bucket(objective.threshold)
    bad = objective.description.format(threshold=threshold)
    return Alert(
        objective.alert,
        pair.severity,
        f"{long_rule} > {factor} and {short_rule} > {factor}",
        "{{ $labels.service }} burns its error budget " + f"{pair.burn_rate:g}" + "x too fast (" + long + ")",
        "{{ $value | humanizePercentage }} of the "
        + bad
        + " over the last "
        + long
        + " (and still over the last "
        + short
        + "), against an objective of "
        + f"{objective.target:.1%}"
        + ": at this rate the 30-day error budget is gone in "
        + f"{config.SLO_PERIOD / 86400 / pair.burn_rate:.3g} days ({budget_share:.0%} of it in this window).",
        FOR["slo"] if pair.severity == "critical" else FOR["ticket"],
        "slo",
        {"long": long, "short": short},
    )


def slo() -> list[Alert]:
    return [_burn_alert(objective, pair) for objective in config.OBJECTIVES for pair in config.BURN_WINDOWS]
