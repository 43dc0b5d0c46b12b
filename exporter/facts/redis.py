"""What the Redis collector hands to the verdict: each instance's health and queue depths."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RedisInstanceFacts:
    name: str
    address: str
    up: bool
    # What a down instance leaves out is None (unknown), never 0.
    failure: str | None = None  # one of FAILURE_REASONS when down
    error: str | None = None  # a short message, never a secret
    ping_seconds: float | None = None
    connected_clients: int | None = None
    blocked_clients: int | None = None
    memory_used: int | None = None
    memory_max: int | None = None  # 0: no limit
    queues: dict[str, int | None] = field(default_factory=dict)  # queue name -> depth; None: unreadable
    queue_growth: dict[str, int] = field(default_factory=dict)  # depth minus the previous run's, 0 at first
    queue_errors: dict[str, str] = field(default_factory=dict)  # queue name -> why it has no depth


@dataclass(frozen=True)
class RedisFacts:
    instances: dict[str, RedisInstanceFacts]
