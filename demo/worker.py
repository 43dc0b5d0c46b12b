"""The api's workers: take jobs off the Redis queue, have the engine generate, hand back the result.

Each worker does one job at a time and waits for the engine as long as the engine timeout allows.
So when the engine stalls, every worker ends up waiting on it and new jobs stay in the Redis list:
the queue depth grows, which is what the exporter's Redis collector and the stall verdict see.
A worker writes the `dequeued` and `generated` points of the request trace (trace.py).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import urllib.error
import urllib.request
from typing import Any

import redis

from .jobs import RESULT_TTL_SECONDS, Job, Outcome, result_key
from .trace import Trace
from .web import display_url

log = logging.getLogger("demo.api")

POLL_SECONDS = 1.0  # BRPOP's timeout: how often an idle worker notices that the process stops
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class EngineError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class EngineClient:
    """OpenAI-compatible chat completions from the engine, through urllib (no proxies)."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._model: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def complete(self, prompt: str, max_tokens: int) -> str:
        body = {
            "model": self._model or self._discover_model(),
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
        }
        answer = self._call("POST", "/v1/chat/completions", body)
        try:
            return str(answer["choices"][0]["message"]["content"])
        except (LookupError, TypeError):
            raise EngineError(502, "the engine's answer has no choices[0].message.content") from None

    def _discover_model(self) -> str:
        answer = self._call("GET", "/v1/models")
        try:
            self._model = str(answer["data"][0]["id"])
        except (LookupError, TypeError):
            raise EngineError(502, "the engine's /v1/models lists no model") from None
        return self._model

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and path != "/v1/models":
                self._model = None  # the engine serves another model now: ask again next time
            raise EngineError(502, f"the engine answered HTTP {exc.code} to {method} {path}") from None
        except TimeoutError:
            raise EngineError(
                504, f"the engine did not answer {method} {path} within {self.timeout:g}s"
            ) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise EngineError(504, f"the engine did not answer within {self.timeout:g}s") from None
            raise EngineError(502, f"cannot reach the engine at {self.url}: {exc.reason}") from None
        except OSError as exc:
            raise EngineError(502, f"the engine connection failed: {exc}") from None
        except http.client.HTTPException as exc:  # a bad status line, a header line too long, a short body
            raise EngineError(
                502, f"the engine's answer to {method} {path} is not HTTP: {exc!r:.200}"
            ) from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise EngineError(502, f"the engine's answer is larger than {MAX_ANSWER_BYTES} bytes")
        try:
            return json.loads(raw)
        except ValueError:
            raise EngineError(502, f"the engine's answer to {method} {path} is not JSON") from None


class Workers:
    def __init__(
        self,
        count: int,
        redis_url: str,
        queue: str,
        engine: EngineClient,
        stop: threading.Event,
        trace: Trace | None = None,
    ) -> None:
        self.count = count
        self.queue = queue
        self.engine = engine
        self.stop = stop
        self.trace = trace or Trace()
        self.redis_url = redis_url
        # BRPOP blocks up to POLL_SECONDS: the socket may wait a little longer than that.
        self._redis = redis.Redis.from_url(
            redis_url, socket_connect_timeout=2, socket_timeout=POLL_SECONDS + 5, decode_responses=True
        )
        self._threads: list[threading.Thread] = []
        self._redis_down = False
        self._state_lock = threading.Lock()

    def start(self) -> None:
        for index in range(self.count):
            thread = threading.Thread(target=self._run, name=f"worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> None:
        """Wait a little for idle workers; one stuck on the engine is a daemon and does not hold the exit."""
        for thread in self._threads:
            thread.join(timeout / max(1, len(self._threads)))

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                item = self._redis.brpop([self.queue], timeout=POLL_SECONDS)
            except redis.RedisError as exc:
                self._redis_failed(exc)
                self.stop.wait(0.5)
                continue
            self._redis_ok()
            if item is None:
                continue
            try:
                job = Job.decode(item[1])
            except ValueError as exc:
                log.error("dropped a malformed job from %s: %s", self.queue, exc)
                continue
            self.trace.point(job.request_id, "dequeued")
            try:
                self._process(job)
            except Exception:  # a bug costs one job, never the worker
                log.exception("request %s: the worker failed", job.request_id)

    def _process(self, job: Job) -> None:
        try:
            outcome = Outcome(200, text=self.engine.complete(job.prompt, job.max_tokens))
            self.trace.point(job.request_id, "generated")  # before the result: the handler's done follows
        except EngineError as exc:
            outcome = Outcome(exc.status, error=str(exc))
        except Exception as exc:  # still answer the client (502) rather than leave it to time out
            log.exception("request %s: the worker failed", job.request_id)
            outcome = Outcome(502, error=f"the worker failed: {type(exc).__name__}")
        key = result_key(self.queue, job.request_id)
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, outcome.encode())
                pipe.expire(key, RESULT_TTL_SECONDS)
                pipe.execute()
        except redis.RedisError as exc:
            log.error("request %s: cannot store the result in redis: %s", job.request_id, exc)

    def _redis_failed(self, exc: Exception) -> None:
        with self._state_lock:
            first, self._redis_down = not self._redis_down, True
        if first:
            log.error("workers cannot reach redis at %s: %s", display_url(self.redis_url), exc)

    def _redis_ok(self) -> None:
        with self._state_lock:
            recovered, self._redis_down = self._redis_down, False
        if recovered:
            log.info("workers reach redis at %s again", display_url(self.redis_url))
