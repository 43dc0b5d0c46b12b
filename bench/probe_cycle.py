#!/usr/bin/env python3
"""Probe cycle cost: 50 targets that never answer, probed concurrently vs one after another.

A hung target must cost its own timeout, not hold the others back: the probe collector runs all
targets on one event loop, so a cycle should take about max(timeout), where probing them in turn
takes the sum. Peer: the same 50 probes run one after the other, in this process, in this run.
Targets: the concurrent cycle costs at most 2x one timeout, at least 10x less than the peer, and
every probe reports read_timeout (connected, no answer). --quick: 20 targets, 0.1 s timeout.

The hung server is a listening socket nobody accepts from: the kernel completes each handshake
and queues the request, and no reply ever comes. No thread of it runs in this process, where it
would compete for the GIL with the event loop being measured (a thread-per-connection server
here made every probe miss its connect deadline on a busy machine). Its backlog holds every
connection of the run.
"""

import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import _common as c

from autoglm_exporter.collectors.probe import ProbeCollector
from autoglm_exporter.config import ProbeTarget


@dataclass(frozen=True)
class Settings:
    targets: int
    timeout: float  # of each probe, connect and total


FULL = Settings(targets=50, timeout=0.2)
QUICK = Settings(targets=20, timeout=0.1)


def silent_listener(backlog: int) -> socket.socket:
    """A socket on 127.0.0.1 that accepts connections in the kernel and never answers."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    if somaxconn < backlog:
        sys.exit(f"bench cannot run: net.core.somaxconn is {somaxconn}, the run needs a backlog of {backlog}")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    return listener


def main() -> int:
    args = c.arguments(__doc__).parse_args()
    settings = QUICK if args.quick else FULL
    c.banner(
        f"probe_cycle: {settings.targets} never-answering targets, timeout {settings.timeout:g}s each",
        args.quick,
    )
    connections = 2 * settings.targets + 1  # the concurrent cycle, the peer's, the warm-up
    with silent_listener(connections) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        targets = tuple(
            ProbeTarget(f"t{i}", "http", url, timeout=settings.timeout, connect_timeout=settings.timeout)
            for i in range(settings.targets)
        )
        # One untimed probe first: what a daemon builds once (the CA store, the resolver's threads,
        # lazy imports) is not part of a cycle.
        ProbeCollector(targets[:1]).collect()
        started = time.monotonic()
        facts = ProbeCollector(targets).collect().facts.targets
        concurrent = time.monotonic() - started
        reasons = sorted({fact.outcome.reason for fact in facts.values()})
        started = time.monotonic()
        for target in targets:
            ProbeCollector((target,)).collect()
        sequential = time.monotonic() - started
    speedup = sequential / concurrent
    print(f"ours (one cycle, concurrent):   {concurrent:7.3f} s   reasons: {reasons}")
    print(f"peer (the same probes in turn): {sequential:7.3f} s")
    print(f"ratio peer/ours = {speedup:.1f}x; ours / one timeout = {concurrent / settings.timeout:.2f}")
    ok = concurrent <= 2 * settings.timeout and speedup >= 10 and reasons == ["read_timeout"]
    detail = f"{concurrent:.3f} s for {settings.targets} targets, {speedup:.1f}x faster, reasons {reasons}"
    print(c.verdict("probe_cycle", ok, detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
