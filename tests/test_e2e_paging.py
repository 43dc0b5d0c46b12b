"""End to end: one incident, one page, naming its cause, through real components.

Real redis-server, the demo inference service (demo/: API + vLLM look-alike), the exporter (with a
fake pynvml on its PYTHONPATH: this machine has no GPU), a real Prometheus (scrape and rule
evaluation every second; it scrapes the exporter, the engine's own /metrics, itself and
Alertmanager) loading the rules mixin/ generates, and a real Alertmanager with the routing and
inhibition mixin/ generates, whose receivers are a webhook server inside this test. An unrelated
CPU hog (ordinary priority) saturates every core for the whole run.

Time scale. Every duration of the shipped rules and routing (each `for:`, rate window, error
budget window, latency objective, and Alertmanager's group waits and intervals) is multiplied by one
factor, TIME_SCALE = 1/20, by generating them with mixin.config.time_scale(): a minute of `for:`
lasts 3 s, the 1 h / 5 m burn windows 3 min / 15 s, the 10 s latency objective becomes 0.5 s (a
bucket of the probe histogram), the critical route's group_wait 1.5 s. Only the intervals (scrape,
evaluation, the exporter's collection) are not scaled: 1 s is this machine's floor, a tenth of the
shipped 10 s.

Healthy first, under the CPU hog: no page. Then one fault at a time. For each, every critical
notification belongs to one Alertmanager group (the cause's, or the service's when symptoms page
alone), the first notification with an alert new to the incident names its cause, no other group
pages, and the cause resolves once the fault is gone. Every PromQL expression of the dashboards and the rules is run against this
Prometheus in every state: none may error, and each must return data in at least one state.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mixin import alerts as mixin_alerts
from mixin import config as mixin_config
from mixin import dashboards as mixin_dashboards
from mixin import grafana as mixin_grafana

from . import pagingstack
from .alertreceiver import WebhookReceiver
from .conftest import free_port, wait_until
from .pagingstack import (
    TIME_SCALE,
    Processes,
    PrometheusApi,
    critical,
    fake_nvml,
    start_alertmanager,
    start_prometheus,
    start_redis,
)

pytestmark = pytest.mark.timeout(1200)  # a guard against a hang: the test takes 7-12 minutes

PROBE_TIMEOUT = 2.0  # a hung request fails after this: shorter than the scaled `for:` of symptoms
BASELINE = 20.0  # seconds of healthy service under the CPU hog: past every scaled critical `for:`
PAGE_WITHIN = 30.0  # a fault's cause reaches the webhook within this...
BUDGET_PAGE_WITHIN = 90.0  # ...but an error budget's: its 3 min window needs ~45 s of a slow service
SETTLE = 3.0  # after the cause paged, how long other groups get to page (none may): 2x group_wait and more
RESOLVE_WITHIN = 45.0
# the slowest paging burn window's short half (30 m, scaled) empties within this
BURN_SETTLE = 30 * 60 * TIME_SCALE + 30
# Labels that name the broken link: the page's text must say them, not only its labels.
NAMED_IN_THE_TEXT = {"target", "redis", "engine", "log", "dependency"}

# Series this machine cannot produce in any state, with why (each is covered elsewhere).
NEVER_HERE = {
    "autoglm_cuda_compatible": "needs a CUDA runtime mapped by the service (tests/test_cuda.py)",
    "autoglm_container_cpu_quota_cores": "needs a CPU quota on the service's cgroup (tests/test_cgroups.py)",
    "autoglm_container_memory_limit_bytes": "needs a memory limit on the cgroup (tests/test_cgroups.py)",
    "probe_first_token_slow": "needs a streaming client probe: the demo's client probe is /inference "
    "(alerts/tests/slo.test.yml)",
    # an optional join: until the exporter says which service a log belongs to, the log alerts go
    # without `service` (alerts/tests/chain.test.yml covers both)
    "autoglm_log_info": "not exported yet (requested from the exporter)",
}


# --- the stack ---------------------------------------------------------------------------------------


@dataclass
class Stack(Processes):
    webhook: WebhookReceiver
    prometheus_url: str
    api_port: int
    engine_port: int
    redis_port: int

    def start_redis(self) -> None:
        start_redis(self, self.redis_port)

    def start_engine(self) -> subprocess.Popen[bytes]:
        process = self.spawn(
            "engine", [sys.executable, "-m", "demo", "engine", "--port", str(self.engine_port)]
        )
        wait_until(lambda: httpx.get(f"{self.engine_url}/health", timeout=2).status_code == 200, timeout=15)
        return process

    def start_api(self) -> None:
        args = [sys.executable, "-m", "demo", "api", "--port", str(self.api_port)]
        args += ["--engine-url", self.engine_url, "--redis-url", f"redis://127.0.0.1:{self.redis_port}/0"]
        args += ["--log-file", str(self.error_log), "--trace-file", str(self.tmp / "trace.jsonl")]
        self.spawn("api", args)
        wait_until(lambda: httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200, timeout=15)

    def start_cpu_hog(self) -> None:
        """One busy loop per core, at ordinary priority: the machine is saturated, the service not."""
        for index in range(os.cpu_count() or 1):
            self.spawn(f"hog-{index}", [sys.executable, "-c", "while True: pass"])

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def engine_url(self) -> str:
        return f"http://127.0.0.1:{self.engine_port}"

    @property
    def error_log(self) -> Path:
        return self.tmp / "error.log"

    # the demo's fault switches

    def fault(self, url: str, name: str, **extra: Any) -> None:
        response = httpx.post(f"{url}/admin/fault", json={"fault": name, **extra}, timeout=5)
        assert response.status_code == 200, response.text

    # Prometheus

    def query(self, expr: str) -> dict[str, Any]:
        return PrometheusApi(self.prometheus_url).query(expr)

    def alerts(self, state: str, severity: str = "critical") -> list[dict[str, Any]]:
        return PrometheusApi(self.prometheus_url).alerts(state, severity)


def _exporter_config(stack: Stack) -> str:
    return f"""
global: {{interval: 1s, timeout: 4s, jitter: 0}}
# The environment snapshot runs pip in the service's interpreter: its first run gives every series,
# and more runs would only load this small machine's CPUs.
collectors: {{environment: {{interval: 5m}}}}
services:
  - name: open-autoglm
    match: {{cmdline: '-m demo api --port {stack.api_port}'}}
    port: {stack.api_port}
    depends_on: [redis, vllm]
  - name: vllm
    match: {{cmdline: '-m demo engine --port {stack.engine_port}'}}
    port: {stack.engine_port}
targets:
  - name: inference
    module: inference
    url: {stack.api_url}/inference
    service: open-autoglm
    # five tokens: far inside the scaled latency objective (0.5 s) on a busy machine
    body: {{prompt: Hello, max_tokens: 5}}
    timeout: {PROBE_TIMEOUT}s
    connect_timeout: 1s
  - name: vllm-generate
    module: openai_chat
    url: {stack.engine_url}/v1/chat/completions
    layer: dependencies
    service: vllm
    stream: true
    timeout: {PROBE_TIMEOUT}s
redis:
  - name: redis
    address: 127.0.0.1:{stack.redis_port}
    timeout: 1s
    queues: [{{key: 'autoglm:requests', type: list}}]
engines:
  - {{name: vllm, kind: vllm, metrics_url: '{stack.engine_url}/metrics', service: vllm, timeout: 1s}}
logs:
  - {{name: error, path: '{stack.error_log}', service: open-autoglm}}
  - {{name: trace, path: '{stack.tmp / "trace.jsonl"}', service: open-autoglm, trace: true}}
forensics:
  trigger_after_failures: 1
  hang_after: 1s  # under the probe timeout: stacks are taken while the probe still waits
  dumps: 3
  dump_interval: 0.3s
  cooldown: 5s
  directory: '{stack.tmp / "captures"}'
environment:
  baselines: {{}}
"""


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def stack(tmp_path: Path, start_exporter, webhook: WebhookReceiver) -> Iterator[Stack]:
    prometheus_port, alertmanager_port = free_port(), free_port()
    stack = Stack(
        tmp_path, webhook, f"http://127.0.0.1:{prometheus_port}", free_port(), free_port(), free_port()
    )
    try:
        stack.start_cpu_hog()
        stack.start_redis()
        engine = stack.start_engine()
        stack.start_api()

        config = tmp_path / "autoglm.yml"
        config.write_text(_exporter_config(stack))
        fake = fake_nvml(tmp_path / "fake-nvml", engine.pid)
        pythonpath = os.pathsep.join(filter(None, [str(fake), os.environ.get("PYTHONPATH")]))
        exporter = start_exporter(f"--config.file={config}", env={"PYTHONPATH": pythonpath})
        stack.processes["exporter"] = exporter.process

        start_alertmanager(stack, alertmanager_port, webhook)
        targets = {
            mixin_config.EXPORTER_JOB: [exporter.port],
            "vllm": [stack.engine_port],
            "prometheus": [prometheus_port],
            "alertmanager": [alertmanager_port],
        }
        start_prometheus(stack, prometheus_port, alertmanager_port, targets)
        yield stack
    finally:
        stack.stop_all()


# --- every PromQL expression we ship ----------------------------------------------------------------


SELECTOR = re.compile(r"((?:[a-z_]+:)?autoglm_[a-zA-Z0-9_:]*|\bup\b)(\{[^}]*\})?")


def selectors(expr: str) -> list[str]:
    return sorted({name + (labels or "") for name, labels in SELECTOR.findall(expr)})


def shipped_queries() -> dict[str, str]:
    """Every expression whose result a user sees: dashboards' queries and the recording rules."""
    queries = {}
    for number, (where, expr) in enumerate(mixin_dashboards.queries()):
        queries[f"{where} (query {number})"] = mixin_grafana.concrete(expr)  # a panel may have several
    with mixin_config.time_scale(TIME_SCALE):
        groups = mixin_alerts.rule_groups()
    for group in groups:
        for rule in group["rules"]:
            if "record" in rule:
                queries[f"recording {rule['record']}"] = rule["expr"]
    return queries


def alert_selectors() -> dict[str, str]:
    """An alert's expression returns data only while it fires; its selectors must always match."""
    found = {}
    with mixin_config.time_scale(TIME_SCALE):
        alerts = mixin_alerts.all_alerts()
    for alert in alerts:
        found[f"alert {alert.name}: the expression"] = alert.expr
        for selector in selectors(alert.expr):
            found[f"alert {alert.name}: {selector}"] = selector
    return found


class ExpressionLedger:
    """Runs every expression in every state; remembers which errored and which returned data."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.expressions = {**shipped_queries(), **alert_selectors()}
        self.errors: dict[str, str] = {}
        self.with_data: set[str] = set()

    def sample(self) -> None:
        def run(item: tuple[str, str]) -> tuple[str, str, dict[str, Any]]:
            return item[0], item[1], self.stack.query(item[1])

        with ThreadPoolExecutor(max_workers=8) as pool:
            for where, expr, answer in pool.map(run, self.expressions.items()):
                if answer.get("status") != "success":
                    self.errors[where] = f"{expr}: {answer.get('error')}"
                elif answer["data"]["result"]:
                    self.with_data.add(where)

    def without_data(self) -> list[str]:
        missing = []
        for where, expr in self.expressions.items():
            if where in self.with_data or where.endswith(": the expression"):
                continue
            if any(name in where or name in expr for name in NEVER_HERE):
                continue
            missing.append(f"{where}: {expr}")
        return missing


# --- notifications -------------------------------------------------------------------------------------


class Incident(pagingstack.Incident):
    """What the webhook received from a fault's injection until the next one."""

    def problems(self, fault: Fault) -> list[str]:
        """What breaks "one incident, one page, naming its cause"."""
        found = []
        pages = self.pages()
        if not any(fault.must_page & set(self.new_alerts(n)) for n in pages):
            found.append(f"{fault.name}: {sorted(fault.must_page)} never paged")
        if len({n["groupKey"] for n in pages}) > 1:
            found.append(f"{fault.name}: pages in more than one group")
        first = self.first_page()
        if first is not None and not set(self.new_alerts(first)) & fault.causes:
            found.append(
                f"{fault.name}: the first page names {self.new_alerts(first)}, not {sorted(fault.causes)}"
            )
        for alert in (a for n in pages for a in n["alerts"] if a["labels"]["alertname"] in fault.must_page):
            annotations = alert["annotations"]
            text = annotations["summary"] + annotations["description"]
            if not annotations["runbook_url"].endswith("#" + alert["labels"]["alertname"].lower()):
                found.append(f"{fault.name}: runbook_url {annotations['runbook_url']}")
            if "{{" in text or "<no value>" in text:
                found.append(f"{fault.name}: an unexpanded template in {text}")
            for key in NAMED_IN_THE_TEXT & alert["labels"].keys():
                if alert["labels"][key] not in text:
                    found.append(f"{fault.name}: {key}={alert['labels'][key]} is not in the text {text}")
        return found


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[Stack], None]
    remove: Callable[[Stack], None]
    causes: frozenset[str]  # alert names that name this fault: the first page must carry one
    must_page: frozenset[str]  # one of these must page for this fault


def _restart_api(stack: Stack) -> None:
    stack.stop("api")
    stack.start_api()


def _fault(
    name: str,
    inject: Callable[[Stack], None],
    remove: Callable[[Stack], None],
    *causes: str,
    any_cause_pages: bool = False,
) -> Fault:
    """`causes`: the alerts that name the fault, the first the one that must page (or, with
    `any_cause_pages`, any of them: a hang pages as whatever names it first)."""
    return Fault(
        name, inject, remove, frozenset(causes), frozenset(causes if any_cause_pages else causes[:1])
    )


FAULTS = [
    _fault("process gone", lambda s: s.stop("api"), lambda s: s.start_api(), "AutoglmProcessMissing"),
    _fault(
        "hang",
        lambda s: s.fault(s.api_url, "hang"),
        lambda s: s.fault(s.api_url, "none"),
        "AutoglmServiceNotAnswering",
        "AutoglmChainBroken",
        "AutoglmThreadsBlocked",
        any_cause_pages=True,
    ),
    _fault("Redis down", lambda s: s.stop("redis"), lambda s: s.start_redis(), "AutoglmRedisDown"),
    _fault(
        "engine down",
        lambda s: s.fault(s.engine_url, "down"),
        lambda s: s.fault(s.engine_url, "none"),
        "AutoglmEngineDown",
    ),
    _fault(
        "engine stalled",
        lambda s: s.fault(s.engine_url, "stall"),
        lambda s: s.fault(s.engine_url, "none"),
        "AutoglmEngineStalled",
    ),
    _fault("deadlock", lambda s: s.fault(s.api_url, "deadlock"), _restart_api, "AutoglmThreadsBlocked"),
    _fault(
        "CUDA OOM line",
        lambda s: s.fault(s.api_url, "oom"),
        lambda s: None,  # a log line cannot be taken back: the alert ends when it leaves the window
        "AutoglmCudaOutOfMemory",
    ),
    _fault(
        "slow service",
        lambda s: s.fault(s.api_url, "slow", seconds=0.8),  # over the scaled 0.5 s objective
        lambda s: s.fault(s.api_url, "none"),
        "AutoglmLatencyBudgetBurn",
    ),
    _fault(
        "half-failing service",
        lambda s: s.fault(s.api_url, "flaky"),
        lambda s: s.fault(s.api_url, "none"),
        "AutoglmAvailabilityBudgetBurn",
        "AutoglmChainBroken",
    ),
]


_T0 = time.monotonic()


def progress(message: str) -> None:
    """What the test is at, with the time since import, on stderr (pytest -s shows it as it goes)."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


def wait_for_page(stack: Stack, incident: Incident, fault: Fault) -> bool:
    def paged() -> bool:
        incident.update(stack.webhook)
        return any(fault.must_page & set(incident.new_alerts(n)) for n in incident.pages())

    budget = any(name.endswith("BudgetBurn") for name in fault.must_page)
    try:
        return bool(wait_until(paged, timeout=BUDGET_PAGE_WITHIN if budget else PAGE_WITHIN, interval=0.25))
    except AssertionError:
        return False


def burn_conditions(fault: Fault) -> list[str]:
    """The expressions of the paging burn-rate windows of the objectives a fault pages through."""
    with mixin_config.time_scale(TIME_SCALE):
        alerts = mixin_alerts.slo()
    return [a.expr for a in alerts if a.name in fault.must_page and a.severity == "critical"]


def settle(stack: Stack, fault: Fault) -> None:
    """After a fault is gone: its causes resolved, no critical alert still pending (it would fire
    during the next incident and be counted there), and, for a fault that pages through an error
    budget, no paging window of that budget still burning: a slower window (6 h / 30 m, scaled) the
    fault's failures still fill would page during the next incident, as that incident."""
    try:
        for expr in burn_conditions(fault):
            wait_until(lambda e=expr: not stack.query(e)["data"]["result"], timeout=BURN_SETTLE, interval=0.5)
        wait_until(
            lambda: not [a for a in stack.alerts("firing") if a["labels"]["alertname"] in fault.causes],
            timeout=RESOLVE_WITHIN,
            interval=0.5,
        )
        # A burn-rate alert stays pending until its short window (15 s scaled) no longer holds the
        # fault; left pending, it would fire during the next incident and be counted there.
        wait_until(lambda: not stack.alerts("pending"), timeout=RESOLVE_WITHIN, interval=0.5)
    except AssertionError:
        pass  # still pending: the next incident's report shows it


def test_one_incident_one_page_naming_its_cause(stack: Stack) -> None:
    ledger = ExpressionLedger(stack)
    report: list[str] = []
    problems: list[str] = []
    progress("stack started")

    # Healthy, under the CPU hog: the client probe answers, Prometheus scraped and evaluated a while.
    wait_until(lambda: _value(stack, 'count(up{job="autoglm-exporter"} == 1)') == 1.0, timeout=30)
    wait_until(lambda: _value(stack, 'autoglm_probe_success{target="inference"}') == 1.0, timeout=40)
    baseline = Incident("healthy baseline, CPU hog on every core", time.time(), len(stack.webhook.received()))
    time.sleep(BASELINE)
    # a critical alert still pending would fire during the first incident and be counted there: it
    # either clears (a slow probe or two while the stack warmed up) or fires here, in the baseline
    try:
        wait_until(lambda: not stack.alerts("pending"), timeout=RESOLVE_WITHIN, interval=0.5)
    except AssertionError:
        problems.append(
            f"the baseline keeps alerts pending: {[a['labels'] for a in stack.alerts('pending')]}"
        )
    baseline.update(stack.webhook)
    report.append(baseline.summary())
    if any(critical(n) for n in baseline.notifications) or stack.alerts("firing"):
        problems.append(f"the baseline paged: {[a['labels'] for a in stack.alerts('firing')]}")
    ledger.sample()
    progress("baseline done")

    for fault in FAULTS:
        incident = Incident(fault.name, time.time(), len(stack.webhook.received()))
        fault.inject(stack)
        paged = wait_for_page(stack, incident, fault)
        progress(
            f"{fault.name}: {'paged' if paged else 'did not page'} after {time.time() - incident.started:.0f} s"
        )
        if paged:
            time.sleep(SETTLE)  # long enough for another group to page, if one would
        ledger.sample()
        fault.remove(stack)
        if fault is not FAULTS[-1]:  # the next incident must not inherit this one's alerts
            settle(stack, fault)
        incident.update(stack.webhook)
        report.append(incident.summary())
        problems += incident.problems(fault)
        progress(report[-1])

    # The exporter itself goes away: the page says so, in a group of its own.
    gone = Incident("exporter gone", time.time(), len(stack.webhook.received()))
    stack.stop("exporter")

    def exporter_down() -> bool:
        gone.update(stack.webhook)
        return any("AutoglmExporterDown" in gone.new_alerts(n) for n in gone.pages())

    wait_until(exporter_down, timeout=PAGE_WITHIN, interval=0.25)
    report.append(gone.summary())
    ledger.sample()
    print("\n".join(report))  # the notification counts per fault, for the record

    # the paging path's own heartbeat arrived all along, on its own receiver
    watchdog = [n for n in stack.webhook.received() if n["receiver"] == "watchdog"]
    assert watchdog and {a["labels"]["alertname"] for n in watchdog for a in n["alerts"]} == {
        "AutoglmWatchdog"
    }

    problems += [f"Prometheus rejects {error}" for error in ledger.errors.values()]
    problems += [f"never returned data: {missing}" for missing in ledger.without_data()]
    assert problems == [], "\n".join(problems + ["", *report])


def _value(stack: Stack, expr: str) -> float | None:
    result = stack.query(expr)["data"]["result"]
    return float(result[0]["value"][1]) if result else None
