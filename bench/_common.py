"""Shared helpers for the benchmarks: paths, binaries, child processes, /proc readings, wrk.

Not a test module and not part of the package. Every helper that starts something returns a
handle the caller must stop in a `finally`; `stop_process` terminates, waits (bounded) and kills.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
VENV_BIN = ROOT / ".venv" / "bin"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def ensure_venv_python() -> None:
    """Re-run this script with the repo's venv python when autoglm_exporter is not importable."""
    try:
        import autoglm_exporter  # noqa: F401
    except ImportError:
        if VENV_PYTHON.exists() and Path(sys.executable).resolve() != VENV_PYTHON.resolve():
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
        sys.exit(
            f"FAIL: cannot import autoglm_exporter with {sys.executable}; "
            f"install the repo into {ROOT / '.venv'} (pip install -e {ROOT})"
        )


def require_binary(path: str) -> str:
    """The binary's path, or exit with a clear message when it is missing."""
    found = path if os.path.isabs(path) and os.access(path, os.X_OK) else shutil.which(path)
    if not found:
        sys.exit(f"FAIL: required binary {path!r} not found (Debian package: see bench/README.md)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def banner(title: str) -> None:
    print("=" * 78)
    print(title)
    print("=" * 78, flush=True)


def verdict(name: str, ok: bool, detail: str) -> str:
    line = f"{'PASS' if ok else 'FAIL'}: {name}: {detail}"
    return line


# --- processes ------------------------------------------------------------------------------------


def start_process(args: list[str], log_path: Path, **kwargs: object) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop_process through the Popen
    try:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            **kwargs,  # type: ignore[call-overload]
        )
    finally:
        log.close()  # the child holds its own descriptor
    return proc


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM, wait at most `grace` seconds, then SIGKILL and reap. Safe to call twice."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


def wait_http(
    url: str, deadline_s: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Poll until `url` answers 200, at most `deadline_s` seconds; exit clearly otherwise."""
    end = time.monotonic() + deadline_s
    last = "no answer"
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"process for {url} exited with {proc.returncode} before answering:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {deadline_s:g}s ({last})")


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


def start_threaded_child(workdir: Path, marker: str, threads: int = 64) -> subprocess.Popen[bytes]:
    """A python process with `threads` worker threads waking every 10 ms; `marker` is in its cmdline."""
    script = workdir / f"{marker}.py"
    script.write_text(THREADED_CHILD)
    proc = start_process([sys.executable, str(script), str(threads)], workdir / f"{marker}.log")
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"threaded child exited with {proc.returncode}")
        if thread_count(proc.pid) >= threads + 1:
            return proc
        time.sleep(0.05)
    stop_process(proc)
    raise RuntimeError(f"threaded child did not reach {threads + 1} threads in 15 s")


# --- /proc readings ---------------------------------------------------------------------------------


def thread_count(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds_of(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    rest = text[text.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLOCK_TICKS


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def count_processes() -> tuple[int, int]:
    """(processes, threads) on the machine right now."""
    processes = threads = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            processes += 1
            threads += thread_count(int(name))
    return processes, threads


# --- wrk ---------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: str
    raw: str


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
        raw=out,
    )
