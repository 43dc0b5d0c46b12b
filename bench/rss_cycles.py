#!/usr/bin/env python3
"""Benchmark 3: resident memory after 10,000 collection cycles.

One process builds a Store and, as the daemon does (collectors.build_collectors, the other
collectors switched off as --no-collector.NAME would), a SystemCollector and a ProcessCollector
(the default config's services plus one matching a real child process with 64 threads): only the
modules of those two are imported. It wraps each in a CollectorRunner
and calls run_once() on both, 10,000 times, rendering the store every 10 cycles as scrapes would
(plain text, and gzip with Prometheus' Accept header). VmRSS is read after the warm-up (cycle
1,000) and at the end. Targets: final RSS <= 50 MB and growth from cycle 1,000 to 10,000 < 1 MB.
The peer is the same process's RSS before the first cycle (everything imported and built).

Options: --cycles N (default 10000), --warmup N (default 1000), --max-seconds S (default 600;
stops early and reports the targets as not measured when reached). --quick: 200 cycles, 100 of
them warm-up, a child of 8 threads.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import _common as c

from autoglm_exporter.collectors import build_collectors, collector_names
from autoglm_exporter.config import DEFAULT_SERVICES, ProcessMatch, ServiceConfig, default_config
from autoglm_exporter.core.runner import CollectorRunner
from autoglm_exporter.core.store import Store
from tests.support import stop_process

MB = 1_000_000
TARGET_FINAL_BYTES = 50 * MB
TARGET_GROWTH_BYTES = 1 * MB
RENDER_EVERY = 10
MEASURED = ("system", "process")
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"
)


def main() -> int:
    parser = c.arguments(__doc__)
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()
    if args.quick:
        args.cycles, args.warmup = 200, 100
    cycles, warmup = args.cycles, min(args.warmup, args.cycles)
    report_every = max(1, min(1000, cycles // 10))
    threads = 8 if args.quick else 64
    c.banner(
        f"rss_cycles: RSS over {cycles} cycles of system + process collectors through CollectorRunner",
        args.quick,
    )
    marker = f"autoglm_bench_rss_{os.getpid()}"
    child = None
    checkpoints: list[tuple[int, int]] = []
    failures = 0
    rss_warm = None
    done = 0
    with tempfile.TemporaryDirectory(prefix="autoglm-bench-") as tmp:
        try:
            child = c.start_threaded_child(Path(tmp), marker, threads)
            services = (*DEFAULT_SERVICES, ServiceConfig("bench", ProcessMatch(cmdline=re.escape(marker))))
            store = Store()
            config = dataclasses.replace(default_config(), services=services)
            only = {name: name in MEASURED for name in collector_names()}
            runners = [CollectorRunner(c, store, timeout=10.0) for c in build_collectors(config, only)]
            store.set_collectors(r.name for r in runners)
            gc.collect()
            rss_start = c.rss_bytes()
            print(
                f"service: pid {child.pid} with {c.thread_count(child.pid)} threads; services: "
                f"{', '.join(s.name for s in services)}; {c.count_processes()[0]} processes on the machine"
            )
            print(f"collector modules imported: {', '.join(_collector_modules())}")
            print(f"RSS before the first cycle: {rss_start / MB:.2f} MB", flush=True)
            started = time.monotonic()
            deadline = started + args.max_seconds
            pages = 0
            for cycle in range(1, cycles + 1):
                for runner in runners:
                    if not runner.run_once():
                        failures += 1
                if cycle % RENDER_EVERY == 0:
                    store.render()
                    store.render(PROMETHEUS_ACCEPT, compressed=True)
                    pages += 2
                done = cycle
                if cycle == warmup:
                    rss_warm = c.rss_bytes()
                if cycle % report_every == 0:
                    rss = c.rss_bytes()
                    checkpoints.append((cycle, rss))
                    rate = cycle / (time.monotonic() - started)
                    print(
                        f"  cycle {cycle:6d}: RSS {rss / MB:7.2f} MB, {rate:7.1f} cycles/s, "
                        f"eta {(cycles - cycle) / rate:5.0f} s",
                        flush=True,
                    )
                if time.monotonic() > deadline:
                    print(f"  stopped at cycle {cycle}: --max-seconds {args.max_seconds:g} reached")
                    break
            elapsed = time.monotonic() - started
            rss_end = c.rss_bytes()
            facts = store.facts()["process"].services["bench"]
            if facts.pids != [child.pid]:
                failures += 1
                print(f"  WARNING: the bench service matched {facts.pids}, expected [{child.pid}]")
        finally:
            if child is not None:
                stop_process(child)

    print("-" * 78)
    print(
        f"cycles run: {done} (each = one run_once() of both runners), {pages} pages rendered, "
        f"{failures} failed runs, {elapsed:.1f} s"
    )
    print(f"cycles/second: {done / elapsed:.1f}  ({elapsed / max(done, 1) * 1000:.2f} ms wall per cycle)")
    print(f"RSS before cycle 1 (peer baseline): {rss_start / MB:.2f} MB")
    complete = done == cycles and rss_warm is not None
    if rss_warm is not None:
        print(f"RSS at cycle {warmup}: {rss_warm / MB:.2f} MB")
    print(
        f"RSS at cycle {done}: {rss_end / MB:.2f} MB  (ratio final/before-first-cycle = "
        f"{rss_end / rss_start:.3f})"
    )
    growth = rss_end - rss_warm if rss_warm is not None else None
    if growth is not None:
        print(f"growth cycle {warmup} -> {done}: {growth / 1024:+.0f} KiB ({growth / MB:+.3f} MB)")
    final_ok = rss_end <= TARGET_FINAL_BYTES
    growth_ok = growth is not None and growth < TARGET_GROWTH_BYTES
    print(
        c.verdict(
            "rss_cycles final",
            final_ok,
            f"{rss_end / MB:.2f} MB {'<=' if final_ok else '>'} {TARGET_FINAL_BYTES / MB:g} MB",
        )
    )
    print(
        c.verdict(
            "rss_cycles growth",
            growth_ok,
            "not measured"
            if growth is None
            else f"{growth / MB:+.3f} MB {'<' if growth_ok else '>='} {TARGET_GROWTH_BYTES / MB:g} MB",
        )
    )
    ok = final_ok and growth_ok and complete and failures == 0
    why = "" if complete else f" (INCOMPLETE: {done}/{cycles} cycles)"
    why += "" if failures == 0 else f" ({failures} failed runs)"
    print(
        c.verdict(
            "rss_cycles",
            ok,
            f"final {rss_end / MB:.2f} MB, growth "
            f"{'n/a' if growth is None else f'{growth / MB:+.3f} MB'}{why}",
        )
    )
    return 0


def _collector_modules() -> list[str]:
    """The collector modules this process imported (the disabled collectors' must be absent)."""
    prefix = "autoglm_exporter.collectors."
    return sorted(name.removeprefix(prefix) for name in sys.modules if name.startswith(prefix))


if __name__ == "__main__":
    sys.exit(main())
