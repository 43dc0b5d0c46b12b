"""The fault-matrix benchmark runs: its quick mode, and its real-engine mode on one fault of the
real vLLM, get through their faults to a PASS or FAIL line.

Whether the verdicts meet their targets is the benchmark's own finding (bench/diagnosis_matrix.py,
run by `make bench`), not this test's: it only checks that the harness itself works.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO
from .vllm_harness import STARTUP_TIMEOUT, missing


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


@pytest.mark.slow
@pytest.mark.real_engine
@pytest.mark.timeout(STARTUP_TIMEOUT + 900)
def test_real_engine_mode_runs_a_fault_of_the_real_vllm_to_a_final_line() -> None:
    reason = missing()
    assert reason is None, f"{reason}: run `make test`, which installs the real vLLM"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "diagnosis_matrix.py"),
            "--engine",
            "real",
            "--faults",
            "unserved_model",
        ],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT + 600,  # vLLM's start, then one fault held for a minute
        cwd=REPO,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the real vLLM" in lines[1], lines[:3]
    assert lines[-1].startswith(("PASS: diagnosis_matrix:", "FAIL: diagnosis_matrix:")), lines[-5:]
    rows = [line for line in lines if line.startswith("unserved_model ")]
    assert len(rows) == 1 and "could not run" not in rows[0], rows
