#!/usr/bin/env python3
"""/metrics with 200 concurrent scrapers: every connection accepted, none refused, none slow.

Starts autoglm-exporter (config `global: {interval: 1s}`, so the page is re-rendered every second
during the load) and prometheus-node-exporter (`--web.max-requests=0`, so it never answers 503) on
loopback, then:

1. Paced: one connection scraping every 0.1 s (the baseline p99), and 200 connections each scraping
   once a second (their starts spread over the second), for the same total time, in six alternating
   rounds. Target: 0 errors (connect, read, timeout, non-200), and the 200-scraper p99 within 2x
   of the baseline p99.
2. Closed loop: `wrk -c200` (200 connections, each sending its next scrape when the last answer
   arrived) against ours, then against node_exporter. Target: ours has 0 socket errors, timeouts
   and non-2xx responses, and serves >= 8x node_exporter's scrapes per second.

Every scrape sends `Accept-Encoding: gzip`, as Prometheus does. `--quick` runs each phase for a
few seconds with 50 connections: a smoke test of the script, not a measurement.
"""

import asyncio
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

from tests.support import free_port, start_logged, stop_process, wait_http_ok  # noqa: E402

WRK = "/usr/bin/wrk"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
TARGET_P99_FACTOR = 2.0
TARGET_RATIO = 8.0
SCRAPE_TIMEOUT = 5.0  # seconds; a slower answer is an error (wrk uses the same)
BASELINE_INTERVAL = 0.1  # seconds; one scraper this often gives enough samples for a p99
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\nUser-Agent: bench\r\n\r\n"


@dataclass
class Paced:
    """What the paced scrapers saw."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one whole response; its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    if match is None:
        raise ValueError("response without Content-Length")
    await reader.readexactly(int(match.group(1)))
    return status


async def _scraper(port: int, interval: float, start_in: float, until: float, seen: Paced) -> None:
    """One keep-alive connection scraping every `interval` seconds until `until` (monotonic)."""
    await asyncio.sleep(start_in)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), SCRAPE_TIMEOUT)
    except (TimeoutError, OSError):
        seen.error("connect")
        return
    next_at = time.monotonic()
    try:
        while next_at < until:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            started = time.perf_counter()
            try:
                writer.write(REQUEST)
                status = await asyncio.wait_for(_read_response(reader), SCRAPE_TIMEOUT)
            except TimeoutError:
                seen.error("timeout")
                return
            except (OSError, asyncio.IncompleteReadError, ValueError):
                seen.error("read")
                return
            if status != 200:
                seen.error(f"status {status}")
            else:
                seen.latencies.append(time.perf_counter() - started)
            next_at += interval
    finally:
        writer.close()


async def _paced(port: int, connections: int, interval: float, seconds: float, seen: Paced) -> None:
    until = time.monotonic() + seconds
    spread = [random.uniform(0, interval) for _ in range(connections)]
    await asyncio.gather(*(_scraper(port, interval, delay, until, seen) for delay in spread))


def paced_pair(port: int, connections: int, seconds: float, rounds: int) -> tuple[Paced, Paced]:
    """(one scraper, the crowd), measured in alternating rounds: the machine's other load, which
    comes and goes, then weighs on both alike."""
    baseline, crowd = Paced(), Paced()
    for _ in range(rounds):
        asyncio.run(_paced(port, 1, BASELINE_INTERVAL, seconds / rounds, baseline))
        asyncio.run(_paced(port, connections, 1.0, seconds / rounds, crowd))
    return baseline, crowd


def socket_error_count(wrk_errors: str) -> int:
    """wrk's 'connect 0, read 0, write 0, timeout 0' (or 'none') as one number."""
    return sum(int(n) for n in re.findall(r"\d+", wrk_errors))


def main() -> int:
    parser = c.arguments(__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=200)
    args = parser.parse_args()
    seconds, connections = (3.0, 50) if args.quick else (args.seconds, args.connections)

    wrk = c.require_binary(WRK)
    node = c.require_binary(NODE_EXPORTER)
    c.banner(f"scrape_concurrency: {connections} concurrent scrapers, ours vs prometheus-node-exporter")
    ours_proc = node_proc = None
    with tempfile.TemporaryDirectory(prefix="autoglm-bench-") as tmp:
        work = Path(tmp)
        config = work / "config.yml"
        config.write_text("global:\n  interval: 1s\n")
        ours_port, node_port = free_port(), free_port()
        while node_port == ours_port:
            node_port = free_port()
        try:
            ours_log, node_log = work / "ours.log", work / "node.log"
            ours_proc = start_logged(
                [
                    sys.executable,
                    "-m",
                    "autoglm_exporter",
                    f"--web.listen-address=127.0.0.1:{ours_port}",
                    f"--config.file={config}",
                ],
                ours_log,
            )
            node_proc = start_logged(
                [
                    node,
                    f"--web.listen-address=127.0.0.1:{node_port}",
                    "--web.max-requests=0",
                    "--log.level=error",
                ],
                node_log,
            )
            wait_http_ok(f"http://127.0.0.1:{ours_port}/-/ready", ours_proc, ours_log, timeout=30)
            wait_http_ok(f"http://127.0.0.1:{node_port}/metrics", node_proc, node_log, timeout=30)
            time.sleep(1.5)  # let our collectors publish a few times
            print(
                f"{len(os.sched_getaffinity(0))} CPUs shared by the scrapers and both exporters; "
                f"{seconds:g} s per phase; every scrape asks for gzip"
            )

            baseline, crowd = paced_pair(ours_port, connections, seconds, rounds=1 if args.quick else 6)
            for label, seen in (("1 scraper every 0.1 s", baseline), (f"{connections} scrapers 1/s", crowd)):
                p50, p99 = seen.percentile(0.5) * 1000, seen.percentile(0.99) * 1000
                slowest = max(seen.latencies, default=0) * 1000
                print(
                    f"[paced] {label:>22}: {len(seen.latencies)} scrapes, p50 {p50:.2f} ms, "
                    f"p99 {p99:.2f} ms, max {slowest:.2f} ms, errors {seen.errors or 0}",
                    flush=True,
                )

            closed: dict[str, c.WrkResult] = {}
            for label, port in (("ours", ours_port), ("node_exporter", node_port)):
                url = f"http://127.0.0.1:{port}/metrics"
                closed[label] = result = c.run_wrk(
                    wrk, url, 2, connections, int(seconds), ["Accept-Encoding: gzip"]
                )
                print(
                    f"[closed] {label:>14}: {result.requests_per_second:9.1f} scrapes/s, "
                    f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms "
                    f"({result.requests} scrapes, non-2xx {result.non_2xx}, "
                    f"socket errors: {result.socket_errors})",
                    flush=True,
                )
            for proc, name in ((ours_proc, "ours"), (node_proc, "node_exporter")):
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} died during the run (exit {proc.returncode})")
        finally:
            stop_process(ours_proc)
            stop_process(node_proc)

    print("-" * 78)
    p99_factor = crowd.percentile(0.99) / baseline.percentile(0.99)
    paced_ok = crowd.error_count == 0 and baseline.error_count == 0 and p99_factor <= TARGET_P99_FACTOR
    ours, peer = closed["ours"], closed["node_exporter"]
    ratio = ours.requests_per_second / peer.requests_per_second if peer.requests_per_second else float("inf")
    ours_errors = socket_error_count(ours.socket_errors) + ours.non_2xx
    closed_ok = ours_errors == 0 and ratio >= TARGET_RATIO
    print(
        c.verdict(
            "scrape_concurrency[paced]",
            paced_ok,
            f"{crowd.error_count} errors, p99 {p99_factor:.2f}x the one-scraper p99 "
            f"(target <= {TARGET_P99_FACTOR:g}x)",
        )
    )
    print(
        c.verdict(
            "scrape_concurrency[closed]",
            closed_ok,
            f"{ours_errors} socket errors/timeouts/non-2xx, {ratio:.1f}x node_exporter's scrapes/s "
            f"(target >= {TARGET_RATIO:g}x)",
        )
    )
    mode = "quick smoke run, not a measurement" if args.quick else f"{connections} connections, {seconds:g} s"
    print(c.verdict("scrape_concurrency", paced_ok and closed_ok, mode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
