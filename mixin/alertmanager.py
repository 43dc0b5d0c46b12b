"""Alertmanager's routing and inhibition, generated from the alerts' names, roles and severities so
that neither can drift from the rules: deploy/alertmanager/alertmanager.yml for docker-compose and
deploy/kubernetes/alertmanagerconfig.yaml (an AlertmanagerConfig) for the Prometheus Operator.

One incident, one page:
- a critical cause is grouped by `service` and `alertname`: the same alert from every exporter
  that watches a shared Redis or engine is one notification, updated every 30 s as the incident
  goes on; a new incident is a new group (it pages after the initial wait and never carries the
  last incident's resolved alerts, which Prometheus re-sends for 15 minutes); a second cause pages
  in its own group, its description naming the causes already firing (mixin/alerts/incidents.py). The
  symptoms no cause explains are grouped by `service`; critical alerts without one (a node's GPU,
  the exporter down) by `instance`: one page per node;
- a cause silences the symptoms of the service it breaks (inhibit_rules), a process gone or not
  listening silences the refused connections it explains, a broken GPU every symptom of its
  instance, and AutoglmExporterDown everything else its instance says;
- every label an inhibition compares must be non-empty on the source (`=~".+"`), so an alert that
  lacks it (Alertmanager reads a missing label as "") is never silenced by one that lacks it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from . import alerts, config
from .alerts.incidents import CAUSE_ROLES
from .config import ROUTE_TIMING, SEVERITY, Timing, duration

ALERTMANAGER_FILE = "deploy/alertmanager/alertmanager.yml"
WEBHOOK_URL = "http://webhook:5001/"  # the demo's receiver in docker-compose (demo/webhook.py)
WATCHDOG = "AutoglmWatchdog"
EXPORTER_DOWN = "AutoglmExporterDown"
# The causes that explain a refused connection to a service's own port.
PROCESS_CAUSES = (
    "AutoglmProcessMissing",
    "AutoglmPortNotListening",
    "AutoglmPortTaken",
    "AutoglmThreadsBlocked",
)


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str

    def text(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'

    def crd(self) -> dict[str, str]:
        return {"name": self.name, "value": self.value, "matchType": self.op}


@dataclass(frozen=True)
class Route:
    receiver: str
    matchers: tuple[Matcher, ...]
    group_by: tuple[str, ...]
    timing: Timing


@dataclass(frozen=True)
class Inhibition:
    why: str
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    @property
    def guarded_source(self) -> tuple[Matcher, ...]:
        """The source matchers plus a non-empty value for every label compared."""
        return self.source + tuple(Matcher(label, "=~", ".+") for label in self.equal)


def _names(role: str) -> list[str]:
    return sorted({a.name for a in alerts.all_alerts() if a.role == role})


def _cause_names() -> list[str]:
    return sorted({a.name for a in alerts.all_alerts() if a.role in CAUSE_ROLES})


def _any_of(names: list[str] | tuple[str, ...]) -> Matcher:
    return Matcher("alertname", "=~", "|".join(sorted(set(names))))


def severity(key: str) -> Matcher:
    return Matcher("severity", "=", SEVERITY[key])


HAS_SERVICE = Matcher("service", "=~", ".+")


def routes() -> list[Route]:
    t = ROUTE_TIMING
    return [
        Route("watchdog", (Matcher("alertname", "=", WATCHDOG),), ("alertname",), t["watchdog"]),
        # a cause: one group per cause and service (every node that sees a shared Redis down is in
        # it); a second cause pages in its own, naming the first (mixin/alerts/incidents.py)
        Route(
            "page",
            (severity("critical"), HAS_SERVICE, _any_of(_cause_names())),
            ("service", "alertname"),
            t["critical"],
        ),
        # the symptoms no cause explains, together per service
        Route("page", (severity("critical"), HAS_SERVICE), ("service",), t["critical"]),
        # a node's faults (GPU lost, its XID, the exporter gone): one page for the node
        Route("page", (severity("critical"),), ("instance",), t["critical"]),
        Route("ticket", (severity("warning"), HAS_SERVICE), ("alertname", "service"), t["warning"]),
        Route("ticket", (severity("warning"),), ("alertname", "instance"), t["warning"]),
        Route("info", (severity("info"),), ("alertname",), t["info"]),
    ]


# Unmatched alerts (no severity: someone else's rule) land here.
DEFAULT_ROUTE = Route("ticket", (), ("alertname", "instance"), ROUTE_TIMING["default"])
RECEIVERS = ("page", "ticket", "info", "watchdog")


def inhibitions() -> list[Inhibition]:
    causes = _names("cause") + _names("network")
    symptoms, slo, node = _names("symptom"), _names("slo"), _names("node")
    return [
        Inhibition(
            "The exporter is down: whatever else its instance says is stale or a consequence.",
            (Matcher("alertname", "=", EXPORTER_DOWN),),
            (Matcher("alertname", "!=", EXPORTER_DOWN),),
            ("instance",),
        ),
        Inhibition(
            "A named cause silences what users see of the service it breaks, on the same instance.",
            (_any_of(causes),),
            (_any_of(symptoms),),
            ("instance", "service"),
        ),
        Inhibition(
            "A named cause silences the error budget burn of the service it breaks.",
            (_any_of(causes),),
            (_any_of(slo),),
            ("service",),
        ),
        Inhibition(
            "A process gone, not listening, displaced or deadlocked explains refused connections to it.",
            (_any_of(PROCESS_CAUSES),),
            (Matcher("alertname", "=", "AutoglmServiceUnreachable"),),
            ("instance", "service", "dependency"),
        ),
        Inhibition(
            "A broken GPU or driver silences every symptom of its instance.",
            (_any_of(node),),
            (_any_of(symptoms),),
            ("instance",),
        ),
    ]


def _timing(timing: Timing) -> dict[str, str]:
    return {
        "group_wait": duration(timing.group_wait),
        "group_interval": duration(timing.group_interval),
        "repeat_interval": duration(timing.repeat_interval),
    }


def routing(webhook_url: str = WEBHOOK_URL) -> dict:
    """Alertmanager's configuration: every receiver a webhook at `webhook_url`."""
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": DEFAULT_ROUTE.receiver,
            "group_by": list(DEFAULT_ROUTE.group_by),
            **_timing(DEFAULT_ROUTE.timing),
            "routes": [
                {
                    "receiver": route.receiver,
                    "matchers": [m.text() for m in route.matchers],
                    "group_by": list(route.group_by),
                    **_timing(route.timing),
                }
                for route in routes()
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": [m.text() for m in rule.guarded_source],
                "target_matchers": [m.text() for m in rule.target],
                "equal": list(rule.equal),
            }
            for rule in inhibitions()
        ],
        "receivers": [
            {"name": name, "webhook_configs": [{"url": webhook_url, "send_resolved": name != "watchdog"}]}
            for name in RECEIVERS
        ],
    }


HEADER = """\
# Generated by `python -m mixin` (make mixin) from mixin/alertmanager.py: edit the code there.
# Alertmanager for docker-compose (mounted at /etc/alertmanager/alertmanager.yml).
#
# Severities: critical (page), warning (ticket), info. Critical alerts about the inference chain
# carry `service`, the user-facing service they break: a cause is grouped by service and alertname
# (one notification however many nodes see it, updated every 30 s; a new incident is a new page),
# the symptoms no cause explains by service, a node's own critical alerts by instance. A cause (a
# process gone, Redis or the engine down, threads deadlocked...) inhibits the symptoms of that
# service (nobody answers, the verdict, the error budget burn);
# AutoglmExporterDown inhibits everything else from its instance. AutoglmWatchdog always fires:
# point the watchdog receiver at a dead man's switch (a heartbeat service that pages when the
# notifications stop).
#
# Out of the box all receivers post to the demo's webhook receiver (`docker compose --profile demo
# up` starts it as service `webhook`; it prints each notification). For real use, uncomment the
# PagerDuty and Slack receivers below. Secrets are never written here: they are read from files
# (*_file), mounted from a directory outside the repository, e.g. in docker-compose.yml:
#   - ./secrets/alertmanager:/etc/alertmanager/secrets:ro
# Check the file with: amtool check-config deploy/alertmanager/alertmanager.yml
"""

# Commented integrations appended to receivers (valid once uncommented: a test checks).
_EXAMPLES = {
    "page": """\
    # pagerduty_configs:
    #   - routing_key_file: /etc/alertmanager/secrets/pagerduty-routing-key  # Events API v2 key
    #     send_resolved: true
    #     severity: critical
    #     description: '{{ .CommonLabels.service }}: {{ (index .Alerts 0).Annotations.summary }}'
    #     details:
    #       runbook: '{{ (index .Alerts 0).Annotations.runbook_url }}'
    #       description: '{{ (index .Alerts 0).Annotations.description }}'
""",
    "ticket": """\
    # slack_configs:
    #   - api_url_file: /etc/alertmanager/secrets/slack-webhook-url  # an incoming-webhook URL
    #     channel: '#autoglm-alerts'
    #     send_resolved: true
    #     title: '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} {{ .CommonLabels.service }}'
    #     text: "{{ range .Alerts }}{{ .Annotations.summary }}: {{ .Annotations.runbook_url }}\\n{{ end }}"
""",
}


def _receivers_text(webhook_url: str) -> str:
    lines = ["receivers:"]
    for name in RECEIVERS:
        send_resolved = "false" if name == "watchdog" else "true"
        lines += [
            f"  - name: {name}",
            "    webhook_configs:",
            f"      - url: {webhook_url}",
            f"        send_resolved: {send_resolved}",
        ]
        if name in _EXAMPLES:
            lines.append(_EXAMPLES[name].rstrip("\n"))
    return "\n".join(lines) + "\n"


def alertmanager_yml(webhook_url: str = WEBHOOK_URL) -> str:
    """The file as shipped: the routing, each inhibit rule under a comment saying why, and the
    receivers with their commented PagerDuty and Slack examples."""
    document = routing(webhook_url)
    head = {"global": document["global"], "route": document["route"]}
    lines = ["inhibit_rules:"]
    for rule, entry in zip(inhibitions(), document["inhibit_rules"], strict=True):
        lines.append(f"  # {rule.why}")
        lines += ["  " + line for line in yaml.safe_dump([entry], sort_keys=False, width=1000).splitlines()]
    body = yaml.safe_dump(head, sort_keys=False, width=1000)
    return HEADER + "\n" + body + "\n" + "\n".join(lines) + "\n\n" + _receivers_text(webhook_url)


def generated_files() -> dict[str, str]:
    return {ALERTMANAGER_FILE: alertmanager_yml()}


def alertmanager_config_crd(namespace: str, labels: dict[str, str]) -> dict:
    """The same routing and inhibition as an AlertmanagerConfig (monitoring.coreos.com/v1alpha1)."""

    def timing(value: Timing) -> dict[str, str]:
        return {
            "groupWait": duration(value.group_wait),
            "groupInterval": duration(value.group_interval),
            "repeatInterval": duration(value.repeat_interval),
        }

    return {
        "apiVersion": "monitoring.coreos.com/v1alpha1",
        "kind": "AlertmanagerConfig",
        "metadata": {"name": config.EXPORTER_JOB, "namespace": namespace, "labels": labels},
        "spec": {
            "route": {
                "receiver": DEFAULT_ROUTE.receiver,
                "groupBy": list(DEFAULT_ROUTE.group_by),
                **timing(DEFAULT_ROUTE.timing),
                "matchers": [Matcher("alertname", "=~", "Autoglm.+").crd()],
                "routes": [
                    {
                        "receiver": route.receiver,
                        "groupBy": list(route.group_by),
                        **timing(route.timing),
                        "matchers": [m.crd() for m in route.matchers],
                    }
                    for route in routes()
                ],
            },
            "receivers": [{"name": name} for name in RECEIVERS],
            "inhibitRules": [
                {
                    "sourceMatch": [m.crd() for m in rule.guarded_source],
                    "targetMatch": [m.crd() for m in rule.target],
                    "equal": list(rule.equal),
                }
                for rule in inhibitions()
            ],
        },
    }
