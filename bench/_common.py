"""What the bench scripts share: start-up, the --quick convention, verdict lines, a busy child, wrk.

Importing this module is the bench scripts' start-up: it puts the repo root on sys.path (for
tests.support, tests.fakes, tests.faultservers) and re-runs the script with the repo's venv python
when autoglm_exporter is not importable. Helpers the tests use too live in tests/support.py.
Every helper that starts something returns a handle the caller stops in a `finally`.
"""

import argparse
import os
import re
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _ensure_venv_python() -> None:
    """Re-run this script with the repo's venv python when autoglm_exporter is not importable."""
    try:
        import autoglm_exporter  # noqa: F401
    except ImportError:
        if VENV_PYTHON.exists() and Path(sys.executable).resolve() != VENV_PYTHON.resolve():
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
        sys.exit(
            f"bench cannot run: cannot import autoglm_exporter with {sys.executable}; "
            f"install the repo into {ROOT / '.venv'} (pip install -e {ROOT})"
        )


_ensure_venv_python()

from autoglm_exporter.linux import procfs  # noqa: E402
from tests.support import find_binary, start_logged, stop_process  # noqa: E402

# --- the command line: every script takes --quick -------------------------------------------------


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the --quick flag every bench script has; scripts add their own options."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny parameters (seconds, not minutes): the script runs through, its figures decide nothing",
    )
    return parser


def banner(title: str, quick: bool = False) -> None:
    print("=" * 78)
    print(title)
    if quick:
        print("QUICK MODE: tiny parameters; the figures and the verdict below decide nothing")
    print("=" * 78, flush=True)


def verdict(name: str, ok: bool, detail: str) -> str:
    """The line a script ends with; run_all.sh and tests/test_bench.py look for `PASS: name:`."""
    return f"{'PASS' if ok else 'FAIL'}: {name}: {detail}"


def quiet_config(interval: str) -> str:
    """A config that watches nothing (no service, target or dependency; no GPU, environment or
    container reads), so what a benchmark measures is the exporter's own work."""
    return f"""global: {{interval: {interval}, timeout: 2s, jitter: 0}}
services: []
targets: []
redis: []
engines: []
logs: []
collectors: {{gpu: {{enabled: false}}, environment: {{enabled: false}}, container: {{enabled: false}}}}
"""


def require_binary(name: str) -> str:
    """The binary's path; a missing one stops the script (exit 1) with a clear message."""
    found = find_binary(name)
    if not found:
        sys.exit(f"bench cannot run: required binary {name!r} not found (BENCH=1 scripts/install-deps.sh)")
    return found


# --- a busy service: a child with many threads that keep waking up ------------------------------------

THREADED_CHILD = textwrap.dedent(
    """
    import ctypes, os, signal, sys, threading, time
    try:  # die with the benchmark even if it is killed without cleaning up
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    parent = os.getppid()
    n = int(sys.argv[1])
    def work():
        while True:
            time.sleep(0.01)
    for _ in range(n):
        threading.Thread(target=work, daemon=True).start()
    # Bounded: lives at most 10 minutes, and not past its parent.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.5)
    """
)


def start_threaded_child(workdir: Path, marker: str, threads: int) -> subprocess.Popen[bytes]:
    """A python process with `threads` worker threads waking every 10 ms; `marker` is in its cmdline."""
    script = workdir / f"{marker}.py"
    script.write_text(THREADED_CHILD)
    proc = start_logged([sys.executable, str(script), str(threads)], workdir / f"{marker}.log")
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"threaded child exited with {proc.returncode}")
        if thread_count(proc.pid) >= threads + 1:
            return proc
        time.sleep(0.05)
    stop_process(proc)
    raise RuntimeError(f"threaded child did not reach {threads + 1} threads in 15 s")


# --- readings of processes, through the exporter's own /proc parser ------------------------------------


def pid_stat(pid: int | str) -> procfs.PidStat:
    return procfs.parse_pid_stat(procfs.read_text(f"/proc/{pid}/stat"))


def thread_count(pid: int) -> int:
    try:
        return pid_stat(pid).num_threads
    except (OSError, procfs.ProcParseError):
        return 0


def cpu_seconds_of(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    stat = pid_stat(pid)
    return stat.utime_seconds + stat.stime_seconds


def rss_bytes() -> int:
    """Resident memory of this process."""
    return pid_stat("self").rss_bytes


def count_processes() -> tuple[int, int]:
    """(processes, threads) on the machine right now."""
    pids = procfs.list_pids("/proc")
    return len(pids), sum(thread_count(pid) for pid in pids)


# --- wrk ---------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: str


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if not match:
        raise ValueError(f"cannot parse wrk latency {value!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def run_wrk(
    wrk: str, url: str, threads: int, connections: int, seconds: int, headers: list[str] | None = None
) -> WrkResult:
    args = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for header in headers or []:
        args += ["-H", header]
    args.append(url)
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30, check=False)
    out = done.stdout
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}\n{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:(.*)", out)
    if not (rps and p50 and p99 and total):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return WrkResult(
        requests_per_second=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(total.group(1)),
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=errors.group(1).strip() if errors else "none",
    )
