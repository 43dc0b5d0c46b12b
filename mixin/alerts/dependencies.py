"""The autoglm.dependencies group: what the service needs to serve (its Redis and its queues, its
inference engine)."""

from __future__ import annotations

from .. import config
from ..config import FOR, duration
from ..config import THRESHOLDS as T
from .alert import Alert
from .fanout import fan_out, sole_service


def dependencies() -> list[Alert]:
    W = duration(config.RATE_WINDOW)
    growing = (
        f"autoglm_redis_queue_depth > {T['queue_backlog_min_depth']}"
        f" and deriv(autoglm_redis_queue_depth[{W}]) > 0"
    )
    redis_memory = (
        "autoglm_redis_memory_used_bytes / (autoglm_redis_memory_max_bytes > 0)"
        f" > {T['redis_memory_used_ratio']}"
    )
    return [
        Alert(
            "AutoglmRedisDown",
            "critical",
            fan_out("autoglm_redis_up == 0", "redis", "redis"),
            "Redis {{ $labels.redis }} does not answer PING",
            "Redis {{ $labels.redis }} seen from {{ $labels.instance }} does not answer PING: the request "
            "queue is unreachable and {{ $labels.service }} cannot accept work.",
            FOR["cause"],
            "cause",
        ),
        Alert(
            "AutoglmRedisMemoryNearMax",
            "warning",
            fan_out(redis_memory, "redis", "redis"),
            "Redis {{ $labels.redis }} uses {{ $value | humanizePercentage }} of its maxmemory",
            "Redis {{ $labels.redis }} seen from {{ $labels.instance }} has allocated "
            "{{ $value | humanizePercentage }} of its maxmemory: at the limit it evicts keys (queued "
            "requests are lost) or refuses writes, by its maxmemory-policy.",
            FOR["ticket"],
        ),
        Alert(
            "AutoglmEngineDown",
            "critical",
            fan_out("autoglm_engine_up == 0", "engine", "engine"),
            "Engine {{ $labels.engine }} does not serve its metrics",
            "The inference engine {{ $labels.engine }} seen from {{ $labels.instance }} does not answer its "
            "metrics endpoint with Prometheus text: the engine process is down, restarting or hung, and "
            "{{ $labels.service }} cannot generate.",
            FOR["cause"],
            "cause",
        ),
        Alert(
            "AutoglmEngineStalled",
            "critical",
            # autoglm_engine_stalled: the exporter saw requests waiting and no new token between two
            # readings; for: makes that hold through every reading of the period.
            fan_out(
                "autoglm_engine_requests_waiting > 0 and on (instance, engine) autoglm_engine_stalled == 1",
                "engine",
                "engine",
            ),
            "Engine {{ $labels.engine }} has {{ $value }} requests waiting and generates nothing",
            "{{ $value }} requests wait in engine {{ $labels.engine }} on {{ $labels.instance }} and it "
            "generated no token for " + duration(FOR["cause"]) + ". Its /health may still answer 200.",
            FOR["cause"],
            "cause",
        ),
        Alert(
            "AutoglmKvCacheNearFull",
            "warning",
            fan_out(f"autoglm_engine_kv_cache_usage_ratio > {T['kv_cache_usage_ratio']}", "engine", "engine"),
            "Engine {{ $labels.engine }}'s KV cache is {{ $value | humanizePercentage }} full",
            "The KV cache of engine {{ $labels.engine }} on {{ $labels.instance }} has been "
            "{{ $value | humanizePercentage }} full for " + duration(FOR["ticket"]) + ": new requests "
            "queue and running ones are preempted (recomputed), so latency climbs.",
            FOR["ticket"],
        ),
        Alert(
            "AutoglmQueueBacklogGrowing",
            "warning",
            sole_service(growing, "redis", "redis"),
            "Queue {{ $labels.queue }} keeps growing ({{ $value }} items)",
            "Queue {{ $labels.queue }} in Redis {{ $labels.redis }}, read by {{ $labels.instance }}, holds "
            "{{ $value }} items and grew over the last " + W + ": work arrives faster than the workers "
            "take it.",
            FOR["ticket"],
        ),
        Alert(
            "AutoglmQueueBacklogHigh",
            "warning",
            sole_service(f"autoglm_redis_queue_depth > {T['queue_backlog_high_depth']}", "redis", "redis"),
            "Queue {{ $labels.queue }} has held over "
            + str(T["queue_backlog_high_depth"])
            + " items for "
            + duration(FOR["ticket_slow"]),
            "Queue {{ $labels.queue }} in Redis {{ $labels.redis }}, read by {{ $labels.instance }}, holds "
            "{{ $value }} items and has stayed above "
            + str(T["queue_backlog_high_depth"])
            + " for "
            + duration(FOR["ticket_slow"])
            + ", growing or not: requests wait minutes before a worker "
            "takes them.",
            FOR["ticket_slow"],
        ),
    ]
