"""The autoglm.paging group: the alerting pipeline (Prometheus' rules, Alertmanager's
notifications) watching itself."""

from __future__ import annotations

from .. import config
from ..config import duration
from .alert import COUNT, Alert


def paging_path() -> list[Alert]:
    """The alerting pipeline watching itself."""
    W = duration(config.RATE_WINDOW)
    return [
        Alert(
            "AutoglmWatchdog",
            "info",
            "vector(1)",
            "The alerting pipeline works",
            "Always firing, routed to its own receiver: a dead man's switch outside this stack (a "
            "heartbeat service) must page when these notifications stop, because then Prometheus, "
            "Alertmanager or the path between them is down and no other alert can arrive.",
        ),
        Alert(
            "AutoglmRuleEvaluationFailing",
            "critical",
            f"increase(prometheus_rule_evaluation_failures_total[{W}]) > 0",
            "Prometheus fails to evaluate rules of group {{ $labels.rule_group }}",
            "Prometheus {{ $labels.instance }} failed " + COUNT + " evaluations of rule group "
            "{{ $labels.rule_group }} in the last " + W + ": the alerts of that group cannot fire. Its log "
            "and /rules name the error (a query that times out, duplicate series after a join).",
        ),
        Alert(
            "AutoglmAlertmanagerNotificationsFailing",
            "warning",
            f"rate(alertmanager_notifications_failed_total[{W}]) > 0",
            "Alertmanager fails to send notifications through {{ $labels.integration }}",
            "Alertmanager {{ $labels.instance }} failed to deliver notifications through "
            "{{ $labels.integration }} in the last " + W + ": pages sent that way do not arrive. Its log "
            "names the error (an expired key, an unreachable URL). A warning, so that it travels "
            "through the ticket receiver, not the failing page receiver.",
        ),
    ]
