"""A service shaped like vLLM, for the tests: a parent that serves HTTP and a child that does the work.

    python tests/worker_tree.py TAG [--close-when-child-dies]

The parent listens on 127.0.0.1 (a free port), answers GET /health with 200 whatever its child
does, and answers every POST by handing a line to its child and waiting for the child's reply.
The child renames itself as vLLM's engine core does (setproctitle): it execs itself again with
argv[0] `TEST::EngineCore` and writes its kernel name to /proc/self/comm, so no command-line
rule of the parent (which carries TAG) matches it. Stop the child (SIGSTOP) and every POST hangs
while /health stays 200. The parent prints `ready pid=PARENT child=CHILD port=PORT` once it serves.

Kill the child and the parent lives on. By default it never reaps it (the child stays a zombie) and
goes on listening, its POSTs failing. With --close-when-child-dies it does what vLLM's API server does
when its engine core dies: it reaps the child, closes its listening port and lives on without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TITLE = "TEST::EngineCore"
ENGINE = """
import os, sys
with open("/proc/self/cmdline", "rb") as cmdline:
    renamed = cmdline.read().split(b"\\0")[0] == b"TEST::EngineCore"
if not renamed:  # rename itself, as setproctitle does for vLLM
    os.execv(sys.executable, ["TEST::EngineCore", "-c", sys.argv[-1], sys.argv[-1]])
with open("/proc/self/comm", "w") as comm:
    comm.write("TEST::EngineCo")
print("engine ready", flush=True)
for line in sys.stdin:
    print("generated " + line.strip(), flush=True)
"""


def main() -> None:
    engine = subprocess.Popen(
        [sys.executable, "-c", ENGINE, ENGINE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert engine.stdout is not None and engine.stdin is not None
    assert engine.stdout.readline().strip() == "engine ready"
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self._answer({"status": "ok"})  # /health: 200 whatever the engine does

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:  # the engine takes one request at a time
                engine.stdin.write("request\n")
                engine.stdin.flush()
                text = engine.stdout.readline().strip()
            self._answer({"text": text})

        def _answer(self, body: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if "--close-when-child-dies" in sys.argv[2:]:
        threading.Thread(target=_close_when_dead, args=(engine, server), daemon=True).start()
    print(f"ready pid={os.getpid()} child={engine.pid} port={server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
        threading.Event().wait()  # the port is closed; the process lives on, as vLLM's API server does
    finally:
        engine.kill()


def _close_when_dead(engine: subprocess.Popen[str], server: ThreadingHTTPServer) -> None:
    engine.wait()  # reaps it
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
