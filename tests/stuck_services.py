"""Real Python services that get stuck the way inference servers do, for the forensics tests.

    python tests/stuck_services.py deadlock   two workers take two locks in opposite order
    python tests/stuck_services.py deadlocked_server
                                              the same two workers behind an HTTP API whose
                                              request handlers take one of the two locks: once
                                              the workers deadlock, every request waits too
    python tests/stuck_services.py spinner    a worker spins in a CPU loop in one function
    python tests/stuck_services.py healthy    an idle HTTP server with a heartbeat and a thread pool
    python tests/stuck_services.py waiters    every worker waits forever: on a queue, an event, and a
                                              lock the main thread never releases (main sleeps)

Each prints `ready pid=PID` (and ` port=PORT` for the servers) once it is up, then behaves normally until it gets SIGUSR1 (the
trigger), answers `triggered`, and for deadlock/spinner gets stuck; the deadlock services print
`stuck` once both workers are about to take their second lock. Only the standard library is
used, so any Python 3 interpreter runs them (the tests use a self-built and Debian's stripped one). The tests find the exact lines
where the threads get stuck by the `# stuck:` markers below, so edit the markers with the code.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import os
import queue
import signal
import sys
import threading
import time

TRIGGERED = threading.Event()
LOCK_A = threading.Lock()
LOCK_B = threading.Lock()
BOTH_HOLD_ONE = threading.Barrier(2)
ARRIVED = threading.Semaphore(0)
counter = 0


def worker_a() -> None:
    global counter
    while not TRIGGERED.is_set():
        with LOCK_A, LOCK_B:
            counter += 1
        time.sleep(0.01)
    with LOCK_A:
        BOTH_HOLD_ONE.wait()
        ARRIVED.release()
        with LOCK_B:  # stuck: worker-a
            counter += 1


def worker_b() -> None:
    global counter
    while not TRIGGERED.is_set():
        with LOCK_A, LOCK_B:
            counter += 1
        time.sleep(0.01)
    with LOCK_B:
        BOTH_HOLD_ONE.wait()
        ARRIVED.release()
        with LOCK_A:  # stuck: worker-b
            counter += 1


def start_workers() -> list[threading.Thread]:
    workers = [
        threading.Thread(target=worker_a, name="worker-a"),
        threading.Thread(target=worker_b, name="worker-b"),
    ]
    for worker in workers:
        worker.start()
    return workers


def announce_stuck() -> None:
    """After the trigger: `triggered`, then `stuck` once both workers are at their second lock."""
    TRIGGERED.wait()
    print("triggered", flush=True)
    for _ in range(2):
        ARRIVED.acquire()
    time.sleep(0.05)  # both released ARRIVED just before their second acquire
    print("stuck", flush=True)


def deadlock() -> None:
    workers = start_workers()
    announce_ready()
    announce_stuck()
    for worker in workers:
        worker.join()


def spin() -> None:
    TRIGGERED.wait()
    value = 0
    while True:
        value = (value * 31 + 7) % 1_000_003  # stuck: spinner


def spinner() -> None:
    worker = threading.Thread(target=spin, name="spinner", daemon=True)
    worker.start()
    announce_ready()
    TRIGGERED.wait()
    print("triggered", flush=True)
    while True:
        time.sleep(1.0)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.answer(b"ok\n")

    def answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class LockedHandler(Handler):
    """An API whose every request reads the state the workers share, under their first lock."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with LOCK_A:  # stuck: handler
            served = counter
        self.answer(b'{"text": "ok %d"}' % served)


def deadlocked_server() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LockedHandler)
    start_workers()
    threading.Thread(target=announce_stuck, name="announcer", daemon=True).start()
    announce_ready(f" port={server.server_address[1]}")
    server.serve_forever()


def heartbeat() -> None:
    while True:
        time.sleep(1.0)


def healthy() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=heartbeat, name="heartbeat", daemon=True).start()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool")
    pool.submit(lambda: None).result()  # its worker now waits for work
    announce_ready(f" port={server.server_address[1]}")
    signal.signal(signal.SIGUSR1, lambda *_: print("triggered", flush=True))
    server.serve_forever()


NOTHING_COMING: queue.Queue[int] = queue.Queue()
NEVER_SET = threading.Event()
LEAKED = threading.Lock()


def consumer() -> None:
    NOTHING_COMING.get()  # stuck: consumer


def waiter() -> None:
    NEVER_SET.wait()  # stuck: waiter


def locker() -> None:
    with LEAKED:  # stuck: locker
        pass


def waiters() -> None:
    LEAKED.acquire()  # and never released: an error path that forgot to
    for target in (consumer, waiter, locker):
        threading.Thread(target=target, name=target.__name__, daemon=True).start()
    announce_ready()
    while True:
        time.sleep(3600.0)  # never awake: a profile of this process samples nothing running


def announce_ready(extra: str = "") -> None:
    print(f"ready pid={os.getpid()}{extra}", flush=True)


def main() -> None:
    signal.signal(signal.SIGUSR1, lambda *_: TRIGGERED.set())
    modes = {
        "deadlock": deadlock,
        "deadlocked_server": deadlocked_server,
        "spinner": spinner,
        "healthy": healthy,
        "waiters": waiters,
    }
    modes[sys.argv[1]]()


if __name__ == "__main__":
    main()
