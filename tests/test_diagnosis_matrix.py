"""The fault-matrix benchmark runs: its quick mode gets through its faults to a PASS or FAIL line.

Whether the verdicts meet their targets is the benchmark's own finding (bench/diagnosis_matrix.py,
run by `make bench`), not this test's: it only checks that the harness itself works.
"""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def test_quick_mode_runs_its_faults_to_a_final_line() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "diagnosis_matrix.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,  # a guard against a hung harness, not a speed target
        cwd=REPO,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert lines and lines[-1].startswith(("PASS: diagnosis_matrix:", "FAIL: diagnosis_matrix:")), lines[-5:]
    for fault in ("non_json", "hung_accept", "cpu_spin"):
        rows = [line for line in lines if line.startswith(fault + " ")]
        assert len(rows) == 1 and "could not run" not in rows[0], rows
