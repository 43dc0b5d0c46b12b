"""The fleet at scale: one node's series budget, and the long-term path for many Prometheus servers.

- One node of eight GPUs and four services (tests/fleetnode.py) stays within its series budget:
  the README's capacity figures (bench/fleet_scale.py) are per node of that shape.
- Prometheus remote-writes what it scrapes to VictoriaMetrics, and vmalert evaluates the shipped
  recording rules there: the same series with the same labels as Prometheus' own evaluation, so
  dashboards and autoscalers can read a store that many Prometheus servers write to. (The alerting
  rules stay with each Prometheus: Debian's vmalert 1.79 does not know their `keep_firing_for`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

from mixin.rules import recording_rules

from .conftest import REPO, free_port, require_binary, wait_until
from .fleetnode import GPUS, SERIES_BUDGET, SERVICES, node_page, series_count
from .pagingstack import Processes
from .support import wait_http_ok

RECORDING_FILE = REPO / "alerts" / "autoglm-recording.rules.yml"
REMOTE_WRITE = REPO / "deploy" / "victoriametrics" / "remote-write.yml"


def test_one_node_of_eight_gpus_and_four_services_stays_within_its_series_budget(tmp_path: Path) -> None:
    page = node_page(tmp_path)
    count = series_count(page)
    # the page is a whole node: every GPU and every service is in it
    assert page.count("autoglm_gpu_info{") == GPUS
    assert page.count("autoglm_process_up{") == SERVICES
    assert count <= SERIES_BUDGET, f"one node has {count} series, over its budget of {SERIES_BUDGET}"


def _shipped_remote_write(url: str) -> list[dict[str, Any]]:
    """deploy/victoriametrics/remote-write.yml's block, pointed at `url`, sending every second."""
    block = yaml.safe_load(REMOTE_WRITE.read_text())["remote_write"]
    assert len(block) == 1
    return [{**block[0], "url": url, "queue_config": {"batch_send_deadline": "1s"}}]


def _results(url: str, expr: str) -> set[tuple[tuple[str, str], ...]]:
    """The label sets an instant query returns."""
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    return {tuple(sorted(r["metric"].items())) for r in answer["data"]["result"]}


def _exporter_config(tmp: Path, redis_port: int, child_marker: str) -> Path:
    config = {
        "global": {"interval": "1s", "timeout": "4s", "jitter": 0},
        "collectors": {"environment": {"enabled": False}},
        "services": [
            {"name": "api", "match": {"cmdline": child_marker}, "depends_on": ["redis"]},
        ],
        "targets": [],
        "redis": [{"name": "redis", "address": f"127.0.0.1:{redis_port}", "timeout": "1s"}],
        "engines": [],
        "logs": [],
        "forensics": {"directory": str(tmp / "captures")},
    }
    path = tmp / "exporter.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_recording_rules_evaluate_in_victoriametrics_fed_by_remote_write(
    tmp_path: Path, start_exporter: Any, redis_server: Any, child_processes: Any
) -> None:
    redis = redis_server()
    marker = "fleet-longterm-service"
    child_processes("import sys, time\nwhile True: time.sleep(1)", marker)
    exporter = start_exporter(f"--config.file={_exporter_config(tmp_path, redis.port, marker)}")
    processes = Processes(tmp_path)
    try:
        vm_port, vmalert_port, prometheus_port = free_port(), free_port(), free_port()
        vm_url, prometheus_url = f"http://127.0.0.1:{vm_port}", f"http://127.0.0.1:{prometheus_port}"
        processes.spawn(
            "victoria-metrics",
            [
                require_binary("victoria-metrics"),
                f"-storageDataPath={tmp_path / 'vm-data'}",
                f"-httpListenAddr=127.0.0.1:{vm_port}",
                "-search.latencyOffset=1s",  # show a point a second after it arrived, not 30 s
                "-search.disableCache",
            ],
        )
        wait_http_ok(
            f"{vm_url}/health", processes.processes["victoria-metrics"], tmp_path / "victoria-metrics.log"
        )
        # Prometheus with the shipped remote_write block: raw series to the store, recorded ones kept.
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RECORDING_FILE)],
            "scrape_configs": [
                {
                    "job_name": "autoglm-exporter",
                    "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}],
                }
            ],
            "remote_write": _shipped_remote_write(f"{vm_url}/api/v1/write"),
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus_args = [
            require_binary("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ]
        processes.spawn("prometheus", prometheus_args)
        prometheus_log = tmp_path / "prometheus.log"
        wait_http_ok(f"{prometheus_url}/-/ready", processes.processes["prometheus"], prometheus_log)
        vmalert_args = [
            require_binary("vmalert"),
            f"-rule={RECORDING_FILE}",
            f"-datasource.url={vm_url}",
            f"-remoteWrite.url={vm_url}",
            "-evaluationInterval=1s",
            f"-httpListenAddr=127.0.0.1:{vmalert_port}",
        ]
        processes.spawn("vmalert", vmalert_args)

        # Wait until Prometheus' own evaluation has every recording rule that can have data here
        # (the GPU, engine and probe ones cannot), then until VictoriaMetrics has the same.
        names = [name for name, _ in recording_rules()]
        wanted = {
            "instance_dependency:autoglm_affected_service:info",
            "instance_dependency:autoglm_sole_service:info",
            "instance:autoglm_system_context_switches_per_cpu:rate5m",  # a rate, over a join
            "instance_service:autoglm_process_cpu_seconds:rate5m",
        }

        def prometheus_has_them() -> dict[str, set[tuple[tuple[str, str], ...]]]:
            found = {name: _results(prometheus_url, name) for name in names}
            return found if all(found[name] for name in wanted) else {}

        expected = wait_until(prometheus_has_them, timeout=60, interval=0.5)
        edges = expected["instance_dependency:autoglm_affected_service:info"]
        assert any(("dependency", "redis") in labels and ("service", "api") in labels for labels in edges)

        def store_has_them() -> bool:
            return all(_results(vm_url, name) == series for name, series in expected.items() if series)

        try:
            wait_until(store_has_them, timeout=60, interval=0.5)
        except AssertionError:
            differ = {n: (_results(vm_url, n), s) for n, s in expected.items() if _results(vm_url, n) != s}
            vmalert = (tmp_path / "vmalert.log").read_text(errors="replace")[-2000:]
            raise AssertionError(
                f"VictoriaMetrics differs from Prometheus: {differ}\nvmalert: {vmalert}"
            ) from None
        # the raw series came by remote write, not by a scrape of VictoriaMetrics' own
        assert _results(vm_url, 'autoglm_redis_up{job="autoglm-exporter"}')
    finally:
        processes.stop_all()
