"""The fleet at scale: many nodes (8 GPUs, 4 services each) scraped by one Prometheus with the shipped rules.

Records one node's /metrics from a real exporter (tests/fleetnode.py: the fake NVML with eight GPUs,
four demo engines as the services, one redis-server), then serves that page as N nodes from one
HTTP server, each node with its own GPU UUIDs and its own `instance` label. A real Prometheus
scrapes every node and evaluates the shipped rule files (alerts/*.rules.yml) at the shipped 10 s
interval. Once every node was scraped and every rule group evaluated a few times it reads the head
series, each rule group's last evaluation time and Prometheus' resident memory, at two fleet sizes
(a fresh Prometheus each): the cost per 100 nodes is the difference between the two sizes, so what
an empty Prometheus costs is left out.

Peer: the evaluation interval itself. PASS when one node's page is within its series budget
(tests/fleetnode.SERIES_BUDGET) and every rule group, at the larger size, evaluates in under a
tenth of the interval (so the rules fit many times that fleet before evaluations are missed).
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tempfile import TemporaryDirectory
from threading import Thread
from typing import Any
from urllib.parse import parse_qs, urlparse

import _common as c
import httpx
import yaml

from tests.fleetnode import GPUS, SERIES_BUDGET, SERVICES, node_page, series_count
from tests.support import free_port, start_logged, stop_process, wait_http_ok, wait_until

NAME = "fleet_scale"
FULL = {"sizes": (100, 500), "interval": 10, "evaluations": 3}
QUICK = {"sizes": (2, 4), "interval": 1, "evaluations": 2}
# Memory and series are read after this many evaluations of every group: enough for the rates
# (two scrapes) and the recording rules' own series; the head keeps growing samples, not series.


@dataclass
class Reading:
    nodes: int
    head_series: float
    rss_bytes: int
    group_seconds: dict[str, float]  # rule group -> its last evaluation's duration
    slowest_rules: list[tuple[str, float]]  # the three rules whose last evaluation took longest


def vary(page: str, node: int) -> bytes:
    """The page as node `node` would serve it: its GPUs have their own UUIDs."""
    return page.replace("-1111-2222-3333-", f"-{node:04x}-2222-3333-").encode()


class NodePages:
    """One HTTP server answering /metrics?node=I with node I's page (made once, then kept)."""

    def __init__(self, page: str) -> None:
        pages: dict[int, bytes] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                node = int(parse_qs(urlparse(self.path).query).get("node", ["0"])[0])
                body = pages.get(node) or pages.setdefault(node, vary(page, node))
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # Prometheus gave up on the scrape (its timeout): it counts that
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def prometheus_config(pages_port: int, nodes: int, interval: int) -> dict[str, Any]:
    """Every node a target of its own (`instance` node-NNN:9877) on the one page server."""
    groups = [
        {
            "targets": [f"127.0.0.1:{pages_port}"],
            "labels": {"instance": f"node-{node:03d}:9877", "__param_node": str(node)},
        }
        for node in range(nodes)
    ]
    return {
        "global": {
            "scrape_interval": f"{interval}s",
            "scrape_timeout": f"{interval}s",
            "evaluation_interval": f"{interval}s",
        },
        "rule_files": [str(c.ROOT / "alerts" / "*.rules.yml")],
        "scrape_configs": [{"job_name": "autoglm-exporter", "static_configs": groups}],
    }


def measure(workdir: Path, pages_port: int, nodes: int, interval: int, evaluations: int) -> Reading:
    """A fresh Prometheus scraping `nodes` nodes; its figures after `evaluations` rule evaluations."""
    binary = c.require_binary("prometheus")
    data = workdir / f"prometheus-{nodes}"
    config = data / "prometheus.yml"
    data.mkdir()
    config.write_text(yaml.safe_dump(prometheus_config(pages_port, nodes, interval)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [binary, f"--config.file={config}", f"--storage.tsdb.path={data / 'tsdb'}"]
    log = data / "prometheus.log"
    process = start_logged([*args, f"--web.listen-address=127.0.0.1:{port}"], log)
    try:
        wait_http_ok(f"{url}/-/ready", process, log, timeout=60)

        def value(expr: str) -> list[dict[str, Any]]:
            return httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=30).json()["data"][
                "result"
            ]

        def all_up() -> bool:
            up = value('count(up{job="autoglm-exporter"} == 1)')
            return bool(up) and int(float(up[0]["value"][1])) == nodes

        def rule_groups() -> list[dict[str, Any]]:
            return list(httpx.get(f"{url}/api/v1/rules", timeout=30).json()["data"]["groups"])

        def evaluated_since(moment: float) -> bool:
            """Every rule group's last evaluation began after `moment` (seconds since the epoch)."""
            groups = rule_groups()
            return bool(groups) and all(_epoch(g["lastEvaluation"]) > moment for g in groups)

        wait_until(all_up, timeout=60 + 3 * interval, interval=1)
        # every node scraped at least twice more (rates) and every group evaluated over that
        settled = time.time() + (evaluations - 1) * interval
        try:
            wait_until(lambda: evaluated_since(settled), timeout=60 + 2 * interval * evaluations, interval=1)
        except AssertionError:  # a group slower than that: its last finished evaluation says how slow
            print(f"  {nodes} nodes: a rule group was not evaluated again within the wait", flush=True)
        stats = httpx.get(f"{url}/api/v1/status/tsdb", timeout=30).json()["data"]["headStats"]
        groups = rule_groups()
        return Reading(
            nodes,
            float(stats["numSeries"]),
            c.pid_stat(process.pid).rss_bytes,
            {g["name"]: float(g["evaluationTime"]) for g in groups},
            sorted(
                ((r["name"], float(r["evaluationTime"])) for g in groups for r in g["rules"]),
                key=lambda rule: -rule[1],
            )[:3],
        )
    finally:
        stop_process(process)


def _epoch(timestamp: str) -> float:
    """Prometheus' RFC 3339 time (nanoseconds, Z) as seconds since the epoch."""
    whole, _, fraction = timestamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return seconds + float(f"0.{fraction or 0}")


def per_hundred(small: Reading, large: Reading, value: float, small_value: float) -> float:
    return (value - small_value) / (large.nodes - small.nodes) * 100


def show(reading: Reading) -> None:
    slowest = max(reading.group_seconds.items(), key=lambda item: item[1])
    rules = sum(reading.group_seconds.values())
    print(
        f"{reading.nodes:4d} nodes: {reading.head_series:9.0f} head series, "
        f"{reading.rss_bytes / 2**20:7.0f} MiB resident, rules {rules:.3f} s "
        f"per evaluation (slowest {slowest[0]}: {slowest[1]:.3f} s)",
        flush=True,
    )
    rules_text = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in reading.slowest_rules)
    print(f"       slowest rules: {rules_text}")


def main() -> None:
    args = c.arguments(__doc__).parse_args()
    params = QUICK if args.quick else FULL
    c.banner(f"The fleet at scale: {' and '.join(map(str, params['sizes']))} nodes", quick=args.quick)
    with TemporaryDirectory(prefix="fleet-scale-") as tmp:
        workdir = Path(tmp)
        started = time.monotonic()
        page = node_page(workdir / "node")
        took = time.monotonic() - started
        node_series = series_count(page)
        print(
            f"one node ({GPUS} GPUs, {SERVICES} services): {node_series} series, {len(page) / 1024:.0f} KiB"
        )
        print(f"  (recorded from a real exporter in {took:.0f} s; budget {SERIES_BUDGET})", flush=True)
        pages = NodePages(page)
        readings = []
        try:
            for nodes in params["sizes"]:
                reading = measure(workdir, pages.port, nodes, params["interval"], params["evaluations"])
                readings.append(reading)
                show(reading)
        finally:
            pages.close()
    small, large = readings
    series = per_hundred(small, large, large.head_series, small.head_series)
    memory = per_hundred(small, large, large.rss_bytes, small.rss_bytes)
    seconds = per_hundred(small, large, sum(large.group_seconds.values()), sum(small.group_seconds.values()))
    print(
        f"per 100 nodes: {series:.0f} head series ({series / 100:.0f} a node), {memory / 2**20:.0f} MiB "
        f"resident, {seconds * 1000:.0f} ms of rule evaluation per {params['interval']} s interval"
    )
    slowest_group = max(large.group_seconds.values())
    within_budget = node_series <= SERIES_BUDGET
    fast_enough = slowest_group < params["interval"] / 10
    print(
        c.verdict(
            NAME,
            within_budget and fast_enough,
            f"{node_series} series a node (budget {SERIES_BUDGET}); slowest rule group at "
            f"{large.nodes} nodes {slowest_group:.3f} s of a {params['interval']} s interval (at most 1/10)",
        )
    )


if __name__ == "__main__":
    main()
