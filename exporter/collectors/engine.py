"""The inference engine's own view: its queue, its KV cache, and whether it still generates tokens.

Each run GETs every configured engine's Prometheus endpoint (at most 8 MiB; the whole exchange,
connection to last byte, is bounded by the engine's timeout: a server that trickles its headers or
body a byte at a time fails at the timeout, never holds the run), parses it, and re-exports a few
of its series under our names with an `engine` label. Values are summed over the engine's label
sets (several models, several engine cores); the KV cache ratio takes the highest one, since one
full cache is what makes requests wait.

    ours                                 vLLM (kind: vllm)                 SGLang (kind: sglang)
    autoglm_engine_requests_waiting      vllm:num_requests_waiting         sglang:num_queue_reqs
    autoglm_engine_requests_running      vllm:num_requests_running         sglang:num_running_reqs
    autoglm_engine_kv_cache_usage_ratio  vllm:kv_cache_usage_perc,         sglang:token_usage
                                         else vllm:gpu_cache_usage_perc
    autoglm_engine_generation_tokens_total  vllm:generation_tokens_total   sglang:generation_tokens_total
    autoglm_engine_prompt_tokens_total   vllm:prompt_tokens_total          sglang:prompt_tokens_total

vLLM versions: 0.11 and 0.32 serve the first vLLM name of each row (0.32 is checked against the
real server by tests/test_vllm_contract.py; both pages are in the golden test). Both of vLLM's
cache gauges are fractions despite the "_perc" in their names (vLLM's help text: "1 means 100
percent usage"); vllm:gpu_cache_usage_perc is the older name, the only one of releases before
kv_cache_usage_perc, hidden by default in 0.11 and gone in 0.32: read only when the new one is
absent. SGLang's token_usage is the used share of its KV token pool (0-1). A series the engine
does not expose is absent here too, never 0.

Stall, judged over a window: a reading is flat when requests wait (waiting > 0) and the
generated-token counter did not move since the previous reading; the engine is stalled once
ENGINE_FLAT_READINGS readings in a row were flat and they span as many intervals of this collector
(ENGINE_STALL_WINDOW_SECONDS at the default interval, base/thresholds.py). A slow engine that
still adds a token within the window is never stalled, not even for one reading. There is no
verdict on the first reading or after the counter went down (the engine restarted). SGLang adds a
request's generated tokens when the request finishes, so with SGLang a few long generations can
look flat for a while.

Sleep: vLLM 0.32 serves vllm:engine_sleep_state (per engine core, label sleep_state: awake,
weights_offloaded, discard_all). With no engine core awake the engine sleeps on purpose (its sleep
mode: POST /sleep; level 0 pauses scheduling, 1 offloads the weights, 2 discards them):
autoglm_engine_sleeping is 1, and its waiting requests make no flat row and no stall. 0.11 and SGLang
do not say: the series is absent for them.

Failures (autoglm_engine_failures_total, every reason from the first scrape on):
connect_refused (nothing listens), timeout (no connection, no answer or no complete body within the
timeout), http_status (an answer other than 2xx, redirects included), bad_body (not Prometheus text
format, or over the size limit) and error (anything else: DNS, reset, a broken HTTP answer).
When an engine cannot be read, up is 0 and its other series are absent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..base.thresholds import ENGINE_FLAT_READINGS, READING_SECONDS
from ..config import EngineConfig
from ..facts.engine import EngineFacts, EngineInstanceFacts
from ..logs.urls import display_url
from ..metrics.spec import Families, Family, counter, gauge
from .base import Collector, Result
from .errors import ReasonedFailure, refused, short_message
from .failurelog import FailureLog

log = logging.getLogger(__name__)

FAILURE_REASONS = ("connect_refused", "timeout", "http_status", "bad_body", "error")
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class _Names:
    """The engine's sample names for each field; the first name present wins."""

    waiting: tuple[str, ...]
    running: tuple[str, ...]
    kv_cache: tuple[str, ...]
    generation: tuple[str, ...]
    prompt: tuple[str, ...]
    # A gauge by sleep state (label `sleep_state`): 1 on "awake" while the engine is awake; its other
    # states say the sleep level. Engines that have no sleep mode (or do not say) leave it empty.
    sleep_state: tuple[str, ...] = ()


ENGINE_NAMES = {
    "vllm": _Names(
        waiting=("vllm:num_requests_waiting",),
        running=("vllm:num_requests_running",),
        kv_cache=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        generation=("vllm:generation_tokens_total",),
        prompt=("vllm:prompt_tokens_total",),
        sleep_state=("vllm:engine_sleep_state",),
    ),
    "sglang": _Names(
        waiting=("sglang:num_queue_reqs",),
        running=("sglang:num_running_reqs",),
        kv_cache=("sglang:token_usage",),
        generation=("sglang:generation_tokens_total",),
        prompt=("sglang:prompt_tokens_total",),
    ),
}

UP = gauge(
    "autoglm_engine_up",
    "1 when the engine's metrics endpoint answered 2xx with a Prometheus text body, else 0.",
    "engine",
)
WAITING = gauge(
    "autoglm_engine_requests_waiting",
    "Requests queued in the engine and not yet scheduled, summed over its models.",
    "engine",
)
RUNNING = gauge(
    "autoglm_engine_requests_running",
    "Requests the engine is processing, summed over its models.",
    "engine",
)
KV_CACHE = gauge(
    "autoglm_engine_kv_cache_usage_ratio",
    "Share of the engine's KV cache in use (0-1), the highest over its models (vLLM: kv_cache_usage_perc, "
    "else the older gpu_cache_usage_perc).",
    "engine",
)
GENERATION_TOKENS = counter(
    "autoglm_engine_generation_tokens",
    "Tokens the engine generated, as its own counter reports them (resets when the engine restarts).",
    "engine",
)
PROMPT_TOKENS = counter(
    "autoglm_engine_prompt_tokens",
    "Prompt tokens the engine processed, as its own counter reports them (resets when it restarts).",
    "engine",
)
SLEEPING = gauge(
    "autoglm_engine_sleeping",
    "1 while the engine says it sleeps on purpose (vLLM 0.32+ sleep mode: vllm:engine_sleep_state awake 0 "
    "on every engine core), else 0; absent when the engine does not say.",
    "engine",
)
STALLED = gauge(
    "autoglm_engine_stalled",
    "1 when requests have waited in the engine with no new token at several readings in a row spanning "
    "the stall window (diagnosis thresholds), else 0.",
    "engine",
)
FAILURES = counter(
    "autoglm_engine_failures",
    "Runs in which the engine's metrics could not be read, by reason.",
    "engine",
    "reason",
)


class _Failure(ReasonedFailure):
    """The engine's metrics could not be read, for one of FAILURES' reasons."""


@dataclass(frozen=True)
class _Reading:
    waiting: float | None
    running: float | None
    kv_cache: float | None
    generation: float | None
    prompt: float | None
    says_sleep: bool = False  # the engine serves its sleep state (vLLM 0.32+)
    sleep_level: int | None = None  # None: awake, or the engine does not say; 0-2: asleep at that level

    def empty(self) -> bool:
        return all(
            v is None for v in (self.waiting, self.running, self.kv_cache, self.generation, self.prompt)
        )


class EngineCollector(Collector[EngineFacts]):
    name = "engine"
    metrics = (UP, WAITING, RUNNING, KV_CACHE, GENERATION_TOKENS, PROMPT_TOKENS, SLEEPING, STALLED, FAILURES)
    items_attribute = "engines"
    state_per_item = ("_failures", "_previous_tokens", "_flat", "_failure_log")

    def __init__(
        self,
        engines: tuple[EngineConfig, ...],
        interval: float = READING_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engines = engines
        self._clock = clock
        # A flat row must span its readings' intervals, less half a reading of scheduler jitter:
        # readings taken again seconds apart never make a window on their own.
        self._stall_span = (ENGINE_FLAT_READINGS - 1) * interval - interval / 2
        self.settings = (engines, interval)
        # Built once: a client's default CA store costs milliseconds of CPU (with the GIL) to load.
        self._trust = ssl.create_default_context()
        self._failures = {e.name: dict.fromkeys(FAILURE_REASONS, 0) for e in engines}
        self._previous_tokens: dict[str, float] = {}
        self._flat: dict[str, tuple[int, float]] = {}  # engine -> flat readings in a row, since when
        self._failure_log = FailureLog(
            log, "engine", "engine metrics cannot be read", "engine metrics readable again"
        )

    def collect(self) -> Result[EngineFacts]:
        facts = {engine.name: self._read(engine) for engine in self.engines}
        return Result(self._families(facts), EngineFacts(facts))

    def _read(self, engine: EngineConfig) -> EngineInstanceFacts:
        names = ENGINE_NAMES.get(engine.kind, ENGINE_NAMES["vllm"])
        try:
            reading = _parse(self._fetch(engine), names)
        except _Failure as failure:
            return self._down(engine, failure.reason, _redact(str(failure), engine.metrics_url))
        self._failure_log.ok(engine.name)

        previous = self._previous_tokens.get(engine.name)
        since_last: float | None = None
        if reading.generation is not None:
            if previous is not None and reading.generation >= previous:
                since_last = reading.generation - previous
            self._previous_tokens[engine.name] = reading.generation
        else:
            self._previous_tokens.pop(engine.name, None)
        # A sleeping engine holds its requests on purpose (vLLM's sleep mode): no stall to judge.
        asleep = reading.sleep_level is not None
        flat, flat_since = self._flat_row(engine.name, None if asleep else reading.waiting, since_last)
        hint = f"none of the {engine.kind} metrics are in the body" if reading.empty() else None
        return EngineInstanceFacts(
            name=engine.name,
            kind=engine.kind,
            service=engine.service,
            up=True,
            error=hint,
            waiting=reading.waiting,
            running=reading.running,
            kv_cache_usage=reading.kv_cache,
            generation_tokens=reading.generation,
            tokens_since_last=since_last,
            flat_readings=flat,
            stalled=flat >= ENGINE_FLAT_READINGS and self._clock() - flat_since >= self._stall_span,
            stalled_since=flat_since if flat else None,
            prompt_tokens=reading.prompt,
            url=display_url(engine.metrics_url),
            sleeping=asleep if reading.says_sleep else None,
            sleep_level=reading.sleep_level,
        )

    def _flat_row(self, engine: str, waiting: float | None, since_last: float | None) -> tuple[int, float]:
        """Readings in a row with requests waiting and no new token, and when the first was taken."""
        if not (waiting is not None and waiting > 0 and since_last == 0):
            self._flat.pop(engine, None)
            return 0, 0.0
        count, since = self._flat.get(engine, (0, self._clock()))
        self._flat[engine] = (count + 1, since)
        return count + 1, since

    def _fetch(self, engine: EngineConfig) -> bytes:
        """The body of the engine's metrics page, within the engine's timeout as a whole (httpx's
        own timeouts bound each read, not the sum: a head sent a byte at a time never ends)."""
        answered: list[int] = []  # the status, once the answer's head has come
        try:
            return asyncio.run(self._fetch_within(engine, answered))
        except TimeoutError:
            what = "body not complete after" if answered else "no answer within"
            raise _Failure("timeout", f"{what} {engine.timeout:g}s") from None
        except httpx.TimeoutException as exc:
            raise _Failure(
                "timeout", f"no answer within {engine.timeout:g}s ({short_message(exc)})"
            ) from None
        except httpx.ConnectError as exc:
            reason = "connect_refused" if refused(exc) else "error"
            raise _Failure(reason, f"cannot connect: {short_message(exc)}") from None
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise _Failure("error", short_message(exc)) from None

    async def _fetch_within(self, engine: EngineConfig, answered: list[int]) -> bytes:
        # Proxies from the environment would make a local engine look reachable (or not) for the
        # wrong reason; redirects count as http_status. A fresh connection each run: a pooled one
        # left over from before an engine restart would fail once for no reason the user has.
        async with (
            asyncio.timeout(engine.timeout),
            httpx.AsyncClient(
                trust_env=False, follow_redirects=False, verify=self._trust, timeout=engine.timeout
            ) as client,
            client.stream(
                "GET", engine.metrics_url, headers={"Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1"}
            ) as response,
        ):
            answered.append(response.status_code)
            if not 200 <= response.status_code < 300:
                raise _Failure("http_status", f"HTTP status {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _Failure("bad_body", f"body larger than {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

    def _down(self, engine: EngineConfig, reason: str, message: str) -> EngineInstanceFacts:
        self._failures[engine.name][reason] += 1
        self._flat.pop(engine.name, None)
        self._failure_log.failed(engine.name, reason, message)
        url = display_url(engine.metrics_url)
        return EngineInstanceFacts(
            engine.name, engine.kind, engine.service, up=False, failure=reason, error=message, url=url
        )

    def _families(self, engines: dict[str, EngineInstanceFacts]) -> list[Family]:
        families = Families(self.metrics)
        add = families.add

        for name, facts in engines.items():
            add(UP, [name], 1 if facts.up else 0)
            for reason in FAILURE_REASONS:
                add(FAILURES, [name, reason], self._failures[name][reason])
            if not facts.up:
                continue
            add(WAITING, [name], facts.waiting)
            add(RUNNING, [name], facts.running)
            add(KV_CACHE, [name], facts.kv_cache_usage)
            add(GENERATION_TOKENS, [name], facts.generation_tokens)
            add(PROMPT_TOKENS, [name], facts.prompt_tokens)
            if facts.sleeping is not None:
                add(SLEEPING, [name], 1 if facts.sleeping else 0)
            add(STALLED, [name], 1 if facts.stalled else 0)
        return families.list()


def _parse(body: bytes, names: _Names) -> _Reading:
    """The fields from a Prometheus text body; _Failure("bad_body") when it is not one."""
    wanted = {
        *names.waiting,
        *names.running,
        *names.kv_cache,
        *names.generation,
        *names.prompt,
    }
    values: dict[str, list[float]] = {}
    sleep_states: dict[str, list[float]] = {}  # sleep_state -> its values over the engine cores
    try:
        for family in text_string_to_metric_families(body.decode("utf-8", errors="replace")):
            for sample in family.samples:
                if not math.isfinite(sample.value):
                    continue
                if sample.name in wanted:
                    values.setdefault(sample.name, []).append(float(sample.value))
                elif sample.name in names.sleep_state:
                    state = sample.labels.get("sleep_state", "")
                    sleep_states.setdefault(state, []).append(float(sample.value))
    except Exception as exc:  # untrusted input: whatever the parser chokes on is a bad body
        raise _Failure("bad_body", f"not Prometheus text format: {short_message(exc)}") from None

    def first(candidates: tuple[str, ...], highest: bool = False) -> float | None:
        for candidate in candidates:
            if candidate in values:
                return max(values[candidate]) if highest else math.fsum(values[candidate])
        return None

    return _Reading(
        waiting=first(names.waiting),
        running=first(names.running),
        kv_cache=first(names.kv_cache, highest=True),
        generation=first(names.generation),
        prompt=first(names.prompt),
        says_sleep="awake" in sleep_states,
        sleep_level=_sleep_level(sleep_states),
    )


def _sleep_level(states: dict[str, list[float]]) -> int | None:
    """The sleep level when no engine core is awake (vLLM: level 1 offloads the weights, level 2
    discards them, level 0 only pauses scheduling); None when one is awake or nothing says."""
    if "awake" not in states or max(states["awake"]) > 0:
        return None
    if max(states.get("discard_all", [0.0])) > 0:
        return 2
    return 1 if max(states.get("weights_offloaded", [0.0])) > 0 else 0


def _redact(text: str, url: str) -> str:
    """Drop a password given in the URL's user info, should any message quote it."""
    try:
        password = httpx.URL(url).password
    except (httpx.InvalidURL, ValueError, TypeError):
        return text
    return text.replace(password, "<redacted>") if password else text
