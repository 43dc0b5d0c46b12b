"""How the alerts of one incident relate: a firing cause holds its symptoms back, one replica of
several down waits while others serve, and a cause's page names the other causes firing."""

from __future__ import annotations

from dataclasses import replace

from ..rules import serving_elsewhere
from .alert import Alert, Role


def _names(groups: dict[str, list[Alert]], *roles: Role) -> str:
    return "|".join(sorted({a.name for alerts in groups.values() for a in alerts if a.role in roles}))


def gated(groups: dict[str, list[Alert]]) -> dict[str, list[Alert]]:
    """Symptoms wait while a cause of the same service (or a broken GPU of the instance) fires: the
    cause names the incident, and Alertmanager's inhibition (mixin/alertmanager.py) says the same for
    every Prometheus. A cause fires first: its `for:` is shorter than a symptom's.

    Only a firing cause holds anything back, never a pending one. A gate inside a symptom's
    expression resets the symptom's `for:` each time it closes, so a cause that keeps going pending
    without firing (a slow engine seen "stalled" for one reading every few) would hide the page for
    ever; a cause that will fire does so within its own `for:`, and inhibits the symptom in
    Alertmanager if that was still waiting out its group_wait.

    Connections refused or timing out (role network) wait the same way while a cause of the link
    fires: after the process is back its failures are still in the probe's window, and must not page
    once the cause that inhibited them in Alertmanager has resolved.

    A burn-rate alert waits while a cause of its service fired within its short window: the failures
    the cause explains stay in that window after the cause is fixed, and would otherwise page a
    second time for an incident already over. Failures that go on once the window has passed are not
    the cause's, and page."""
    causes = f'ALERTS{{alertname=~"{_names(groups, "cause", "network")}", alertstate="firing", service!=""}}'
    nodes = f'ALERTS{{alertname=~"{_names(groups, "node")}", alertstate="firing"}}'
    links = f'ALERTS{{alertname=~"{_names(groups, "cause")}", alertstate="firing", service!=""}}'

    def gate(alert: Alert) -> str:
        if alert.role == "symptom":
            return f" unless on (instance, service) {causes} unless on (instance) {nodes}"
        if alert.role == "network":  # refused while the process is gone: that cause's, even as it ends
            return f" unless on (instance, service) {links}"
        return f" unless on (service) max_over_time({causes}[{alert.labels['short']}])"

    gated_roles: tuple[Role, ...] = ("symptom", "slo", "network")
    return {
        name: [replace(a, expr=f"({a.expr}){gate(a)}") if a.role in gated_roles else a for a in alerts]
        for name, alerts in groups.items()
    }


# The roles of the alerts about one replica: they page only when no other replica of the service serves.
REPLICA_ROLES: tuple[Role, ...] = ("cause", "network", "symptom")


def fleet_gated(groups: dict[str, list[Alert]]) -> dict[str, list[Alert]]:
    """One replica of several down is reduced capacity, not a page: a critical alert about one
    replica (a cause, a refused connection, a symptom) waits while another replica of its service
    serves. AutoglmReplicaDown says which replica is down; the burn-rate alerts page when the
    service's objectives burn; when no replica serves (every one dead, a shared Redis down) each
    replica's alert fires, one page per service. On a single node nothing is served elsewhere, and
    every alert pages as before. A GPU or driver fault (role node) pages whatever the others do."""

    def scoped(alert: Alert) -> bool:
        return alert.severity == "critical" and alert.role in REPLICA_ROLES

    gate = f" unless on (instance, service) ({serving_elsewhere()} > 0)"
    return {
        name: [replace(a, expr=f"({a.expr}){gate}") if scoped(a) else a for a in alerts]
        for name, alerts in groups.items()
    }


# The roles of the alerts that name a cause: each pages in a group of its own (mixin/alertmanager.py).
CAUSE_ROLES: tuple[Role, ...] = ("cause", "network", "node")


def naming_each_other(groups: dict[str, list[Alert]]) -> dict[str, list[Alert]]:
    """A cause's description names the other causes of its service firing now: each cause pages in
    its own Alertmanager group (so a new incident never waits for, or carries, the last one's
    group), and the page of a second cause shows both. (Alerts of the same name share its group.)"""
    causes = _names(groups, *CAUSE_ROLES)
    listed = (
        "{{ range $i, $a := . }}{{ if $i }}, {{ end }}"
        "{{ $a.Labels.alertname }} on {{ $a.Labels.instance }}{{ end }}"
    )

    def named(alert: Alert) -> Alert:
        selector = f'alertstate="firing", service=%q, alertname=~"{causes}", alertname!="{alert.name}"'
        others = f'printf `ALERTS{{{selector}}}` $labels.service | query | sortByLabel "alertname"'
        also = (
            f"{{{{ with {others} }}}} Also broken for {{{{ $labels.service }}}} now: {listed}.{{{{ end }}}}"
        )
        return replace(alert, description=alert.description + also)

    return {
        name: [named(a) if a.role in CAUSE_ROLES and a.severity == "critical" else a for a in alerts]
        for name, alerts in groups.items()
    }
