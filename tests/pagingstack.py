"""The paging path of real components, shared by the end-to-end tests (one node, a fleet).

Processes started and stopped by name with their logs in the test's directory; a redis-server; an
Alertmanager with the routing and a Prometheus with the rules mixin/ generates, both at the tests'
time scale (mixin.config.time_scale: every `for:`, window, objective and Alertmanager wait
multiplied by TIME_SCALE); a fake `pynvml` module for an exporter; and the window of notifications
one incident got, with which of them page.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from mixin import alertmanager as mixin_alertmanager
from mixin import alerts as mixin_alerts
from mixin import config as mixin_config

from .alertreceiver import WebhookReceiver
from .conftest import REPO, require_binary, stop_process, wait_until
from .support import START_WITHIN

TIME_SCALE = 1 / 20  # the one factor every shipped duration is multiplied by


@dataclass
class Processes:
    """Child processes by name; each writes its output to TMP/NAME.log."""

    tmp: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, kw_only=True)

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


def answers_tcp(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_redis(processes: Processes, port: int, name: str = "redis") -> None:
    data = processes.tmp / name
    data.mkdir(exist_ok=True)
    args = [require_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    args += ["--save", "", "--dir", str(data), "--appendonly", "no", "--maxmemory", "256mb"]
    processes.spawn(name, args)
    wait_until(lambda: answers_tcp(port), timeout=START_WITHIN)


def start_alertmanager(processes: Processes, port: int, webhook: WebhookReceiver) -> None:
    """The shipped routing and inhibition (every receiver posting to `webhook`), at TIME_SCALE."""
    with mixin_config.time_scale(TIME_SCALE):
        config = mixin_alertmanager.routing(webhook.url)
    path = processes.tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    binary = require_binary("prometheus-alertmanager")
    args = [binary, f"--config.file={path}", f"--storage.path={processes.tmp / 'am-data'}"]
    processes.spawn(
        "alertmanager", [*args, f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    )
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/-/ready").status_code == 200, timeout=START_WITHIN)


def start_prometheus(
    processes: Processes, port: int, alertmanager_port: int, targets: dict[str, list[int]]
) -> None:
    """The shipped rules at TIME_SCALE, scraping and evaluating every second; `targets`: the
    127.0.0.1 ports of each scrape job (the exporter's job is mixin.config.EXPORTER_JOB)."""
    rules = processes.tmp / "rules"
    rules.mkdir()
    with mixin_config.time_scale(TIME_SCALE):
        files = mixin_alerts.rule_files()
    for name, content in files.items():
        (rules / Path(name).name).write_text(content)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules / "*.rules.yml")],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        },
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}
            for job, ports in targets.items()
        ],
    }
    path = processes.tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    binary = require_binary("prometheus")
    args = [binary, f"--config.file={path}", f"--storage.tsdb.path={processes.tmp / 'prom-data'}"]
    args += [f"--web.listen-address=127.0.0.1:{port}", "--rules.alert.resend-delay=1s"]
    processes.spawn("prometheus", args)
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/-/ready").status_code == 200, timeout=START_WITHIN)


class PrometheusApi:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        return response.json()

    def value(self, expr: str) -> float | None:
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def alerts(self, state: str, severity: str = "critical") -> list[dict[str, Any]]:
        """Prometheus' alerts in a state (pending, firing) of a severity, the Watchdog left out."""
        found = httpx.get(f"{self.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        wanted = mixin_config.SEVERITY[severity]
        return [a for a in found if a["state"] == state and a["labels"].get("severity") == wanted]


def fake_nvml(directory: Path, engine_pid: int, control: Path | None = None) -> Path:
    """A `pynvml` module for one exporter: one H100 whose compute process is `engine_pid`.

    With `control`, the GPU's hardware faults are switched from outside: the file `control/lost`
    existing makes the GPU fall off the bus; each file `control/xid-N` is one XID N event (taken
    once, then deleted)."""
    directory.mkdir()
    watch = ""
    if control is not None:
        watch = f"""
import os, threading, time

def _watch(control={str(control)!r}):
    while True:
        _gpu.lost = os.path.exists(os.path.join(control, "lost"))
        for name in sorted(os.listdir(control)):
            if name.startswith("xid-"):
                os.unlink(os.path.join(control, name))
                _nvml.push_xid(0, int(name[4:]))
        time.sleep(0.1)

threading.Thread(target=_watch, daemon=True).start()
"""
    (directory / "pynvml.py").write_text(
        f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml, FakeProcess, Scenario, gpu_uuid

# clocks held by the applications-clocks setting: a clock event, not a throttle (no alert)
_gpu = FakeGpu(gpu_uuid(0), clock_reasons=0x2, processes=[FakeProcess({engine_pid}, 30 * 1024**3)])
_nvml = FakeNvml(Scenario([_gpu]))
{watch}
sys.modules[__name__] = _nvml
"""
    )
    return directory


# --- what an incident got ---------------------------------------------------------------------------


def critical(notification: dict[str, Any]) -> bool:
    return notification["commonLabels"].get("severity") == mixin_config.SEVERITY["critical"]


def epoch(timestamp: str) -> float:
    """Alertmanager's RFC 3339 time (nanoseconds, Z or an offset) as seconds since the epoch."""
    whole, _, rest = timestamp.partition(".")
    fraction = re.match(r"\d*", rest).group(0) if rest else ""  # type: ignore[union-attr]
    zone = rest[len(fraction) :] if rest else timestamp[19:]
    stamp = datetime.fromisoformat(whole[:19] + (zone.replace("Z", "+00:00") or "+00:00"))
    return stamp.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


@dataclass
class Incident:
    """What the webhook received from a fault's injection until the next one."""

    fault: str
    started: float  # time.time() of the injection
    first_index: int  # the webhook's first notification of the incident
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def update(self, webhook: WebhookReceiver) -> None:
        self.notifications = webhook.received()[self.first_index :]

    def pages(self) -> list[dict[str, Any]]:
        """The critical notifications that announce something of this incident: an alert that began
        firing after the fault was injected (a group of the incident before may still re-send or
        resolve its own alerts meanwhile)."""
        return [n for n in self.notifications if critical(n) and self.new_alerts(n)]

    def new_alerts(self, notification: dict[str, Any]) -> list[str]:
        """Names of the firing alerts of a notification that began firing during this incident."""
        return [
            a["labels"]["alertname"]
            for a in notification["alerts"]
            if a["status"] == "firing" and epoch(a["startsAt"]) >= self.started - 1
        ]

    def first_page(self) -> dict[str, Any] | None:
        return next(iter(self.pages()), None)

    def summary(self) -> str:
        pages = self.pages()
        groups = sorted({json.dumps(n["groupLabels"], sort_keys=True) for n in pages})
        lines = [f"{self.fault}: {len(pages)} page(s) in {len(groups)} group(s) {' '.join(groups)}"]
        for n in self.notifications:
            if n["receiver"] == "watchdog":
                continue
            names = sorted(
                {
                    f"{a['labels']['alertname']}({a['status']}"
                    + (f" +{epoch(a['startsAt']) - self.started:.0f}s)" if a["status"] == "firing" else ")")
                    for a in n["alerts"]
                }
            )
            new = " NEW" if n in pages else ""
            lines.append(
                f"  {n['receiver']} {json.dumps(n['groupLabels'])} {n['status']}{new}: {', '.join(names)}"
            )
        return "\n".join(lines)
