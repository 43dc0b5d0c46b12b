"""End to end: the shipped rules page a human, with the broken link named, through real components.

Real redis-server, the demo inference service (demo/: API + vLLM look-alike), the exporter (with a
fake pynvml on its PYTHONPATH: this machine has no GPU), a real Prometheus (scrape and rule
evaluation every second) loading the shipped rule files, and a real Alertmanager loading the
shipped alertmanager.yml, whose webhook receiver is a server inside this test. The only edits to
the shipped files are timings: `for:` and range windows shortened, Alertmanager's group waits
shortened, the webhook URL pointed here.

Healthy first: no alert. Then one fault at a time; each must page with the right labels and
annotations, and resolve once the fault is gone. Every PromQL expression of the dashboards and
the rules is run against this Prometheus in every state: none may error, and each must return
data in at least one state.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mixin import alerts as mixin_alerts
from mixin import config as mixin_config
from mixin import dashboards as mixin_dashboards
from mixin import grafana as mixin_grafana

from .alertreceiver import WebhookReceiver, point_webhooks_at
from .conftest import REPO, free_port, require_binary, stop_process, wait_until

pytestmark = pytest.mark.timeout(420)

SHORT_FOR = "2s"  # every `for:` of the shipped rules...
# ...but those of absent() alerts: a Prometheus that just started has scraped nothing yet, which
# the shipped 2m covers; 2 s would not (the exporter "absent" before the first scrape).
ABSENT_FOR = "15s"
SHORT_WINDOW = "10s"  # every range window of the shipped rules (1 s scrapes: 10 samples)
FIRE_WITHIN = 45.0  # a fault's alert reaches the webhook within this
RESOLVE_WITHIN = 45.0
PROBE_TIMEOUT = 2.0
# Labels that name the broken link: the page's text must say them, not only its labels.
NAMED_IN_THE_TEXT = {"service", "target", "layer", "reason", "redis", "engine", "log"}

ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"

# Series this machine cannot produce in any state, with why (each is covered elsewhere).
NEVER_HERE = {
    "autoglm_cuda_compatible": "needs a CUDA runtime mapped by the service (tests/test_cuda.py)",
    "autoglm_container_cpu_quota_cores": "needs a CPU quota on the service's cgroup (tests/test_cgroups.py)",
    "autoglm_container_memory_limit_bytes": "needs a memory limit on the cgroup (tests/test_cgroups.py)",
}


# --- the shipped files, with test timings --------------------------------------------------------


def shortened_rules(text: str) -> str:
    """The shipped rule file with every `for:` and every range window shortened for a test."""
    groups = yaml.safe_load(text)
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule["expr"] = re.sub(r"\[\d+[smhd]\]", f"[{SHORT_WINDOW}]", rule["expr"])
            if "for" in rule:
                rule["for"] = ABSENT_FOR if "absent(" in rule["expr"] else SHORT_FOR
    return yaml.safe_dump(groups, sort_keys=False)


def alertmanager_config(webhook_url: str) -> str:
    """The shipped alertmanager.yml, its waits shortened and every webhook pointed at the test."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())

    def shorten(route: dict[str, Any]) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "1s"), ("repeat_interval", "1h")):
            if key in route or route is config["route"]:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    point_webhooks_at(config, webhook_url)
    return yaml.safe_dump(config, sort_keys=False)


# --- the stack ---------------------------------------------------------------------------------------


@dataclass
class Stack:
    tmp: Path
    webhook: WebhookReceiver
    prometheus_url: str
    api_port: int
    engine_port: int
    redis_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # processes

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        log.close()
        self.processes[name] = process
        return process

    def stop(self, name: str) -> None:
        stop_process(self.processes.pop(name))

    def stop_all(self) -> None:
        for name in list(self.processes):
            process = self.processes.pop(name)
            if process.poll() is None:
                process.kill()
            process.wait(5)

    def start_redis(self) -> None:
        data = self.tmp / "redis"
        data.mkdir(exist_ok=True)
        binary = require_binary("redis-server")
        args = [
            binary,
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(data),
        ]
        self.spawn("redis", [*args, "--appendonly", "no", "--maxmemory", "256mb"])
        wait_until(lambda: _answers_tcp(self.redis_port), timeout=10)

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
        response = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
        return response.json()

    def active_alerts(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.prometheus_url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]


def _answers_tcp(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _exporter_config(stack: Stack) -> str:
    return f"""
global: {{interval: 1s, timeout: 4s, jitter: 0}}
# The environment snapshot runs pip in the service's interpreter: its first run gives every series,
# and more runs would only load this small machine's CPUs (a cpu_saturated verdict pages).
collectors: {{environment: {{interval: 5m}}}}
services:
  - name: open-autoglm
    match: {{cmdline: '-m demo api --port {stack.api_port}'}}
    port: {stack.api_port}
  - name: vllm
    match: {{cmdline: '-m demo engine --port {stack.engine_port}'}}
    port: {stack.engine_port}
targets:
  - name: inference
    module: inference
    url: {stack.api_url}/inference
    service: open-autoglm
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
  trigger_after_failures: 3
  dumps: 3
  dump_interval: 0.3s
  cooldown: 5s
  directory: '{stack.tmp / "captures"}'
environment:
  baselines: {{}}
"""


def _fake_nvml(directory: Path, engine_pid: int) -> Path:
    """A `pynvml` module for the exporter: one H100 whose compute process is the demo engine."""
    directory.mkdir()
    (directory / "pynvml.py").write_text(
        f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml, FakeProcess, Scenario, gpu_uuid

# clocks held by the applications-clocks setting: a clock event, not a throttle (no alert)
_gpu = FakeGpu(gpu_uuid(0), clock_reasons=0x2, processes=[FakeProcess({engine_pid}, 30 * 1024**3)])
sys.modules[__name__] = FakeNvml(Scenario([_gpu]))
"""
    )
    return directory


def _start_alertmanager(stack: Stack, port: int) -> None:
    config = stack.tmp / "alertmanager.yml"
    config.write_text(alertmanager_config(stack.webhook.url))
    binary = require_binary("prometheus-alertmanager")
    args = [binary, f"--config.file={config}", f"--storage.path={stack.tmp / 'am-data'}"]
    stack.spawn(
        "alertmanager", [*args, f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    )
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/-/ready").status_code == 200, timeout=20)


def _start_prometheus(stack: Stack, port: int, alertmanager_port: int, exporter_port: int) -> None:
    rules = stack.tmp / "rules"
    rules.mkdir()
    for path in sorted((REPO / "alerts").glob("*.rules.yml")):
        (rules / path.name).write_text(shortened_rules(path.read_text()))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules / "*.rules.yml")],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": mixin_config.EXPORTER_JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
            }
        ],
    }
    path = stack.tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    binary = require_binary("prometheus")
    args = [binary, f"--config.file={path}", f"--storage.tsdb.path={stack.tmp / 'prom-data'}"]
    args += [f"--web.listen-address=127.0.0.1:{port}", "--rules.alert.resend-delay=1s"]
    stack.spawn("prometheus", args)
    wait_until(lambda: httpx.get(f"{stack.prometheus_url}/-/ready").status_code == 200, timeout=20)


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
        stack.start_redis()
        engine = stack.start_engine()
        stack.start_api()

        config = tmp_path / "autoglm.yml"
        config.write_text(_exporter_config(stack))
        fake = _fake_nvml(tmp_path / "fake-nvml", engine.pid)
        pythonpath = os.pathsep.join(filter(None, [str(fake), os.environ.get("PYTHONPATH")]))
        exporter = start_exporter(f"--config.file={config}", env={"PYTHONPATH": pythonpath})
        stack.processes["exporter"] = exporter.process

        _start_alertmanager(stack, alertmanager_port)
        _start_prometheus(stack, prometheus_port, alertmanager_port, exporter.port)
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
    for group in mixin_alerts.rule_groups():
        for rule in group["rules"]:
            if "record" in rule:
                queries[f"recording {rule['record']}"] = rule["expr"]
    return queries


def alert_selectors() -> dict[str, str]:
    """An alert's expression returns data only while it fires; its selectors must always match."""
    found = {}
    for alert in mixin_alerts.all_alerts():
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
        for where, expr in self.expressions.items():
            answer = self.stack.query(expr)
            if answer.get("status") != "success":
                self.errors[where] = f"{expr}: {answer.get('error')}"
            elif answer["data"]["result"]:
                self.with_data.add(where)

    def without_data(self) -> list[str]:
        missing = []
        for where, expr in self.expressions.items():
            if where in self.with_data or where.endswith(": the expression"):
                continue
            if any(name in expr for name in NEVER_HERE):
                continue
            missing.append(f"{where}: {expr}")
        return missing


# --- the test ------------------------------------------------------------------------------------------


def wait_for_alert(stack: Stack, name: str, status: str, within: float, **labels: str) -> dict[str, Any]:
    def arrived() -> dict[str, Any] | None:
        return stack.webhook.find(name, status, **labels)

    try:
        return wait_until(arrived, timeout=within, interval=0.25)
    except AssertionError as exc:
        seen = [(a["status"], a["labels"]) for a in stack.webhook.alerts()[-10:]]
        active = [(a["state"], a["labels"]) for a in stack.active_alerts()]
        raise AssertionError(
            f"{name} {labels} not {status} within {within}s; webhook got {seen}; active {active}"
        ) from exc


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[Stack], None]
    remove: Callable[[Stack], None]
    pages: list[tuple[str, dict[str, str]]]  # (alertname, labels) that must reach the webhook


def _restart_api(stack: Stack) -> None:
    stack.stop("api")
    stack.start_api()


def _restart_redis(stack: Stack) -> None:
    stack.start_redis()


FAULTS = [
    Fault(
        "the API hangs",
        lambda s: s.fault(s.api_url, "hang"),
        lambda s: s.fault(s.api_url, "none"),
        [
            (
                "AutoglmServiceNotAnswering",
                {"service": "open-autoglm", "target": "inference", "severity": "page"},
            ),
            ("AutoglmChainBroken", {"layer": "client", "reason": "not_answering"}),
        ],
    ),
    Fault(
        "the API process is gone (connection refused)",
        lambda s: s.stop("api"),
        lambda s: s.start_api(),
        [
            ("AutoglmServiceUnreachable", {"target": "inference", "reason": "connect_refused"}),
            ("AutoglmProcessMissing", {"service": "open-autoglm", "severity": "page"}),
            ("AutoglmChainBroken", {"layer": "network", "reason": "process_dead"}),
        ],
    ),
    Fault(
        "Redis is down",
        lambda s: s.stop("redis"),
        _restart_redis,
        [
            ("AutoglmRedisDown", {"redis": "redis", "severity": "page"}),
            ("AutoglmChainBroken", {"layer": "dependencies", "reason": "redis_down"}),
        ],
    ),
    Fault(
        "the engine stalls (its /health still 200)",
        lambda s: s.fault(s.engine_url, "stall"),
        lambda s: s.fault(s.engine_url, "none"),
        [("AutoglmEngineStalled", {"engine": "vllm", "severity": "page"})],
    ),
    Fault(
        "the API's threads deadlock",
        lambda s: s.fault(s.api_url, "deadlock"),
        _restart_api,
        [("AutoglmThreadsBlocked", {"service": "open-autoglm", "severity": "page"})],
    ),
    Fault(
        "a CUDA out-of-memory line in the error log",
        lambda s: s.fault(s.api_url, "oom"),
        lambda s: None,  # a log line cannot be taken back: the alert ends when it leaves the window
        [("AutoglmCudaOutOfMemory", {"log": "error", "pattern": "cuda_oom", "severity": "page"})],
    ),
]


def test_faults_page_with_the_broken_link_named_and_resolve(stack: Stack) -> None:
    ledger = ExpressionLedger(stack)

    # Healthy: the chain answers, Prometheus has scraped and evaluated a while, nothing pages.
    wait_until(lambda: _value(stack, "autoglm_diagnosis_healthy") == 1.0, timeout=40, interval=0.5)
    wait_until(lambda: _value(stack, 'count(up{job="autoglm-exporter"} == 1)') == 1.0, timeout=20)
    time.sleep(6)  # rules evaluated ~6 times with the short `for:` of 2 s: anything pending would fire
    assert [a["labels"] for a in stack.active_alerts()] == []
    assert stack.webhook.received() == []
    ledger.sample()

    for fault in FAULTS:
        fault.inject(stack)
        for name, labels in fault.pages:
            alert = wait_for_alert(stack, name, "firing", FIRE_WITHIN, **labels)
            annotations = alert["annotations"]
            assert annotations["runbook_url"].endswith("#" + name.lower()), fault.name
            assert "{{" not in annotations["summary"] + annotations["description"], annotations
            for key in NAMED_IN_THE_TEXT & labels.keys():
                assert labels[key] in annotations["summary"] + annotations["description"], (name, annotations)
        ledger.sample()
        fault.remove(stack)
        for name, labels in fault.pages:
            wait_for_alert(stack, name, "resolved", RESOLVE_WITHIN, **labels)

    # The exporter itself goes away: the page says so.
    stack.stop("exporter")
    wait_for_alert(stack, "AutoglmExporterDown", "firing", FIRE_WITHIN, job=mixin_config.EXPORTER_JOB)
    ledger.sample()

    assert ledger.errors == {}, "expressions Prometheus rejects:\n" + "\n".join(ledger.errors.values())
    assert ledger.without_data() == [], "expressions that never returned data:\n" + "\n".join(
        ledger.without_data()
    )


def _value(stack: Stack, expr: str) -> float | None:
    result = stack.query(expr)["data"]["result"]
    return float(result[0]["value"][1]) if result else None
