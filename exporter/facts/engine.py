"""What the engine collector hands to the verdict: each engine's queue, cache and token flow."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineInstanceFacts:
    name: str
    kind: str
    service: str | None
    up: bool
    # What a down engine leaves out is None (unknown), never 0.
    failure: str | None = None  # one of FAILURE_REASONS when down
    error: str | None = None  # why it is down, or a hint when it is up but exposes none of the known series
    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None  # 0-1
    generation_tokens: float | None = None
    tokens_since_last: float | None = None  # None on the first reading or after a counter reset
    stalled: bool = False  # flat over the whole window (ENGINE_FLAT_READINGS readings and their intervals)
    stalled_since: float | None = None  # time of the first flat reading of the row, while it lasts
    prompt_tokens: float | None = None
    url: str = ""  # the metrics URL without credentials, for the verdict's next command
    flat_readings: int = 0  # readings in a row with requests waiting and no new token
    # Asleep on purpose (vLLM's sleep mode): its requests wait until it is woken, which is no stall.
    sleeping: bool | None = None  # None: the engine does not say (vLLM before 0.32, SGLang)
    sleep_level: int | None = None  # 0: scheduling paused; 1: weights offloaded; 2: weights discarded


@dataclass(frozen=True)
class EngineFacts:
    engines: dict[str, EngineInstanceFacts]
