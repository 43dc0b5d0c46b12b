"""A fleet on one machine: one incident, one page, across nodes, replicas and restarts.

Six "nodes", each an exporter with its own `instance` (127.0.0.1:PORT) and its own demo engine;
the demo API runs as four replicas, one on each of the first four nodes, behind a round-robin load
balancer (tests/fleetbalancer.py) that users and the client probes call; one redis-server is shared
by every replica and watched by every node. Node 3's exporter, and only it, loads a fake `pynvml`
(one GPU running node 3's engine) whose hardware faults the test switches. One Prometheus scrapes
the six exporters with the shipped rules, one Alertmanager routes with the shipped config to a
webhook receiver, all at the end-to-end test's time scale (tests/pagingstack.py, 1/20).

Incidents, one at a time, and what must page (a page: a critical notification announcing an alert
that began firing during the incident; pages of one Alertmanager group are one incident to the
person paged, later notifications of the group are its updates):

- a rolling restart of every replica, one at a time, each drained from the balancer first (as an
  endpoint leaves a Kubernetes Service before its pod stops): nothing pages;
- one replica of four dead: a warning naming the replica's service and node; no page, because the
  load balancer keeps the service's objectives whole;
- every replica dead: one page;
- the shared Redis down, seen by all six nodes: one page, naming Redis;
- node 3's GPU falls off the bus, later a critical XID on it: each one page naming node 3, the
  engine on that GPU (`vllm`) and the service it breaks (`open-autoglm`).

Each incident ends once nothing more can page for it: no critical alert pending in Prometheus, and
every critical alert Alertmanager holds (not inhibited) sent in a notification; then the fault is
removed and the test waits until no critical alert is pending or firing. The fleet
dashboard's queries run against this Prometheus; its node table ranks the broken node first.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from autoglm_exporter.base.thresholds import RESTART_LOOP_WINDOW_SECONDS, RESTART_LOOP_YOUNG_SECONDS
from mixin import config as mixin_config
from mixin import fleet as mixin_fleet
from mixin.grafana import concrete

from .alertreceiver import WebhookReceiver
from .conftest import free_port, wait_until
from .fleetbalancer import LoadBalancer
from .pagingstack import (
    TIME_SCALE,
    Incident,
    Processes,
    PrometheusApi,
    epoch,
    fake_nvml,
    start_alertmanager,
    start_prometheus,
    start_redis,
)

pytestmark = pytest.mark.timeout(600)  # a guard against a hang; the test takes a few minutes

NODES = 6
REPLICAS = 4  # the API replicas, on nodes 1-4
GPU_NODE = 3  # the node whose exporter has a (fake) GPU
PROBE_TIMEOUT = 2.0
SERVICE = "open-autoglm"
PAGE_WITHIN = 40.0  # a fault's page (or warning) reaches the webhook within this
QUIET_WITHIN = 60.0  # then nothing more can page for it within this
RESOLVE_WITHIN = 60.0
HISTORY_PROBES = 120  # client probes answered before the first incident (see the test)


@dataclass
class Node:
    number: int
    exporter_port: int
    engine_port: int
    api_port: int | None  # None: no replica on this node

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.exporter_port}"

    @property
    def engine_url(self) -> str:
        return f"http://127.0.0.1:{self.engine_port}"


@dataclass
class Fleet(Processes):
    webhook: WebhookReceiver
    prometheus: PrometheusApi
    alertmanager_url: str
    redis_port: int
    nodes: list[Node] = field(default_factory=list)
    balancer: LoadBalancer | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def replicas(self) -> list[Node]:
        return [node for node in self.nodes if node.api_port is not None]

    def node(self, number: int) -> Node:
        return self.nodes[number - 1]

    def start_engine(self, node: Node) -> None:
        args = [sys.executable, "-m", "demo", "engine", "--port", str(node.engine_port)]
        self.spawn(f"engine-{node.number}", args)

    def start_api(self, node: Node) -> None:
        args = [sys.executable, "-m", "demo", "api", "--port", str(node.api_port)]
        args += ["--engine-url", node.engine_url, "--redis-url", f"redis://127.0.0.1:{self.redis_port}/0"]
        self.spawn(f"api-{node.number}", args)

    def api_ready(self, node: Node) -> bool:
        return httpx.get(f"http://127.0.0.1:{node.api_port}/health", timeout=2).status_code == 200

    def seen_running(self, node: Node) -> bool:
        """Prometheus has scraped the replica's process as running from its node."""
        expr = f'autoglm_process_up{{instance="{node.instance}", service="{SERVICE}"}}'
        return self.prometheus.value(expr) == 1.0

    def bring_back(self, node: Node) -> None:
        """Start a stopped replica; return once it answers and Prometheus saw it running."""
        self.start_api(node)
        wait_until(lambda: self.api_ready(node), timeout=20, interval=0.1)
        wait_until(lambda: self.seen_running(node), timeout=20, interval=0.2)

    def restart_api(self, node: Node) -> None:
        """A graceful restart: drained first, back in the balancer once it answers again."""
        assert self.balancer is not None and node.api_port is not None
        self.balancer.drain(node.api_port)
        wait_until(lambda: self.balancer.drained(node.api_port), timeout=10, interval=0.05)
        self.stop(f"api-{node.number}")
        self.bring_back(node)
        self.balancer.restore(node.api_port)

    def start_exporter(self, node: Node, env: dict[str, str]) -> None:
        path = self.tmp / f"node-{node.number}.yml"
        path.write_text(_exporter_config(self, node))
        args = [sys.executable, "-m", "autoglm_exporter", f"--config.file={path}"]
        args.append(f"--web.listen-address=127.0.0.1:{node.exporter_port}")
        self.spawn(f"exporter-{node.number}", args, env={**os.environ, **env})

    @property
    def gpu_control(self) -> Path:
        return self.tmp / "gpu-control"

    def alertmanager_active(self) -> list[dict[str, Any]]:
        """The critical alerts Alertmanager holds and would notify (not inhibited, not silenced)."""
        params = {"active": "true", "inhibited": "false", "silenced": "false"}
        found = httpx.get(f"{self.alertmanager_url}/api/v2/alerts", params=params, timeout=5).json()
        return [a for a in found if a["labels"].get("severity") == mixin_config.SEVERITY["critical"]]


def _exporter_config(fleet: Fleet, node: Node) -> str:
    """One node's exporter: its replica (if any), its engine, the shared Redis."""
    services, targets = "", ""
    if node.api_port is not None:
        services = f"""
  - name: {SERVICE}
    match: {{cmdline: '-m demo api --port {node.api_port}'}}
    port: {node.api_port}
    depends_on: [redis, vllm]"""
        targets = f"""
  - name: inference
    module: inference
    url: {fleet.balancer.url if fleet.balancer else ""}/inference
    service: {SERVICE}
    body: {{prompt: Hello, max_tokens: 5}}
    timeout: {PROBE_TIMEOUT}s
    connect_timeout: 1s"""
    return f"""
global: {{interval: 1s, timeout: 4s, jitter: 0}}
collectors: {{environment: {{interval: 5m}}}}
services:{services}
  - name: vllm
    match: {{cmdline: '-m demo engine --port {node.engine_port}'}}
    port: {node.engine_port}
targets:{targets or " []"}
redis:
  - {{name: redis, address: '127.0.0.1:{fleet.redis_port}', timeout: 1s}}
engines:
  - {{name: vllm, kind: vllm, metrics_url: '{node.engine_url}/metrics', service: vllm, timeout: 1s}}
logs: []
# the crash-loop windows at the rules' time scale: replicas restarted a test-minute apart lived the
# equivalent of twenty, not a loop (each stop is a restart to the exporter)
diagnosis:
  restart_loop_young: {RESTART_LOOP_YOUNG_SECONDS * TIME_SCALE:g}s
  restart_loop_window: {RESTART_LOOP_WINDOW_SECONDS * TIME_SCALE:g}s
forensics:
  directory: '{fleet.tmp / f"captures-{node.number}"}'
environment:
  baselines: {{}}
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    prometheus_port, alertmanager_port = free_port(), free_port()
    with WebhookReceiver() as webhook:
        fleet = Fleet(
            tmp_path,
            webhook,
            PrometheusApi(f"http://127.0.0.1:{prometheus_port}"),
            f"http://127.0.0.1:{alertmanager_port}",
            free_port(),
        )
        for number in range(1, NODES + 1):
            api_port = free_port() if number <= REPLICAS else None
            fleet.nodes.append(Node(number, free_port(), free_port(), api_port))
        try:
            start_redis(fleet, fleet.redis_port)
            for node in fleet.nodes:
                fleet.start_engine(node)
            for node in fleet.nodes:
                wait_until(lambda n=node: httpx.get(f"{n.engine_url}/health").status_code == 200, timeout=30)
            for node in fleet.replicas:
                fleet.start_api(node)
            for node in fleet.replicas:
                wait_until(lambda n=node: fleet.api_ready(n), timeout=30)
            with LoadBalancer([n.api_port for n in fleet.replicas if n.api_port], PROBE_TIMEOUT) as balancer:
                fleet.balancer = balancer
                fleet.gpu_control.mkdir()
                gpu_node = fleet.node(GPU_NODE)
                engine_pid = fleet.processes[f"engine-{GPU_NODE}"].pid
                nvml = fake_nvml(tmp_path / "fake-nvml", engine_pid, fleet.gpu_control)
                pythonpath = os.pathsep.join(filter(None, [str(nvml), os.environ.get("PYTHONPATH")]))
                for node in fleet.nodes:
                    fleet.start_exporter(node, {"PYTHONPATH": pythonpath} if node is gpu_node else {})
                for node in fleet.nodes:  # scraped from the first try: no page for a late start
                    ready = f"http://{node.instance}/-/ready"
                    wait_until(lambda u=ready: httpx.get(u).status_code == 200, timeout=30)
                start_alertmanager(fleet, alertmanager_port, webhook)
                exporters = [node.exporter_port for node in fleet.nodes]
                targets = {mixin_config.EXPORTER_JOB: exporters, "alertmanager": [alertmanager_port]}
                start_prometheus(fleet, prometheus_port, alertmanager_port, targets)
                yield fleet
        finally:
            fleet.stop_all()


# --- incidents --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one incident got: its pages (by Alertmanager group) and warnings."""

    incident: Incident
    warnings: list[dict[str, Any]]
    stuck: list[str | None] = field(default_factory=list)  # what did not settle, and how

    @property
    def page_groups(self) -> list[str]:
        return sorted({n["groupKey"] for n in self.incident.pages()})

    def first_page_alerts(self) -> list[dict[str, Any]]:
        first = self.incident.first_page()
        return [] if first is None else self.new(first)

    def new(self, notification: dict[str, Any]) -> list[dict[str, Any]]:
        started = self.incident.started - 1
        return [
            a for a in notification["alerts"] if a["status"] == "firing" and epoch(a["startsAt"]) >= started
        ]

    def row(self) -> str:
        """One line of the notification table: incident -> pages, warnings, first page."""
        first = self.first_page_alerts()
        named = "; ".join(f"{a['labels']['alertname']} {_labels(a)}" for a in first) or "-"
        warned = sorted({a["labels"]["alertname"] for n in self.warnings for a in self.new(n)})
        return (
            f"{self.incident.fault}: {len(self.incident.pages())} critical notification(s) in "
            f"{len(self.page_groups)} group(s), warnings {warned or '-'}; first page: {named}"
        )


def _labels(alert: dict[str, Any]) -> str:
    shown = {k: v for k, v in alert["labels"].items() if k not in ("alertname", "job")}
    return json.dumps(shown, sort_keys=True)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def quiet(fleet: Fleet, incident: Incident) -> str | None:
    """Wait until nothing more can page for the incident: no critical alert pending in Prometheus,
    and every critical alert Alertmanager would notify already in a notification of the incident."""

    def nothing_left() -> bool:
        incident.update(fleet.webhook)
        sent = {
            a["fingerprint"] for n in incident.notifications for a in n["alerts"] if a["status"] == "firing"
        }
        unsent = [a for a in fleet.alertmanager_active() if a["fingerprint"] not in sent]
        return not fleet.prometheus.alerts("pending") and not unsent

    try:
        wait_until(nothing_left, timeout=QUIET_WITHIN, interval=0.5)
        return None
    except AssertionError:
        pending = [a["labels"] for a in fleet.prometheus.alerts("pending")]
        return f"still pending {QUIET_WITHIN:.0f} s after the fault: {pending}"


def resolved(fleet: Fleet) -> str | None:
    """After a fault is gone: no critical alert pending or firing (it would page in the next one).
    What is still there, with the verdicts of its instances, when that does not come."""

    def calm() -> bool:
        return not fleet.prometheus.alerts("firing") and not fleet.prometheus.alerts("pending")

    try:
        wait_until(calm, timeout=RESOLVE_WITHIN, interval=0.5)
        return None
    except AssertionError:
        left = fleet.prometheus.alerts("firing") + fleet.prometheus.alerts("pending")
        verdicts = fleet.prometheus.query("autoglm_diagnosis_verdict == 1")["data"]["result"]
        hurt = fleet.prometheus.query("autoglm_diagnosis_users_hurt == 1")["data"]["result"]
        return (
            f"critical alerts still pending or firing {RESOLVE_WITHIN:.0f} s after the fault was removed: "
            f"{[a['labels'] for a in left]}; verdicts {[v['metric'] for v in verdicts]}; "
            f"users hurt {[h['metric'] for h in hurt]}"
        )


def run_incident(
    fleet: Fleet,
    name: str,
    inject: Callable[[], None],
    remove: Callable[[], None],
    arrived: Callable[[Outcome], bool] | None,
    during: Callable[[], None] = lambda: None,
) -> Outcome:
    """Inject, wait for what must arrive (if anything), wait until nothing more can page, remove,
    wait until the fleet is calm again."""
    incident = Incident(name, time.time(), len(fleet.webhook.received()))
    outcome = Outcome(incident, [])

    def update() -> Outcome:
        incident.update(fleet.webhook)
        outcome.warnings = [n for n in incident.notifications if _warning(n) and outcome.new(n)]
        return outcome

    inject()
    if arrived is not None:
        try:
            wait_until(lambda: arrived(update()), timeout=PAGE_WITHIN, interval=0.25)
        except AssertionError:
            _progress(f"{name}: what must arrive did not")
    outcome.stuck.append(quiet(fleet, incident))
    during()
    remove()
    outcome.stuck.append(resolved(fleet))
    outcome.stuck = [f"{name}: {text}" for text in outcome.stuck if text]
    update()
    _progress(outcome.row())
    return outcome


def _warning(notification: dict[str, Any]) -> bool:
    return notification["commonLabels"].get("severity") == mixin_config.SEVERITY["warning"]


def _names(alerts: list[dict[str, Any]]) -> set[str]:
    return {a["labels"]["alertname"] for a in alerts}


def _mentions(alerts: list[dict[str, Any]], word: str) -> bool:
    """An alert's labels or text say `word`."""
    return any(
        word in a["labels"].values() or word in a["annotations"]["summary"] + a["annotations"]["description"]
        for a in alerts
    )


# --- the test ---------------------------------------------------------------------------------------


def test_one_incident_one_page_across_the_fleet(fleet: Fleet) -> None:
    started = time.monotonic()
    prometheus = fleet.prometheus
    wait_until(
        lambda: prometheus.value(f"count(up{{{mixin_config.EXPORTER_SELECTOR}}} == 1)") == NODES, timeout=60
    )
    wait_until(lambda: prometheus.value("count(autoglm_probe_success == 1)") == REPLICAS, timeout=60)
    # Healthy enough to page nothing. (On a machine this busy the verdict may say the CPU is
    # saturated, a warning: the fleet test is about pages.)
    calm = resolved(fleet)
    assert calm is None, calm
    # A history of answered probes, as a fleet has that runs a while: the test starts with none,
    # and then one failed probe would be an error budget burning.
    probes = 'sum(autoglm_probe_request_duration_seconds_count{target="inference"})'
    wait_until(lambda: (prometheus.value(probes) or 0) >= HISTORY_PROBES, timeout=120, interval=0.5)
    _progress(f"fleet serving after {time.monotonic() - started:.0f} s")
    report: list[str] = []
    problems: list[str] = []
    start_up = Incident("start-up", fleet.started_at, 0)
    start_up.update(fleet.webhook)
    if start_up.pages():
        problems.append(f"the fleet paged while starting:\n{start_up.summary()}")
    problems += dashboard_problems(fleet, broken_node=None)

    # A rolling restart, one replica at a time: nothing pages.
    def rolling_restart() -> None:
        for node in fleet.replicas:
            fleet.restart_api(node)

    outcome = run_incident(fleet, "rolling restart", rolling_restart, lambda: None, None)
    report.append(outcome.row())
    problems += [text for text in outcome.stuck if text]
    if outcome.page_groups:
        problems.append(f"the rolling restart paged: {outcome.first_page_alerts()}")

    # One replica of four dead: a warning naming it and its node; the balancer keeps users served.
    dead = fleet.node(2)

    def warned(o: Outcome) -> bool:
        """A new warning about the service on the dead replica's node that says capacity is down."""
        return any(
            a["labels"].get("instance") == dead.instance
            and a["labels"].get("service") == SERVICE
            and re.search(
                r"(?i)replica|capacity", a["annotations"]["summary"] + a["annotations"]["description"]
            )
            for n in o.warnings
            for a in o.new(n)
        )

    outcome = run_incident(
        fleet,
        "one replica of four dead",
        lambda: fleet.stop(f"api-{dead.number}"),
        lambda: fleet.bring_back(dead),
        lambda o: warned(o) or bool(o.page_groups),
    )
    report.append(outcome.row())
    problems += [text for text in outcome.stuck if text]
    if outcome.page_groups:
        problems.append(f"one dead replica of four paged: {outcome.first_page_alerts()}")
    if not warned(outcome):
        problems.append(f"one dead replica: no warning naming {SERVICE} on {dead.instance}")

    # Every replica dead: one page.
    def kill_all() -> None:
        for node in fleet.replicas:
            fleet.stop(f"api-{node.number}")

    def start_all() -> None:
        for node in fleet.replicas:
            fleet.bring_back(node)

    outcome = run_incident(fleet, "every replica dead", kill_all, start_all, lambda o: bool(o.page_groups))
    report.append(outcome.row())
    problems += [text for text in outcome.stuck if text]
    problems += one_page(outcome, {"AutoglmProcessMissing"}, service=SERVICE)

    # The shared Redis down, seen by all six nodes: one page.
    outcome = run_incident(
        fleet,
        "shared Redis down",
        lambda: fleet.stop("redis"),
        lambda: start_redis(fleet, fleet.redis_port),
        lambda o: bool(o.page_groups),
    )
    report.append(outcome.row())
    problems += [text for text in outcome.stuck if text]
    problems += one_page(outcome, {"AutoglmRedisDown"}, redis="redis")

    # Node 3's GPU falls off the bus: one page naming the node and the services on its GPU.
    gpu_node = fleet.node(GPU_NODE)
    lost = fleet.gpu_control / "lost"
    ranked: list[str] = []
    outcome = run_incident(
        fleet,
        f"node {GPU_NODE}'s GPU lost",
        lost.touch,
        lost.unlink,
        lambda o: bool(o.page_groups),
        lambda: ranked.extend(dashboard_problems(fleet, broken_node=gpu_node)),
    )
    problems += ranked
    report.append(outcome.row())
    problems += [text for text in outcome.stuck if text]
    problems += one_page(outcome, {"AutoglmGpuLost"}, instance=gpu_node.instance)
    problems += names_the_services(outcome)

    # A critical XID on node 3's GPU: one page naming the node and the services on that GPU.
    xid = fleet.gpu_control / "xid-79"
    outcome = run_incident(
        fleet, f"node {GPU_NODE}'s GPU XID 79", xid.touch, lambda: None, lambda o: bool(o.page_groups)
    )
    report.append(outcome.row())
    problems += [text for text in outcome.stuck if text]
    problems += one_page(outcome, {"AutoglmGpuCriticalXid"}, instance=gpu_node.instance)
    problems += names_the_services(outcome)

    print("\n".join(["notification table:", *report]))
    _progress(f"fleet test took {time.monotonic() - started:.0f} s after start-up")
    assert problems == [], "\n".join(problems + ["", *report])


def one_page(outcome: Outcome, causes: set[str], **labels: str) -> list[str]:
    """The incident paged once (one Alertmanager group), its first page naming one of `causes`
    with `labels`."""
    name = outcome.incident.fault
    found = []
    if len(outcome.page_groups) != 1:
        found.append(f"{name}: pages in {len(outcome.page_groups)} groups, not 1: {outcome.page_groups}")
    first = [a for a in outcome.first_page_alerts() if a["labels"]["alertname"] in causes]
    if not first:
        found.append(f"{name}: the first page names {_names(outcome.first_page_alerts())}, not {causes}")
    elif not any(all(a["labels"].get(k) == v for k, v in labels.items()) for a in first):
        found.append(f"{name}: the first page's {causes} lack {labels}: {[a['labels'] for a in first]}")
    return found


def names_the_services(outcome: Outcome) -> list[str]:
    """A GPU's page names the engine computing on it and the service that engine serves."""
    first = outcome.first_page_alerts()
    return [
        f"{outcome.incident.fault}: the first page does not name {service}: {first}"
        for service in ("vllm", SERVICE)
        if first and not _mentions(first, service)
    ]


def dashboard_problems(fleet: Fleet, broken_node: Node | None) -> list[str]:
    """Every query of the fleet dashboard runs and returns data; the node table ranks the broken
    node first."""
    found = []
    for where, expr in mixin_fleet.fleet().queries():
        answer = fleet.prometheus.query(concrete(expr))
        if answer.get("status") != "success":
            found.append(f"fleet dashboard {where}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            found.append(f"fleet dashboard {where}: no data: {concrete(expr)}")
    ranked = fleet.prometheus.query(concrete(mixin_fleet.NODE_SEVERITY))["data"]["result"]
    if len(ranked) != NODES:
        found.append(f"the node table has {len(ranked)} rows, not {NODES}")
    if broken_node is not None and ranked and ranked[0]["metric"]["instance"] != broken_node.instance:
        found.append(f"the node table does not rank {broken_node.instance} first: {ranked}")
    return found
