"""The Open-AutoGLM-style API: `POST /inference` goes through a Redis queue to workers and the engine.

    POST /inference {"prompt": "Hello", "max_tokens": 50}
        200 {"text": "...", "request_id": "..."}
        400 bad JSON, no prompt, bad max_tokens   413 body over 64 KiB
        500 injected error   502 the engine failed   503 Redis unreachable
        504 no result in time (the engine or the workers are stuck)
    GET /health   200 {"status": "ok"}: shallow, like the real one (it knows nothing of Redis,
                  the workers or the engine, which is why the exporter probes /inference instead)

Faults (see admin.py for how to set them): hang (handlers block until cleared; connections are
accepted and never answered), slow (`seconds` per request), error (500), flaky (every other request
500: a service failing half its requests, which no "failed N times in a row" check sees), deadlock
(deadlock.py: for good), oom (writes one CUDA out-of-memory line to the log file per call; nothing
else changes).

With a trace file (trace.py), each request that gets past validation appends its points there:
received, queued, dequeued and generated (by the worker), then done or error.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import redis

from .admin import Admin
from .deadlock import ServiceLocks
from .faults import FaultState
from .jobs import Job, Outcome, result_key
from .servicelog import CUDA_OOM_MESSAGE, log_to_file
from .trace import Trace
from .web import BadRequest, Handler, Server, display_url, serve
from .worker import EngineClient, Workers

log = logging.getLogger("demo.api")

FAULTS = ("none", "hang", "slow", "error", "flaky", "deadlock", "oom")
MAX_TOKENS_LIMIT = 4096
DEFAULT_MAX_TOKENS = 50


class FlakyCounter:
    """The flaky fault's alternation: shared by the handler threads, so exactly every other one fails."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def fails(self) -> bool:
        with self._lock:
            self._count += 1
            return self._count % 2 == 0


@dataclass
class Api:
    queue: str
    request_timeout: float
    redis_client: redis.Redis  # short commands
    redis_wait: redis.Redis  # BLPOP for a result: its socket timeout outlasts the request timeout
    faults: FaultState
    admin: Admin
    locks: ServiceLocks
    trace: Trace
    oom_lines: int = 0
    flaky: FlakyCounter = field(default_factory=FlakyCounter)


class ApiHandler(Handler):
    server_version = "demo-autoglm-api"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        api: Api = self.app
        if api.admin.handles(self):
            api.admin.handle(self)
        elif (self.command, self.route) == ("GET", "/health"):
            self.send_json(200, {"status": "ok"})
        elif (self.command, self.route) == ("POST", "/inference"):
            self._inference(api)
        else:
            self.close_connection = True
            known = self.route in ("/health", "/inference")
            self.send_json(405 if known else 404, {"error": "method not allowed" if known else "not found"})

    def _inference(self, api: Api) -> None:
        try:
            prompt, max_tokens = _parse(self.read_json())
        except BadRequest as exc:
            log.warning("POST /inference %d: %s", exc.status, exc)
            self.send_json(exc.status, {"error": str(exc)})
            return
        job = Job.new(prompt, max_tokens)
        api.trace.point(job.request_id, "received")
        api.locks.request_started()  # blocks for ever once the deadlock fault struck
        try:
            status, payload = self._run(api, job)
        except Exception:
            api.trace.point(job.request_id, "error")  # no answer: the connection just closes
            raise
        finally:
            api.locks.request_finished()
        # Before the answer, so that a client holding it finds the request's trace complete.
        api.trace.point(job.request_id, "done" if status == 200 else "error", status=status)
        self.send_json(status, payload)

    def _run(self, api: Api, job: Job) -> tuple[int, dict[str, Any]]:
        def failed(status: int, message: str) -> tuple[int, dict[str, Any]]:
            log.error("POST /inference %d request %s: %s", status, job.request_id, message)
            return status, {"error": message, "request_id": job.request_id}

        api.faults.wait_while("hang")
        fault = api.faults.current()
        if fault.name == "slow":
            api.faults.pause(fault)
        elif fault.name == "error":
            return failed(500, "internal error while handling the request (injected fault: error)")
        elif fault.name == "flaky" and api.flaky.fails():
            return failed(500, "internal error on every other request (injected fault: flaky)")
        key = result_key(api.queue, job.request_id)
        api.trace.point(job.request_id, "queued")  # before the LPUSH: a worker may pop it at once
        try:
            api.redis_client.lpush(api.queue, job.encode())
            answer = api.redis_wait.blpop([key], timeout=api.request_timeout)
        except redis.RedisError as exc:
            return failed(503, f"redis unreachable: {type(exc).__name__}: {exc}")
        if answer is None:
            return failed(
                504, f"no result within {api.request_timeout:g}s (the engine or the workers are stuck)"
            )
        try:
            outcome = Outcome.decode(answer[1])
        except (ValueError, LookupError, TypeError):
            return failed(502, "a worker stored a malformed result")
        if outcome.status != 200:
            return failed(outcome.status, outcome.error)
        return 200, {"text": outcome.text, "request_id": job.request_id}


def _parse(body: Any) -> tuple[str, int]:
    if not isinstance(body, dict):
        raise BadRequest(400, 'send a JSON object: {"prompt": "...", "max_tokens": N}')
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest(400, "prompt is required and must be a non-empty string")
    max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    if (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        raise BadRequest(400, f"max_tokens must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    return prompt, max_tokens


def run(
    host: str,
    port: int,
    engine_url: str,
    redis_url: str,
    queue: str,
    log_file: str | None,
    workers: int,
    request_timeout: float,
    engine_timeout: float,
    admin_token: str | None,
    trace_file: str | None = None,
) -> int:
    if log_file:
        try:
            log_to_file(log_file, log)
        except OSError as exc:
            log.error("cannot open the log file %s: %s", log_file, exc)
            return 2
    try:
        trace = Trace(trace_file)
    except OSError as exc:
        log.error("cannot open the trace file %s: %s", trace_file, exc)
        return 2
    faults = FaultState("api", FAULTS, sticky=("deadlock",), events=("oom",))
    locks = ServiceLocks()
    api = Api(
        queue=queue,
        request_timeout=request_timeout,
        redis_client=redis.Redis.from_url(
            redis_url, socket_connect_timeout=2, socket_timeout=5, decode_responses=True
        ),
        redis_wait=redis.Redis.from_url(
            redis_url, socket_connect_timeout=2, socket_timeout=request_timeout + 5, decode_responses=True
        ),
        faults=faults,
        admin=Admin(faults, admin_token),
        locks=locks,
        trace=trace,
    )
    oom_guard = threading.Lock()

    def oom() -> dict[str, Any]:
        with oom_guard:
            api.oom_lines += 1
            count = api.oom_lines
        log.error("%s", CUDA_OOM_MESSAGE)
        return {"oom_lines_written": count}

    def deadlock() -> dict[str, Any]:
        locks.trigger()
        return {}

    api.admin.actions.update(oom=oom, deadlock=deadlock)
    stop = threading.Event()
    pool = Workers(workers, redis_url, queue, EngineClient(engine_url, engine_timeout), stop, trace)
    server = Server((host, port), ApiHandler, api)
    log.info(
        "demo api listening on http://%s:%d; engine %s, redis %s, queue %s, %d workers; admin token %s; "
        "trace %s",
        host,
        server.server_address[1],
        display_url(engine_url),
        display_url(redis_url),
        queue,
        workers,
        "required" if admin_token else "not set",
        trace_file or "off",
    )
    pool.start()

    def on_stop() -> None:
        stop.set()
        pool.join(0.3)

    return serve(server, "api", on_stop=on_stop)
