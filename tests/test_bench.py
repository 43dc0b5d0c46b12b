"""Benchmarks cannot rot: every bench script imports and runs through in quick mode.

Each bench/*.py (but the _helpers) is imported here, so a moved or renamed API fails this suite
rather than the next `make bench`, and then run as a user runs it with `--quick` (tiny parameters:
seconds, not minutes). The test asserts the script ended with its `PASS: NAME:` or `FAIL: NAME:`
line, never which: whether a target is met is for `make bench` on a quiet machine to say, not for
a busy CI runner. The convention a new script follows is in bench/README.md.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

BENCH = REPO / "bench"
SCRIPTS = sorted(path for path in BENCH.glob("*.py") if not path.name.startswith("_"))
# Scripts whose quick run has a test of its own that checks more of its output.
OWN_TEST = {
    "diagnosis_matrix": "test_diagnosis_matrix.py",
    "scrape_concurrency": "test_scrape_concurrency_bench.py",
}


def test_every_bench_script_is_found() -> None:
    found = {path.stem for path in SCRIPTS}
    assert {"metrics_throughput", "process_cpu", "rss_cycles", "probe_cycle", "gpu_cycle"} <= found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_bench_script_imports(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # where the scripts find _common, as when run
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Not registered in sys.modules: a script must load even by a loader that does not register it
    # (dataclasses look string annotations up there, so the scripts evaluate theirs at once).
    spec.loader.exec_module(module)  # its imports: an API it uses that moved fails here
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"


def test_scripts_with_a_test_of_their_own_have_it() -> None:
    for stem, test in OWN_TEST.items():
        assert (BENCH / f"{stem}.py").exists() and (REPO / "tests" / test).exists(), (stem, test)


@pytest.mark.slow
@pytest.mark.parametrize("script", [s for s in SCRIPTS if s.stem not in OWN_TEST], ids=lambda path: path.stem)
def test_bench_script_runs_to_its_verdict_line_in_quick_mode(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--quick"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    output = done.stdout + done.stderr
    # Non-zero: the script broke (a missing peer binary says so: BENCH=1 scripts/install-deps.sh).
    assert done.returncode == 0, output
    verdict = re.compile(rf"^(PASS|FAIL): {re.escape(script.stem)}: ", re.M)
    assert verdict.search(done.stdout), f"no PASS/FAIL line for {script.stem}:\n{output}"
