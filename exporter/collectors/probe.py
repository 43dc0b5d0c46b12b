"""Client probes: the request a user would send, timed by phase, and WHY it failed when it did.

Modules (blackbox_exporter is the model): `inference` sends the seed's `POST /inference`,
`openai_chat` asks `/v1/chat/completions` for one token (optionally streamed, timing the first
token), `http` is a GET with expectations, `tcp` only connects. A health endpoint that answers
200 is not proof of life (vLLM's /health stays 200 while its engine is dead), so the defaults
probe by generating.

All targets run concurrently on one event loop, so a cycle costs the slowest probe, not the sum;
each probe has its own connect and total deadline. Every probe opens a fresh connection, as a new
client would. Failure reasons are a bounded set, so a verdict can be drawn from them.

While a probe waits it is noted in an InFlightRegistry (see inflight.py), so a hang is known
seconds after it began, not only when the probe times out. Every probe's duration also goes into
a histogram (failed ones at the time they failed), the base of availability and latency objectives.
Text the probed server sent (a body excerpt, a protocol error) is redacted before it is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from ..config import INFERENCE_BODY, ProbeTarget
from ..config.credentials import SecretError, authorization
from ..facts.probe import ProbeFacts, ProbeOutcome, TargetFacts
from ..logs.redact import redact
from ..logs.urls import display_url
from ..metrics.spec import Families, Family, MetricSpec, counter, gauge, histogram, info
from .base import Collector, Result
from .inflight import InFlightRegistry

PHASES = ("resolve", "connect", "tls", "processing", "transfer")
REASONS = (
    "dns",
    "connect_refused",
    "connect_timeout",
    "unreachable",
    "tls",
    "read_timeout",
    "reset",
    "http_status",
    "bad_body",
    "config",
)
MAX_BODY_BYTES = 1024 * 1024
USER_AGENT = "autoglm-exporter-probe"
EXCERPT_CHARS = 120  # of an answer's body, in a failed probe's message
# Fit for LLM answers: a quarter second for a cached reply up to a minute for a long generation;
# the seed's 30 s timeout is a bucket bound, so "answered within the timeout" is a ratio of buckets.
DURATION_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60)

SUCCESS = gauge("autoglm_probe_success", "1 when the target's last probe succeeded, else 0.", "target")
DURATION = gauge("autoglm_probe_duration_seconds", "How long the target's last probe took in all.", "target")
PHASE_DURATION = gauge(
    "autoglm_probe_phase_duration_seconds",
    "Time the last probe spent in each phase: resolve, connect, tls, processing (until the response "
    "headers), transfer (the body); 0 for phases it did not reach.",
    "target",
    "phase",
)
STATUS = gauge(
    "autoglm_probe_http_status_code", "HTTP status of the last probe's response, 0 if none.", "target"
)
TTFT = gauge(
    "autoglm_probe_time_to_first_token_seconds",
    "Streaming probes: time from sending the request to the first generated token.",
    "target",
)
FAILURES = counter(
    "autoglm_probe_failures",
    "Failed probes by reason: dns, connect_refused, connect_timeout, unreachable, tls, read_timeout, "
    "reset, http_status, bad_body, config.",
    "target",
    "reason",
)
LAST_FINISHED = gauge(
    "autoglm_probe_last_finished_timestamp_seconds",
    "When the target's last probe finished, in seconds since the epoch (time() minus it is its age).",
    "target",
)
CONSECUTIVE = gauge(
    "autoglm_probe_consecutive_failures",
    "Probes of the target that failed in a row, 0 after a success.",
    "target",
)
REQUEST_DURATION = histogram(
    "autoglm_probe_request_duration_seconds",
    "How long each probe of the target took, failed ones until they failed; its _count is the number of "
    "probes.",
    "target",
)
FIRST_TOKEN = histogram(
    "autoglm_probe_first_token_seconds",
    "Streaming openai_chat probes: time from sending the request to the first generated token, per probe "
    "that got one.",
    "target",
)
TARGET_INFO = info(
    "autoglm_probe_target",
    "What each probe target is: module, layer of the chain, service it belongs to, URL without credentials.",
    "target",
    "module",
    "layer",
    "service",
    "url",
)


class ProbeFailure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ProbeCollector(Collector):
    name = "probe"
    metrics = (
        SUCCESS,
        DURATION,
        PHASE_DURATION,
        STATUS,
        TTFT,
        FAILURES,
        LAST_FINISHED,
        CONSECUTIVE,
        REQUEST_DURATION,
        FIRST_TOKEN,
        TARGET_INFO,
    )
    items_attribute = "targets"
    state_per_item = ("_failures", "_consecutive", "_durations", "_first_tokens", "_models")

    def __init__(self, targets: tuple[ProbeTarget, ...], in_flight: InFlightRegistry | None = None) -> None:
        self.targets = targets
        self.in_flight = in_flight or InFlightRegistry()
        self.settings = (targets,)
        self._failures = {t.name: dict.fromkeys(REASONS, 0) for t in targets}
        self._consecutive = {t.name: 0 for t in targets}
        self._durations = {t.name: _Histogram() for t in targets}
        self._first_tokens = {t.name: _Histogram() for t in targets if _streams(t)}
        self._models: dict[str, str] = {}  # openai_chat target -> model discovered from /v1/models

    def collect(self) -> Result:
        outcomes = asyncio.run(self._probe_all()) if self.targets else []
        now = time.time()
        facts = {}
        for target, outcome in zip(self.targets, outcomes, strict=True):
            self._durations[target.name].observe(outcome.duration)
            if outcome.ttft is not None and target.name in self._first_tokens:
                self._first_tokens[target.name].observe(outcome.ttft)
            if outcome.success:
                self._consecutive[target.name] = 0
            else:
                self._consecutive[target.name] += 1
                self._failures[target.name][outcome.reason or "bad_body"] += 1
            facts[target.name] = TargetFacts(
                target.name,
                target.module,
                target.layer,
                target.service,
                display_url(target.url),
                outcome,
                self._consecutive[target.name],
                now,
            )
        return Result(self._families(facts), ProbeFacts(facts))

    async def _probe_all(self) -> list[ProbeOutcome]:
        return list(await asyncio.gather(*(self._probe(target) for target in self.targets)))

    async def _probe(self, target: ProbeTarget) -> ProbeOutcome:
        self.in_flight.started(target)
        try:
            return await self._probe_once(target, _Timings(lambda: self.in_flight.connected(target.name)))
        finally:
            self.in_flight.finished(target.name)

    async def _probe_once(self, target: ProbeTarget, timings: _Timings) -> ProbeOutcome:
        started = time.monotonic()
        try:
            async with asyncio.timeout(target.timeout):
                if target.module == "tcp":
                    await _probe_tcp(target, timings)
                    status, ttft = None, None
                else:
                    status, ttft = await self._probe_http(target, timings)
        except ProbeFailure as failure:
            return _failed(failure.reason, str(failure), started, timings)
        except TimeoutError:
            reason = "read_timeout" if timings.connected else "connect_timeout"
            if timings.in_tls_handshake():
                reason = "tls"
            return _failed(reason, f"no answer within {target.timeout:g}s", started, timings)
        except httpx.HTTPError as exc:
            reason, message = classify_http_error(exc)
            if isinstance(exc, httpx.TimeoutException) and timings.in_tls_handshake():
                reason, message = "tls", "TLS handshake timed out"
            return _failed(reason, message, started, timings)
        except OSError as exc:
            reason, message = classify_os_error(exc)
            return _failed(reason, message, started, timings)
        return ProbeOutcome(
            True,
            status=status,
            duration=time.monotonic() - started,
            phases=timings.phases(),
            connected=True,
            ttft=ttft,
        )

    async def _probe_http(self, target: ProbeTarget, timings: _Timings) -> tuple[int | None, float | None]:
        parts = urlsplit(target.url)
        await timings.resolve(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        async with _client(target) as client:
            if target.module == "openai_chat":
                return await self._probe_openai(client, target, timings)
            if target.module == "inference":
                body = target.body if target.body is not None else INFERENCE_BODY
                request = client.build_request("POST", target.url, json=body)
            else:
                request = client.build_request("GET", target.url)
            status, payload = await _send(client, request, timings)
            _check_answer(target, status, payload)
            return status, None

    async def _probe_openai(
        self, client: httpx.AsyncClient, target: ProbeTarget, timings: _Timings
    ) -> tuple[int | None, float | None]:
        model = (
            target.model
            or self._models.get(target.name)
            or await self._discover_model(client, target, timings)
        )
        body = dict(target.body) if isinstance(target.body, dict) else {}
        body.setdefault("model", model)
        body.setdefault("messages", [{"role": "user", "content": "Hello"}])
        body.setdefault("max_tokens", 1)
        body["stream"] = target.stream
        request = client.build_request("POST", target.url, json=body)
        try:
            if target.stream:
                return await _stream_first_token(client, request, timings, target)
            status, payload = await _send(client, request, timings)
            if status == 404 and not target.model:
                self._models.pop(target.name, None)  # the served model changed: ask again next time
            _check_answer(target, status, payload, default_field="choices.0")
        except ProbeFailure as failure:
            if failure.reason == "http_status" and timings.status == 404 and target.model:
                await self._refuse_unserved(client, target, timings)
            raise
        return status, None

    async def _refuse_unserved(
        self, client: httpx.AsyncClient, target: ProbeTarget, timings: _Timings
    ) -> None:
        """A 404 for the model the probe names, which the server's model list lacks: the probe is
        misconfigured (`config`), the server is fine. Returns when the list has it or is not there."""
        try:
            served = await self._served_models(client, target, timings)
        except (ProbeFailure, httpx.HTTPError):
            return
        if target.model not in served:
            listed = ", ".join(served[:5]) + (" ..." if len(served) > 5 else "")
            raise ProbeFailure(
                "config", f"the server does not serve model {target.model!r} (it serves {listed})"
            )

    async def _discover_model(self, client: httpx.AsyncClient, target: ProbeTarget, timings: _Timings) -> str:
        model = (await self._served_models(client, target, timings))[0]
        self._models[target.name] = model
        return model

    async def _served_models(
        self, client: httpx.AsyncClient, target: ProbeTarget, timings: _Timings
    ) -> list[str]:
        """The ids GET /v1/models lists (at least one), else ProbeFailure bad_body."""
        parts = urlsplit(target.url)
        prefix = parts.path.split("/chat/completions")[0] or "/v1"
        models_url = urlunsplit((parts.scheme, parts.netloc, prefix + "/models", "", ""))
        response = await client.get(models_url, extensions={"trace": timings.trace})
        try:
            models = [str(model["id"]) for model in response.json()["data"]]
            if not models:
                raise LookupError("no model")
        except (ValueError, LookupError, TypeError):
            answer = f"HTTP {response.status_code}{_excerpt(response.content)}"
            raise ProbeFailure("bad_body", f"GET {prefix}/models gave no model ({answer})") from None
        return models

    def _families(self, facts: dict[str, TargetFacts]) -> list[Family]:
        families = Families(spec for spec in self.metrics if spec.kind != "histogram")
        add = families.add

        for target in self.targets:
            fact = facts[target.name]
            outcome = fact.outcome
            name = target.name
            add(SUCCESS, [name], 1 if outcome.success else 0)
            add(DURATION, [name], outcome.duration)
            for phase in PHASES:
                add(PHASE_DURATION, [name, phase], outcome.phases.get(phase, 0.0))
            add(STATUS, [name], outcome.status or 0)
            if target.stream and outcome.ttft is not None:
                add(TTFT, [name], outcome.ttft)
            for reason, count in self._failures[name].items():
                add(FAILURES, [name, reason], count)
            add(LAST_FINISHED, [name], fact.finished_at)
            add(CONSECUTIVE, [name], fact.consecutive_failures)

            add(
                TARGET_INFO,
                [name],
                {
                    "module": target.module,
                    "layer": target.layer,
                    "service": target.service or "",
                    "url": fact.url,
                },
            )
        return families.list() + [
            _histogram_family(REQUEST_DURATION, self._durations),
            _histogram_family(FIRST_TOKEN, self._first_tokens),
        ]


class _Histogram:
    """Cumulative counts of observations per bucket of DURATION_BUCKETS, and their sum."""

    def __init__(self) -> None:
        self.counts = [0] * len(DURATION_BUCKETS)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for index, bound in enumerate(DURATION_BUCKETS):
            if value <= bound:
                self.counts[index] += 1

    def buckets(self) -> list[tuple[str, int]]:
        bounds = [floatToGoString(bound) for bound in DURATION_BUCKETS]
        return list(zip(bounds, self.counts, strict=True)) + [("+Inf", self.count)]


def _histogram_family(spec: MetricSpec, histograms: dict[str, _Histogram]) -> Family:
    family = cast(HistogramMetricFamily, spec.family())
    for target, observed in histograms.items():
        family.add_metric([target], observed.buckets(), observed.sum)
    return cast(Family, family)


def _streams(target: ProbeTarget) -> bool:
    return target.module == "openai_chat" and target.stream


class _Timings:
    """Phase timestamps, fed by our own DNS lookup and httpx's trace extension."""

    def __init__(self, on_connected: Callable[[], None] = lambda: None) -> None:
        self.marks: dict[str, float] = {}
        self.connected = False
        self.status: int | None = None  # of the answer, once its headers arrived
        self._on_connected = on_connected

    def mark_connected(self) -> None:
        self.marks["connection.connect_tcp.complete"] = time.monotonic()
        self.connected = True
        self._on_connected()

    async def resolve(self, host: str, port: int) -> None:
        self.marks["resolve.started"] = time.monotonic()
        try:
            await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ProbeFailure("dns", f"cannot resolve {host}: {exc.strerror}") from None
        self.marks["resolve.complete"] = time.monotonic()

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            self.mark_connected()
        else:
            self.marks[event] = time.monotonic()

    def in_tls_handshake(self) -> bool:
        return (
            "connection.start_tls.started" in self.marks and "connection.start_tls.complete" not in self.marks
        )

    def span(self, start: str, end: str) -> float | None:
        if start in self.marks and end in self.marks:
            return max(0.0, self.marks[end] - self.marks[start])
        return None

    def phases(self) -> dict[str, float]:
        spans = {
            "resolve": self.span("resolve.started", "resolve.complete"),
            "connect": self.span("connection.connect_tcp.started", "connection.connect_tcp.complete"),
            "tls": self.span("connection.start_tls.started", "connection.start_tls.complete"),
            "processing": self.span(
                "http11.send_request_headers.started", "http11.receive_response_headers.complete"
            ),
            "transfer": self.span(
                "http11.receive_response_body.started", "http11.receive_response_body.complete"
            ),
        }
        return {phase: value for phase, value in spans.items() if value is not None}


@functools.lru_cache(maxsize=16)
def _cached_trust(ca_file: str | None, changed: float) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def _trust(ca_file: str | None) -> ssl.SSLContext:
    """The CA store to verify servers with. Loading it costs milliseconds of CPU (holding the GIL
    that scrapes need), so it is built once per file version, not per probe."""
    try:
        changed = os.stat(ca_file).st_mtime if ca_file else 0.0
        return _cached_trust(ca_file, changed)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeFailure("config", f"cannot load CA file {ca_file}: {exc}") from None


def _client(target: ProbeTarget) -> httpx.AsyncClient:
    try:
        credentials = authorization(target)
    except SecretError as exc:
        raise ProbeFailure("config", str(exc)) from None
    headers = {"User-Agent": USER_AGENT, **target.headers}
    if credentials:
        headers["Authorization"] = credentials
    verify: ssl.SSLContext | bool = False if target.tls_insecure_skip_verify else _trust(target.tls_ca_file)
    timeout = httpx.Timeout(target.timeout, connect=target.connect_timeout)
    # A fresh client (and connection) per probe, no retries, no proxies from the environment:
    # we measure what a client on this machine meets, not what a pool remembers.
    return httpx.AsyncClient(headers=headers, timeout=timeout, verify=verify, trust_env=False)


async def _send(client: httpx.AsyncClient, request: httpx.Request, timings: _Timings) -> tuple[int, bytes]:
    request.extensions["trace"] = timings.trace
    response = await client.send(request, stream=True)
    timings.status = response.status_code
    try:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise ProbeFailure("bad_body", f"answer larger than {MAX_BODY_BYTES} bytes")
        return response.status_code, bytes(body)
    finally:
        await response.aclose()


async def _stream_first_token(
    client: httpx.AsyncClient, request: httpx.Request, timings: _Timings, target: ProbeTarget
) -> tuple[int | None, float | None]:
    request.extensions["trace"] = timings.trace
    sent = time.monotonic()
    ttft: float | None = None
    response = await client.send(request, stream=True)
    timings.status = response.status_code
    try:
        if not _status_ok(target, response.status_code):
            raise ProbeFailure("http_status", f"HTTP {response.status_code}")
        received = 0
        async for line in response.aiter_lines():
            received += len(line)
            if received > MAX_BODY_BYTES:
                raise ProbeFailure("bad_body", f"stream larger than {MAX_BODY_BYTES} bytes")
            data = line[5:].strip() if line.startswith("data:") else ""
            if not data or data == "[DONE]":
                continue
            try:
                chunk = json.loads(data)
            except ValueError:
                raise ProbeFailure("bad_body", "stream chunk is not JSON") from None
            if ttft is None and isinstance(chunk, dict) and chunk.get("choices"):
                ttft = time.monotonic() - sent
        if ttft is None:
            raise ProbeFailure("bad_body", "stream ended without a generated token")
        return response.status_code, ttft
    finally:
        await response.aclose()


def _status_ok(target: ProbeTarget, status: int) -> bool:
    return status in target.expect_status if target.expect_status else 200 <= status < 300


def _check_answer(target: ProbeTarget, status: int, payload: bytes, default_field: str | None = None) -> None:
    if not _status_ok(target, status):
        raise ProbeFailure("http_status", f"HTTP {status}{_excerpt(payload)}")
    if target.expect_body_regex and not re.search(
        target.expect_body_regex, payload.decode("utf-8", "replace")
    ):
        raise ProbeFailure("bad_body", f"answer does not match expect.body_regex{_excerpt(payload)}")
    wants_json = target.module in ("inference", "openai_chat") or target.expect_json_field
    if not wants_json:
        return
    try:
        document = json.loads(payload)
    except ValueError:
        raise ProbeFailure("bad_body", f"answer is not valid JSON{_excerpt(payload)}") from None
    field_path = target.expect_json_field or default_field
    if field_path and not _has_field(document, field_path):
        raise ProbeFailure("bad_body", f"answer has no field {field_path}{_excerpt(payload)}")


def _excerpt(payload: bytes) -> str:
    """': ' and the start of an answer's body on one line, redacted, for a failure's message."""
    text = " ".join(payload[: EXCERPT_CHARS * 4].decode("utf-8", "replace").split())
    if not text:
        return ""
    text = redact(text)  # before shortening: a cut must not leave half a secret
    return ": " + (text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 3] + "...")


def _has_field(document: Any, dotted: str) -> bool:
    node = document
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


async def _probe_tcp(target: ProbeTarget, timings: _Timings) -> None:
    host, _, port = target.url.rpartition(":")
    host = host.strip("[]")
    await timings.resolve(host, int(port))
    timings.marks["connection.connect_tcp.started"] = time.monotonic()
    try:
        async with asyncio.timeout(target.connect_timeout):
            _, writer = await asyncio.open_connection(host, int(port))
    except TimeoutError:
        raise ProbeFailure("connect_timeout", f"no connection within {target.connect_timeout:g}s") from None
    timings.mark_connected()
    writer.close()
    with contextlib.suppress(OSError):  # a peer that resets on close still accepted the connection
        await writer.wait_closed()


def _failed(reason: str, message: str, started: float, timings: _Timings) -> ProbeOutcome:
    return ProbeOutcome(
        False,
        reason=reason,
        error=redact(message),  # it may quote what the server sent
        status=timings.status,
        duration=time.monotonic() - started,
        phases=timings.phases(),
        connected=timings.connected,
    )


def classify_http_error(exc: httpx.HTTPError) -> tuple[str, str]:
    """Map an httpx failure to a bounded reason by what the socket underneath said."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect_timeout", "connect timed out"
    if isinstance(exc, httpx.TimeoutException):
        return "read_timeout", "connected, but no answer in time"
    if isinstance(exc, httpx.DecodingError):
        return "bad_body", "answer could not be decoded"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "reset", f"connection closed mid-answer: {exc}"
    cause = _root_cause(exc)
    if isinstance(cause, ssl.SSLError):
        return "tls", f"TLS handshake failed: {cause.reason or cause}"
    if isinstance(cause, OSError):
        return classify_os_error(cause)
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if "Connection refused" in text:
            return "connect_refused", "connection refused: nothing listens on the port"
        if "certificate" in text.lower() or "ssl" in text.lower():
            return "tls", f"TLS handshake failed: {text}"
        return "unreachable", text or "connect failed"
    return "reset", str(exc) or type(exc).__name__


def classify_os_error(exc: OSError) -> tuple[str, str]:
    if isinstance(exc, socket.gaierror):
        return "dns", f"cannot resolve: {exc.strerror}"
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "connect_refused", "connection refused: nothing listens on the port"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset", "connection reset by peer"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable", f"no route: {exc.strerror}"
    if exc.errno == errno.ETIMEDOUT:
        return "connect_timeout", "connect timed out"
    return "unreachable", exc.strerror or str(exc)


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return seen
