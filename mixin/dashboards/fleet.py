"""AutoGLM / Fleet: every replica (a service on a node) and every node, worst first.

One exporter per node gives each series its `instance`; a service's replicas are its series on
several instances. The tables rank by one severity number, so the rows that need someone come
first, and each row links to its node's status page (the exporter's `/`), where the evidence is."""

from __future__ import annotations

from dataclasses import replace

from .. import config
from ..grafana import NONE, Dashboard, Link, Panel, Row, State, Target, stat, table
from .panels import INST, INSTANCE_VAR, SERVICE_VAR, SVC

# What a row's severity number means; the tables sort by it, highest first.
HEALTHY, DEGRADED, HURT, BLIND = 0, 1, 2, 3
SEVERITY_STATES = (
    State(HEALTHY, "healthy", "green"),
    State(DEGRADED, "degraded: users still served", "orange"),
    State(HURT, "users hurt / GPU lost", "red"),
    State(BLIND, "exporter not scraped", "purple"),
)

# A replica's severity: its verdict (1: a link is broken) plus users hurt (1 more).
_BROKEN = f"max by (instance, service) (autoglm_diagnosis_verdict{{{SVC}}})"
_HURT = f"max by (instance, service) (autoglm_diagnosis_users_hurt{{{SVC}}})"
REPLICA_SEVERITY = f"{_BROKEN} + on (instance, service) {_HURT}"

# Each replica with the layer and reason of its verdict ("healthy" when every link answers).
REPLICAS = (
    f"sort_desc((autoglm_diagnosis_verdict{{{SVC}}} == 1) + on (instance, service) group_left () {_HURT}"
    f' or label_replace(label_replace({_BROKEN} == 0, "layer", "healthy", "", ""),'
    ' "reason", "every link answers", "", ""))'
)

# How many replicas have each verdict, the healthy ones as their own (layer "healthy") series: one
# query, so the panel has data on a fleet where every replica is healthy (no verdict is 1), and says
# 0 healthy, not "no data", when none is.
VERDICT_COUNTS = (
    f"count by (layer, reason) (autoglm_diagnosis_verdict{{{SVC}}} == 1)"
    f' or label_replace(label_replace(count(({_BROKEN}) == 0) or vector(0), "layer", "healthy", "", ""),'
    ' "reason", "every link answers", "", "")'
)

# A node's severity: its worst replica, a lost GPU (users of it are hurt), an exporter that cannot
# be scraped (everything about the node is unknown).
_EXPORTER_UP = f"up{{{config.EXPORTER_SELECTOR}, {INST}}}"
NODE_SEVERITY = (
    "sort_desc(max by (instance) ("
    f'label_replace({REPLICA_SEVERITY}, "why", "replica", "", "")'
    f' or label_replace({HURT} * max by (instance) (autoglm_gpu_lost{{{INST}}}), "why", "gpu", "", "")'
    f' or label_replace({BLIND} * (1 - {_EXPORTER_UP}), "why", "exporter", "", "")))'
)

STATUS_PAGE = Link("Status page of ${__data.fields.instance}", "http://${__data.fields.instance}/")


def _ranked(panel: Panel) -> Panel:
    """The table sorted by severity, highest first, the number shown as its meaning."""
    options = {**panel.options, "sortBy": [{"desc": True, "displayName": "Value"}]}
    custom = {**panel.custom, "cellOptions": {"type": "color-background"}}
    return replace(panel, options=options, custom=custom, mapped=SEVERITY_STATES)


def overview_row() -> Row:
    return Row(
        "Fleet",
        (
            stat(
                "Replicas running per service",
                "How many nodes run a process of each service now, out of the nodes configured for it.",
                (
                    Target(f"count by (service) (autoglm_process_up{{{SVC}}} == 1)", "{{service}} running"),
                    Target(f"count by (service) (autoglm_process_up{{{SVC}}})", "{{service}} configured"),
                ),
                NONE,
                base_color="blue",
                width=12,
            ),
            stat(
                "Replicas by verdict",
                "How many replicas of the fleet have each verdict now (layer / reason), healthy ones counted "
                "apart.",
                (Target(VERDICT_COUNTS, "{{layer}} / {{reason}}"),),
                NONE,
                base_color="blue",
                width=12,
            ),
        ),
    )


def ranking_row() -> Row:
    return Row(
        "Worst first",
        (
            _ranked(
                table(
                    "Nodes by verdict",
                    "Each node's worst state (its replicas, a lost GPU, its exporter not scraped), worst "
                    "first; a row opens the node's status page.",
                    Target(NODE_SEVERITY),
                    hide=("Time", "__name__"),
                    width=10,
                    height=10,
                )
            ).with_links(data_links=(STATUS_PAGE,)),
            _ranked(
                table(
                    "Replicas by verdict",
                    "Each service on each node with the first broken link of its chain, the replicas that "
                    "hurt users first; a row opens the node's status page.",
                    Target(REPLICAS),
                    hide=("Time", "__name__", "job"),
                    width=14,
                    height=10,
                )
            ).with_links(data_links=(STATUS_PAGE,)),
        ),
    )


def dashboard() -> Dashboard:
    return Dashboard(
        "autoglm-fleet",
        "AutoGLM / Fleet",
        "Every node and every replica of the fleet, worst first, each linked to its node's status page.",
        (overview_row(), ranking_row()),
        (INSTANCE_VAR, SERVICE_VAR),
    )
