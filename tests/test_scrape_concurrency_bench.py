"""bench/scrape_concurrency.py runs end to end in its quick mode (its figures are for `make bench`)."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO, require_binary


def test_the_quick_run_ends_with_its_verdict_line() -> None:
    require_binary("wrk")
    require_binary("prometheus-node-exporter")
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "scrape_concurrency.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith(("PASS: scrape_concurrency:", "FAIL: scrape_concurrency:")), run.stdout
    assert "[closed]           ours:" in run.stdout and "[paced]" in run.stdout
