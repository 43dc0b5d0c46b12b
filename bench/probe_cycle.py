"""Probe cycle cost: 50 targets that never answer, probed concurrently vs one after another.

A hung target must cost its own timeout, not hold the others back: the probe collector runs all
targets on one event loop, so a cycle should take about max(timeout), where probing them in turn
takes the sum. Peer: the same 50 probes run one after the other, in this process, in this run.
Target: the concurrent cycle costs at most 2x one timeout, and at least 10x less than the peer.
"""

from __future__ import annotations

import sys
import time

from _common import ROOT, banner, ensure_venv_python, verdict

ensure_venv_python()
sys.path.insert(0, str(ROOT))

from autoglm_exporter.collectors.probe import ProbeCollector  # noqa: E402
from autoglm_exporter.config import ProbeTarget  # noqa: E402
from tests import faultservers  # noqa: E402

TARGETS = 50
TIMEOUT = 0.2


def main() -> None:
    banner(f"probe_cycle: {TARGETS} never-answering targets, timeout {TIMEOUT:g}s each")
    with faultservers.FaultServer(faultservers.never_answer) as server:
        targets = tuple(
            ProbeTarget(f"t{i}", "http", f"{server.url}/", timeout=TIMEOUT, connect_timeout=TIMEOUT)
            for i in range(TARGETS)
        )
        started = time.monotonic()
        facts = ProbeCollector(targets).collect().facts.targets
        concurrent = time.monotonic() - started
        reasons = {fact.outcome.reason for fact in facts.values()}
        started = time.monotonic()
        for target in targets:
            ProbeCollector((target,)).collect()
        sequential = time.monotonic() - started
    print(f"ours (one cycle, concurrent): {concurrent:7.3f} s   reasons: {sorted(reasons)}")
    print(f"peer (the same probes in turn): {sequential:7.3f} s")
    print(
        f"ratio peer/ours = {sequential / concurrent:.1f}x; ours / one timeout = {concurrent / TIMEOUT:.2f}"
    )
    ok = concurrent <= 2 * TIMEOUT and sequential / concurrent >= 10 and reasons == {"read_timeout"}
    print(
        verdict(
            "probe_cycle",
            ok,
            f"{concurrent:.3f} s for {TARGETS} targets, {sequential / concurrent:.1f}x faster",
        )
    )


if __name__ == "__main__":
    main()
