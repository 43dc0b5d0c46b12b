"""Hostile configs and signals: every bad file handled fast and small, SIGTERM quick in every state.

1. Each bad config of the matrix (infinite, NaN and huge durations, duplicate keys, 20,000-deep
   nesting, alias bombs, huge numbers, non-UTF-8, a 10 MB file, secrets in URLs...) through
   `autoglm-exporter check-config` as a user runs it: the wall time and peak RSS of that process
   (from wait4's rusage). Peer, in the same run: `check-config` of the shipped good example, so
   the figure says what the bad input adds to starting Python.
   Target: each within 2 s and 100 MB, exit 2, no traceback.
2. The same files sent to a running exporter by SIGHUP: it stays up and keeps collecting.
3. SIGTERM in every state: idle; a probe waiting on a server that never answers (60 s timeout);
   a hung nvidia-smi; a reload in progress; 50 connections scraping as fast as they can.
   Target: exit 0 within 2 s of the signal in each.

Run: python bench/hostile_config.py [--quick]   (--quick: fewer files, the idle and probe states)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from _common import ROOT, arguments, banner, quiet_config, verdict

from tests.support import free_port

NAME = "hostile_config"
MAX_SECONDS = 2.0
MAX_RSS_MB = 100.0
SIGTERM_SECONDS = 2.0

QUIET = quiet_config("300ms")


def _bomb() -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + previous] * 10)}]")
    return "\n".join(lines) + "\n"


def bad_files(quick: bool) -> dict[str, bytes]:
    files = {
        "interval .inf": b"global: {interval: .inf}\n",
        "interval 1e14": b"global: {interval: 100000000000000}\n",
        "timeout .nan": b"global: {timeout: .nan}\n",
        "jitter .nan": b"global: {jitter: .nan}\n",
        "probe timeout 99999999999h": b"targets: [{name: a, url: 'http://x:1/', timeout: 99999999999h}]\n",
        "duplicate key": b"targets: []\ntargets: [{name: a}]\n",
        "nesting 20000 deep": ("a: " + "[" * 20000 + "]" * 20000).encode(),
        "alias bomb": _bomb().encode(),
        "alias bomb in a probe body": (
            "targets: [{name: a, module: inference, url: 'http://127.0.0.1:1/', body: {k: v}}]\n" + _bomb()
        ).encode(),
        "not UTF-8": b"global:\n  interval: \xff\xfe10s\n",
        "huge integer": ("redis: [{name: r, db: " + "9" * 5000 + "}]").encode(),
        "interval 100k characters": ("global: {interval: '" + "9" * 100_000 + "s'}").encode(),
        "password in a URL": b"targets: [{name: a, url: 'ftp://admin:hunter2@db/'}]\n",
        "password in a Redis address": b"redis: [{name: r, address: 'redis://:hunter2@127.0.0.1:6379'}]\n",
        "user:password@host:port": b"redis: [{name: r, address: 'default:hunter2@127.0.0.1:6379'}]\n",
        "password with / in a URL": b"engines: [{name: e, metrics_url: 'http://u:hun/ter2@127.0.0.1:1/'}]\n",
        "empty file": b"",
        "only comments": b"# global:\n#   interval: 10s\n",
        "log path is a directory": b"logs: [{name: l, path: /tmp}]\n",
        "two errors in one item": b"targets: [{name: a, module: grpc, url: 'ftp://x'}]\n",
        "recursive alias": b"a: &a [1, *a]\n",
        "10 MB file": b"# padding line of a huge config\n" * 330_000,
    }
    if quick:
        return {
            name: files[name] for name in ("interval .inf", "alias bomb", "nesting 20000 deep", "10 MB file")
        }
    return files


def run_measured(args: list[str]) -> tuple[int, float, float, float, str]:
    """(exit code, wall seconds, CPU seconds, peak RSS in MB, stderr) of one command.

    CPU seconds (user + system, from wait4) are what the input costs; wall seconds also hold
    whatever else this 2-core machine is doing, so the limit applies to CPU seconds."""
    started = time.monotonic()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    stderr = process.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    cpu = usage.ru_utime + usage.ru_stime
    return process.returncode, time.monotonic() - started, cpu, usage.ru_maxrss / 1024, stderr


def check_bad_files(folder: Path, quick: bool) -> tuple[bool, list[str]]:
    print(f"{'config':32} {'exit':>4} {'wall s':>7} {'CPU s':>6} {'peak MB':>8}  first error line")
    good = folder / "good.yml"
    good.write_text(QUIET)
    command = [sys.executable, "-m", "autoglm_exporter", "check-config"]
    code, wall, cpu, rss, _ = run_measured([*command, str(good)])
    print(f"{'(peer) the good example':32} {code:>4} {wall:7.3f} {cpu:6.3f} {rss:8.1f}")
    ok, failures = code == 0, []
    for name, content in bad_files(quick).items():
        path = folder / (name.replace(" ", "_").replace("/", "_") + ".yml")
        path.write_bytes(content)
        code, wall, cpu, rss, stderr = run_measured([*command, str(path)])
        first = next((line.strip() for line in stderr.splitlines()[1:2]), stderr.strip()[:60])
        print(f"{name:32} {code:>4} {wall:7.3f} {cpu:6.3f} {rss:8.1f}  {first[:60]}")
        leaked = "Traceback" in stderr or "hunter2" in stderr or "ter2" in stderr
        if code != 2 or cpu > MAX_SECONDS or rss > MAX_RSS_MB or leaked:
            ok = False
            failures.append(name)
    return ok, failures


def start_exporter(config: Path, log: Path, port: int) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autoglm_exporter",
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"exporter did not start: {log.read_text()[-500:]}")


def metric(port: int, name: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def check_reloads(folder: Path, quick: bool) -> bool:
    config = folder / "reload.yml"
    config.write_text(QUIET)
    port = free_port()
    process = start_exporter(config, folder / "reload.log", port)
    ok = True
    try:
        for name, content in bad_files(quick).items():
            config.write_bytes(content)
            process.send_signal(signal.SIGHUP)
            reload_ok = wait_for(lambda: metric(port, "autoglm_exporter_config_last_reload_successful") == 0)
            signalled = time.time()
            # Collection goes on: the system collector succeeds again after the bad reload.
            fresh = wait_for(lambda since=signalled: (last_success(port) or 0) > since)
            alive = process.poll() is None
            print(f"SIGHUP with {name:32} alive={alive} reload refused={reload_ok} still collecting={fresh}")
            ok = ok and alive and reload_ok and fresh
            config.write_text(QUIET)
            urllib.request.urlopen(
                urllib.request.Request(f"http://127.0.0.1:{port}/-/reload", method="POST"), timeout=30
            )
        ok = check_blocked_read(config, port, process) and ok
    finally:
        process.kill()
        process.wait(5)
    return ok


def check_blocked_read(config: Path, port: int, process: subprocess.Popen[bytes]) -> bool:
    """A config file that blocks its reader (a FIFO, like a hung mount): POST /-/reload answers 500
    within its read deadline, collection goes on, and once the read returns a reload works."""
    config.unlink()
    os.mkfifo(config)
    started = time.monotonic()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/-/reload", method="POST")
    try:
        status = urllib.request.urlopen(request, timeout=60).status
    except urllib.error.HTTPError as exc:
        status = exc.code
    took = time.monotonic() - started
    since = time.time()
    fresh = wait_for(lambda: (last_success(port) or 0) > since)
    os.close(os.open(config, os.O_WRONLY | os.O_NONBLOCK))  # the "mount" comes back
    config.unlink()
    config.write_text(QUIET)
    again = wait_for(lambda: _reload_status(port) == 200)
    alive = process.poll() is None
    print(
        f"POST /-/reload with a FIFO as config: {status} after {took:.2f}s, still collecting={fresh},"
        f" a later reload works={again}, alive={alive}"
    )
    return status == 500 and fresh and again and alive


def _reload_status(port: int) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/-/reload", method="POST")
    try:
        return int(urllib.request.urlopen(request, timeout=30).status)
    except urllib.error.HTTPError as exc:
        return exc.code


def last_success(port: int) -> float | None:
    return metric(port, 'autoglm_exporter_collector_last_success_timestamp_seconds{collector="system"}')


def wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def silent_server() -> tuple[socket.socket, list[socket.socket]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return listener, held


def sigterm_states(folder: Path, quick: bool) -> bool:
    listener, held = silent_server()
    port_hung = listener.getsockname()[1]
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    smi.chmod(0o755)
    probe = (
        f"targets: [{{name: hung, module: inference, url: 'http://127.0.0.1:{port_hung}/i', timeout: 60s}}]"
    )
    states = {
        "idle": QUIET,
        "a probe waiting 60 s": QUIET.replace("targets: []", probe),
        "a hung nvidia-smi": QUIET.replace("gpu: {enabled: false}", "gpu: {enabled: true, timeout: 90s}")
        + f"gpu: {{nvml: false, nvidia_smi: {smi}, call_timeout: 60s}}\n",
        "a reload in progress": QUIET,
        "50 closed-loop scrapers": QUIET,
    }
    if quick:
        states = {name: states[name] for name in ("idle", "a probe waiting 60 s")}
    ok = True
    for name, text in states.items():
        config = folder / "sigterm.yml"
        config.write_text(text)
        port = free_port()
        process = start_exporter(config, folder / "sigterm.log", port)
        stop_load = threading.Event()
        if name == "50 closed-loop scrapers":
            for _ in range(50):
                threading.Thread(target=_scrape_loop, args=(port, stop_load), daemon=True).start()
        time.sleep(1.0)  # let the state set in (the probe connects, nvidia-smi starts)
        if name == "a reload in progress":
            process.send_signal(signal.SIGHUP)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(5)
        took = time.monotonic() - sent
        stop_load.set()
        print(f"SIGTERM with {name:26} exit={code} after {took:.3f}s")
        ok = ok and code == 0 and took <= SIGTERM_SECONDS
    listener.close()
    for connection in held:
        connection.close()
    return ok


def _scrape_loop(port: int, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
        except OSError:
            time.sleep(0.01)


def main() -> None:
    args = arguments(__doc__).parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
    limits = f"<= {MAX_SECONDS:g} CPU s, <= {MAX_RSS_MB:g} MB each"
    banner(f"{NAME}: bad configs ({limits}) and SIGTERM (<= {SIGTERM_SECONDS:g} s)", args.quick)
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        folder = Path(tmp)
        files_ok, failures = check_bad_files(folder, args.quick)
        reloads_ok = check_reloads(folder, args.quick)
        sigterm_ok = sigterm_states(folder, args.quick)
    detail = (
        f"bad configs {'ok' if files_ok else 'over a limit: ' + ', '.join(failures)}; "
        f"reloads {'kept collecting' if reloads_ok else 'FAILED'}; "
        f"SIGTERM {'<= 2 s in every state' if sigterm_ok else 'too slow or unclean'}"
    )
    print(verdict(NAME, files_ok and reloads_ok and sigterm_ok, detail))


if __name__ == "__main__":
    main()
