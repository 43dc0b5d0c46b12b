"""The probe collector: runs every target's probe of its kind concurrently, keeps the failure
counts and duration histograms, and turns the outcomes into facts and metric families."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import httpx
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from ...base.hostport import url_host_port
from ...config import ProbeTarget
from ...facts.probe import ProbeFacts, ProbeOutcome, TargetFacts
from ...logs.redact import redact
from ...logs.urls import display_url
from ...metrics.spec import Families, Family, MetricSpec, counter, gauge, histogram, info
from ..base import Collector, Result
from ..inflight import InFlightRegistry
from . import http, inference, openai_chat, tcp
from .client import open_client
from .failures import REASONS, ProbeFailure, classify_http_error, classify_os_error
from .openai_chat import streams
from .timing import PHASES, Timings

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


class ProbeCollector(Collector[ProbeFacts]):
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
        self._first_tokens = {t.name: _Histogram() for t in targets if streams(t)}
        self._models: dict[str, str] = {}  # openai_chat target -> model discovered from /v1/models

    def collect(self) -> Result[ProbeFacts]:
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
            return await self._probe_once(target, Timings(lambda: self.in_flight.connected(target.name)))
        finally:
            self.in_flight.finished(target.name)

    async def _probe_once(self, target: ProbeTarget, timings: Timings) -> ProbeOutcome:
        started = time.monotonic()
        try:
            async with asyncio.timeout(target.timeout):
                status, ttft = await self._run(target, timings)
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

    async def _run(self, target: ProbeTarget, timings: Timings) -> tuple[int | None, float | None]:
        """(HTTP status, time to the first token) of one probe of its kind; raises on failure."""
        if target.module == "tcp":
            await tcp.probe(target, timings)
            return None, None
        where = url_host_port(target.url)
        await timings.resolve(where.host, where.port)
        async with open_client(target) as client:
            if target.module == "openai_chat":
                return await openai_chat.probe(client, target, timings, self._models)
            if target.module == "inference":
                return await inference.probe(client, target, timings), None
            return await http.probe(client, target, timings), None

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


def _failed(reason: str, message: str, started: float, timings: Timings) -> ProbeOutcome:
    return ProbeOutcome(
        False,
        reason=reason,
        error=redact(message),  # it may quote what the server sent
        status=timings.status,
        duration=time.monotonic() - started,
        phases=timings.phases(),
        connected=timings.connected,
    )
