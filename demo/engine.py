"""A vLLM look-alike: the OpenAI-compatible chat endpoint, /health, and vLLM's own /metrics.

It generates fake text a token every few milliseconds and keeps the counters and latency
histograms vLLM keeps, under the names of vLLM 0.11 (vllm/v1/metrics/loggers.py: requests waiting
and running, KV cache usage, prompt and generation tokens, time to first token, inter-token latency,
end-to-end latency, queue time; label model_name), so the exporter's engine collector, the client
probes and the dashboards read it as they would read vLLM. Its faults are the ones that fool a
naive monitor:

    stall  requests are accepted and wait (vllm:num_requests_waiting rises), nothing is generated
           (vllm:generation_tokens_total stays flat, running requests freeze too), and /health
           still answers 200: that is what vLLM does when its engine loop is dead.
    slow   each request waits `seconds` in the queue before it is scheduled.
    error  chat completions answer 500.
    down   /health, /metrics and the OpenAI endpoints answer 503 (the admin still answers).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .admin import Admin
from .faults import FaultState
from .web import BadRequest, Handler, Server, serve

log = logging.getLogger("demo.engine")

FAULTS = ("none", "stall", "slow", "error", "down")
DEFAULT_MAX_TOKENS = 16
MAX_TOKENS_LIMIT = 4096
MAX_MODEL_LEN = 8192
KV_CACHE_TOKENS = 16384  # the pretend KV cache: tokens of running requests over this is the usage
SENTENCE = (
    "The chain from client to GPU has many links, and the exporter walks each of them in order "
    "until it finds the first one that is broken."
)


# Histogram buckets, in seconds: a token takes milliseconds, a whole answer up to minutes.
FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Histogram:
    """Cumulative buckets, sum and count of observations, as Prometheus exposes a histogram."""

    def __init__(self, name: str, help_text: str, bounds: tuple[float, ...]) -> None:
        self.name, self.help_text, self.bounds = name, help_text, bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.observations = 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
        self.total += value
        self.observations += 1

    def lines(self, labels: str) -> list[str]:
        """The text-format lines; `labels` is the inside of the braces, without them."""
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        for bound, count in zip(self.bounds, self.counts, strict=True):
            lines.append(f'{self.name}_bucket{{{labels},le="{bound!r}"}} {float(count)!r}')
        lines.append(f'{self.name}_bucket{{{labels},le="+Inf"}} {float(self.observations)!r}')
        lines.append(f"{self.name}_sum{{{labels}}} {self.total!r}")
        lines.append(f"{self.name}_count{{{labels}}} {float(self.observations)!r}")
        return lines


@dataclass
class RequestClock:
    """When one request arrived, was scheduled and produced its last token (time.monotonic())."""

    arrived: float = field(default_factory=time.monotonic)
    last_token: float | None = None


class EngineState:
    """vLLM's scheduler counters and latency histograms, shared by every request thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waiting = 0
        self.running = 0
        self.kv_tokens = 0  # tokens held in the KV cache by running requests
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.first_token = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            FIRST_TOKEN_BUCKETS,
        )
        self.inter_token = Histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            INTER_TOKEN_BUCKETS,
        )
        self.end_to_end = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            REQUEST_BUCKETS,
        )
        self.queue_time = Histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_BUCKETS,
        )

    def enqueue(self) -> RequestClock:
        with self._lock:
            self.waiting += 1
        return RequestClock()

    def schedule(self, prompt_tokens: int, max_tokens: int, clock: RequestClock) -> None:
        with self._lock:
            self.waiting -= 1
            self.running += 1
            self.prompt_tokens += prompt_tokens
            self.kv_tokens += prompt_tokens + max_tokens
            self.queue_time.observe(time.monotonic() - clock.arrived)

    def generated(self, clock: RequestClock) -> None:
        now = time.monotonic()
        with self._lock:
            self.generation_tokens += 1
            if clock.last_token is None:
                self.first_token.observe(now - clock.arrived)
            else:
                self.inter_token.observe(now - clock.last_token)
        clock.last_token = now

    def finish(self, prompt_tokens: int, max_tokens: int, clock: RequestClock) -> None:
        with self._lock:
            self.running -= 1
            self.kv_tokens -= prompt_tokens + max_tokens
            if clock.last_token is not None:  # answered: a request cut off mid-way is no latency
                self.end_to_end.observe(time.monotonic() - clock.arrived)

    def exposition(self, model: str) -> bytes:
        """Prometheus text format 0.0.4, the way vLLM's prometheus_client writes it: a counter's
        HELP and TYPE lines name the sample, `_total` included."""
        with self._lock:
            values = (self.waiting, self.running, self.kv_tokens, self.prompt_tokens, self.generation_tokens)
            escaped = model.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            labels = f'model_name="{escaped}"'
            histograms = [
                line
                for histogram in (self.first_token, self.inter_token, self.end_to_end, self.queue_time)
                for line in histogram.lines(labels)
            ]
        waiting, running, kv_tokens, prompt, generation = values
        families = (
            ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", running),
            ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", waiting),
            (
                "vllm:kv_cache_usage_perc",
                "gauge",
                "KV-cache usage. 1 means 100 percent usage.",
                min(1.0, kv_tokens / KV_CACHE_TOKENS),
            ),
            ("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", prompt),
            ("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.", generation),
        )
        lines = []
        for name, kind, help_text, value in families:
            lines += [
                f"# HELP {name} {help_text}",
                f"# TYPE {name} {kind}",
                f"{name}{{{labels}}} {float(value)!r}",
            ]
        return ("\n".join(lines + histograms) + "\n").encode()


@dataclass
class Engine:
    model: str
    token_delay: float
    faults: FaultState
    admin: Admin
    state: EngineState


@dataclass(frozen=True)
class ChatRequest:
    prompt_tokens: int
    max_tokens: int
    stream: bool


class EngineHandler(Handler):
    server_version = "demo-vllm"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        engine: Engine = self.app
        if engine.admin.handles(self):
            engine.admin.handle(self)
            return
        route = (self.command, self.route)
        known = {
            ("GET", "/health"),
            ("GET", "/metrics"),
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
        }
        if route not in known:
            self.close_connection = True
            if self.route in {path for _, path in known}:
                self._error(405, "Method Not Allowed")
            else:
                self._error(404, "Not Found")
            return
        if engine.faults.current().name == "down":
            self.close_connection = True
            self._error(503, "The engine is not available (injected fault: down).")
            return
        if route == ("GET", "/health"):
            self.send_body(200, b"", "text/plain")  # vLLM answers an empty 200, even with a dead engine
        elif route == ("GET", "/metrics"):
            self.send_body(
                200, engine.state.exposition(engine.model), "text/plain; version=0.0.4; charset=utf-8"
            )
        elif route == ("GET", "/v1/models"):
            self.send_json(200, _models(engine.model))
        else:
            self._chat(engine)

    def _error(self, status: int, message: str) -> None:
        kind = {
            400: "BadRequestError",
            404: "NotFoundError",
            405: "BadRequestError",
            503: "ServiceUnavailableError",
        }
        payload = {
            "object": "error",
            "message": message,
            "type": kind.get(status, "InternalServerError"),
            "param": None,
            "code": status,
        }
        self.send_json(status, payload)

    def _chat(self, engine: Engine) -> None:
        try:
            request = _parse_chat(self.read_json(), engine.model)
        except BadRequest as exc:
            self._error(exc.status, str(exc))
            return
        if engine.faults.current().name == "error":
            log.error("chat completion failed: injected fault: error")
            self._error(500, "Internal server error (injected fault: error).")
            return
        state = engine.state
        clock = state.enqueue()
        fault = engine.faults.current()
        if fault.name == "slow":
            engine.faults.pause(fault)
        engine.faults.wait_while("stall")  # accepted and waiting, never scheduled while stalled
        state.schedule(request.prompt_tokens, request.max_tokens, clock)
        try:
            if request.stream:
                self._stream(engine, request, clock)
            else:
                text = "".join(_generate(engine, request.max_tokens, clock))
                self.send_json(200, _completion(engine.model, request, text))
        except OSError:
            self.close_connection = True  # the client went away mid-answer
        finally:
            state.finish(request.prompt_tokens, request.max_tokens, clock)

    def _stream(self, engine: Engine, request: ChatRequest, clock: RequestClock) -> None:
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def event(delta: dict[str, str], finish: str | None = None) -> bytes:
            chunk = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": engine.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        self.start_stream(200, "text/event-stream; charset=utf-8")
        self.write_chunk(event({"role": "assistant", "content": ""}))
        for token in _generate(engine, request.max_tokens, clock):
            self.write_chunk(event({"content": token}))
        self.write_chunk(event({}, "length"))
        self.write_chunk(b"data: [DONE]\n\n")
        self.end_stream()


_WORDS = SENTENCE.split(" ")


def _generate(engine: Engine, max_tokens: int, clock: RequestClock) -> Iterator[str]:
    """Fake tokens, one every token_delay seconds; a stall freezes running requests too."""
    for index in range(max_tokens):
        engine.faults.wait_while("stall")
        if engine.token_delay:
            time.sleep(engine.token_delay)
        engine.state.generated(clock)
        yield ("" if index == 0 else " ") + _WORDS[index % len(_WORDS)]


def _parse_chat(body: Any, model: str) -> ChatRequest:
    if not isinstance(body, dict):
        raise BadRequest(400, "The request body must be a JSON object.")
    requested = body.get("model", model)
    if requested != model:
        raise BadRequest(404, f"The model `{requested}` does not exist.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(400, "`messages` must be a non-empty list.")
    words = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise BadRequest(400, "Each message needs a `content` string.")
        words += len(content.split())
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", DEFAULT_MAX_TOKENS))
    if (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        raise BadRequest(400, f"`max_tokens` must be an integer from 1 to {MAX_TOKENS_LIMIT}.")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(400, "`stream` must be a boolean.")
    return ChatRequest(prompt_tokens=max(1, words), max_tokens=max_tokens, stream=stream)


def _models(model: str) -> dict[str, Any]:
    card = {
        "id": model,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "vllm",
        "root": model,
        "parent": None,
        "max_model_len": MAX_MODEL_LEN,
    }
    return {"object": "list", "data": [card]}


def _completion(model: str, request: ChatRequest, text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {
            "prompt_tokens": request.prompt_tokens,
            "completion_tokens": request.max_tokens,
            "total_tokens": request.prompt_tokens + request.max_tokens,
        },
    }


def run(host: str, port: int, model: str, token_delay: float, admin_token: str | None) -> int:
    faults = FaultState("engine", FAULTS)
    engine = Engine(model, token_delay, faults, Admin(faults, admin_token), EngineState())
    server = Server((host, port), EngineHandler, engine)
    log.info(
        "demo engine (vLLM look-alike) serving model %s on http://%s:%d; admin token %s",
        model,
        host,
        server.server_address[1],
        "required" if admin_token else "not set",
    )
    return serve(server, "engine")
