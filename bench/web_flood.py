"""The HTTP server under attack: a wrong-password flood and a flood of slow connections.

1. Auth flood: `autoglm-exporter` with basic auth (bcrypt cost 10) on 127.0.0.1. Prometheus (this
   process, one keep-alive connection, and a fresh connection per scrape) scrapes /metrics with the
   right password every 20 ms, first alone (the peer), then while 200 connections from another
   host (127.0.0.2, in child processes) send wrong passwords as fast as the server answers them.
   Target: correct-scrape p99 <= 100 ms during the flood (the issue measured 4.9-14.7 s before).
2. Connection cap: the same exporter (default --web.max-connections) while N slow connections
   from 127.0.0.3 each send half a request head and hold it. The exporter's threads and RSS
   against its idle figures (the peer), the time a connection over the cap waits for its 503,
   and a scrape from 127.0.0.1 meanwhile.
   Target: threads <= the cap + 50, refusal p99 <= 100 ms, the scrape answered 200.

Everything listens on 127.0.0.1 only; every flood stops by itself after its duration.
Run: python bench/web_flood.py [--quick]
"""

from __future__ import annotations

import base64
import http.client
import json
import resource
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import _common as c
import bcrypt

from tests.support import free_port, start_logged, stop_process, wait_until

NAME = "web_flood"
FULL = {
    "flood_seconds": 10.0,
    "flood_connections": 200,
    "slow_connections": 2000,
    "bcrypt_cost": 10,
    "cap": 0,
}
QUICK = {"flood_seconds": 2.0, "flood_connections": 40, "slow_connections": 200, "bcrypt_cost": 4, "cap": 64}
SCRAPE_EVERY = 0.02  # seconds between correct scrapes
MAX_P99 = 0.100  # seconds
MAX_REFUSAL_P99 = 0.100
THREADS_ABOVE_CAP = 50
USER, PASSWORD = "prometheus", "scrape-me-right"

QUIET = c.quiet_config("1s")

# One flooding process: `threads` connections, each sending wrong passwords one request after the
# other until `seconds` have passed; prints how the server answered.
FLOODER = textwrap.dedent(
    """
    import base64, json, socket, sys, threading, time
    port, threads, seconds, tag = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    end = time.monotonic() + seconds
    answers, lock = {}, threading.Lock()

    def flood(n):
        attempt = 0
        while time.monotonic() < end:
            attempt += 1
            token = base64.b64encode(f"prometheus:wrong-{tag}-{n}-{attempt}".encode()).decode()
            head = f"GET /metrics HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nAuthorization: Basic {token}\\r\\n"
            try:
                with socket.create_connection(("127.0.0.1", port), 30, ("127.0.0.2", 0)) as sock:
                    sock.sendall((head + "Connection: close\\r\\n\\r\\n").encode())
                    answer = sock.recv(64)[9:12].decode() or "closed"
            except OSError:
                answer = "error"
            with lock:
                answers[answer] = answers.get(answer, 0) + 1

    workers = [threading.Thread(target=flood, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps(answers))
    """
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def authorization() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


def scrape_latencies(port: int, seconds: float, keep_alive: bool) -> tuple[list[float], list[int]]:
    """Correct scrapes every SCRAPE_EVERY for `seconds`: their latencies and their statuses."""
    latencies: list[float] = []
    codes: list[int] = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not keep_alive:
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        started = time.perf_counter()
        try:
            connection.request("GET", "/metrics", headers=authorization())
            response = connection.getresponse()
            response.read()
            codes.append(response.status)
        except OSError:
            codes.append(0)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies.append(time.perf_counter() - started)
        time.sleep(SCRAPE_EVERY)
    connection.close()
    return latencies, codes


def answers(port: int) -> bool:
    """True once the exporter answers a correct scrape (it raises OSError before it listens)."""
    assert_alive = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        assert_alive.request("GET", "/metrics", headers=authorization())
        return assert_alive.getresponse().status == 200
    finally:
        assert_alive.close()


def flood_in_children(port: int, connections: int, seconds: float) -> list[subprocess.Popen[str]]:
    per_process = 50
    children = []
    for n in range(0, connections, per_process):
        count = min(per_process, connections - n)
        command = [sys.executable, "-c", FLOODER, str(port), str(count), str(seconds), str(n)]
        children.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    return children


def auth_flood(port: int, params: dict[str, float]) -> tuple[bool, str]:
    seconds = float(params["flood_seconds"])
    for keep_alive in (True, False):
        scrape_latencies(port, 0.2, keep_alive)  # the right password checked once, as before a flood
    idle = {k: scrape_latencies(port, min(seconds, 3.0), k)[0] for k in (True, False)}
    results: dict[bool, tuple[list[float], list[int]]] = {}
    children = flood_in_children(port, int(params["flood_connections"]), seconds)
    time.sleep(min(1.0, seconds / 4))  # let the flood build up
    threads = [
        threading.Thread(
            target=lambda k=k: results.__setitem__(k, scrape_latencies(port, seconds * 0.7, k)), daemon=True
        )
        for k in (True, False)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    answers: dict[str, int] = {}
    for child in children:
        out, _ = child.communicate(timeout=seconds + 120)
        for code, count in json.loads(out.strip().splitlines()[-1]).items():
            answers[code] = answers.get(code, 0) + count
    print(
        f"\nauth flood: {int(params['flood_connections'])} connections of wrong passwords for {seconds:.0f} s"
    )
    print(f"  the flood's answers: {dict(sorted(answers.items()))}")
    print(f"  {'correct scrape':34} {'idle p50':>9} {'idle p99':>9} {'flood p50':>10} {'flood p99':>10}    n")
    verdicts = {}
    for keep_alive in (True, False):
        latencies, codes = results[keep_alive]
        p99 = percentile(latencies, 0.99)
        kind = "keep-alive connection" if keep_alive else "fresh connection per scrape"
        before = idle[keep_alive]
        print(
            f"  {kind:34} {ms(percentile(before, 0.5)):>9} {ms(percentile(before, 0.99)):>9}"
            f" {ms(percentile(latencies, 0.5)):>10} {ms(p99):>10} {len(latencies):5d}"
        )
        failed = [code for code in codes if code != 200]
        if failed:
            print(f"  {kind}: {len(failed)} scrapes not answered 200: {sorted(set(failed))}")
        verdicts[keep_alive] = (
            not failed and p99 <= MAX_P99,
            f"{kind}: correct-scrape p99 {ms(p99)} in the flood",
        )
    # Prometheus keeps its connection between scrapes: that figure is the target; a fresh connection
    # per scrape waits in the accept queue behind the flood's, and is shown for what it is.
    print(c.verdict(f"{NAME}[fresh_connection]", *verdicts[False]))
    ok, detail = verdicts[True]
    return ok, f"{detail} (target <= {ms(MAX_P99)})"


def proc_status(pid: int) -> tuple[int, float]:
    """(threads, RSS in MB) of a process, from /proc/PID/status."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024


def connection_cap(port: int, pid: int, params: dict[str, float], cap: int) -> tuple[bool, str]:
    idle_threads, idle_rss = proc_status(pid)
    slow: list[socket.socket] = []
    count = int(params["slow_connections"])
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.3", 0))
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and never more
            except OSError:
                pass
            slow.append(sock)
        time.sleep(0.5)  # the accept loop takes the last ones in
        threads, rss = proc_status(pid)
        refusals = []
        for _ in range(50):
            started = time.perf_counter()
            with socket.create_connection(
                ("127.0.0.1", port), timeout=10, source_address=("127.0.0.3", 0)
            ) as sock:
                answer = sock.recv(64)
            refusals.append(time.perf_counter() - started)
            assert answer.startswith(b"HTTP/1.1 503"), answer
        latencies, codes = scrape_latencies(port, 1.0, keep_alive=False)  # from 127.0.0.1
    finally:
        for sock in slow:
            sock.close()
    refusal_p99 = percentile(refusals, 0.99)
    print(f"\nconnection cap: {count} slow connections from 127.0.0.3 (--web.max-connections {cap})")
    print(f"  exporter threads: {idle_threads} idle -> {threads} held; RSS {idle_rss:.1f} MB -> {rss:.1f} MB")
    print(
        f"  a connection over the cap: 503 after p50 {ms(percentile(refusals, 0.5))}, p99 {ms(refusal_p99)}"
    )
    print(f"  scrapes from 127.0.0.1 meanwhile: {sorted(set(codes))}, p99 {ms(percentile(latencies, 0.99))}")
    ok = threads <= cap + THREADS_ABOVE_CAP and refusal_p99 <= MAX_REFUSAL_P99 and set(codes) == {200}
    detail = (
        f"{count} slow connections held {threads} threads, {rss:.0f} MB RSS; refusal p99 {ms(refusal_p99)}"
    )
    return ok, detail


def main() -> int:
    args = c.arguments(__doc__).parse_args()
    params = QUICK if args.quick else FULL
    c.banner("web_flood: a wrong-password flood and a flood of slow connections", quick=args.quick)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    from autoglm_exporter.web.connections import DEFAULT_MAX_CONNECTIONS

    cap = int(params["cap"]) or DEFAULT_MAX_CONNECTIONS

    with tempfile.TemporaryDirectory(prefix="web-flood-") as folder:
        config, web, log = Path(folder, "config.yml"), Path(folder, "web.yml"), Path(folder, "exporter.log")
        config.write_text(QUIET)
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=int(params["bcrypt_cost"]))).decode()
        web.write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")
        port = free_port()
        command = [sys.executable, "-m", "autoglm_exporter", f"--config.file={config}"]
        command += [f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web}"]
        command += [f"--web.max-connections={cap}"]
        exporter = start_logged(command, log)
        try:
            wait_until(lambda: exporter.poll() is None and answers(port), timeout=30)
            auth_ok, auth_detail = auth_flood(port, params)
            cap_ok, cap_detail = connection_cap(port, exporter.pid, params, cap)
        finally:
            stop_process(exporter)
    print(c.verdict(f"{NAME}[connection_cap]", cap_ok, cap_detail))
    print(c.verdict(NAME, auth_ok and cap_ok, f"{auth_detail}; {cap_detail}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
