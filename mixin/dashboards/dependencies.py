"""AutoGLM / Queue and dependencies: Redis (PING, clients, memory, queue depths), the inference
engine (waiting, running, KV cache, tokens, stalls), error logs and traced request stages."""

from __future__ import annotations

from ..grafana import (
    BYTES,
    JOULES,
    NONE,
    OPS,
    RATIO,
    SECONDS,
    SHORT,
    TOKENS_PER_SECOND,
    Dashboard,
    Row,
    Target,
    flag,
    stat,
    state_timeline,
    timeseries,
    up_down,
)
from .panels import (
    INST,
    INSTANCE_VAR,
    W,
    engine_up,
    increase,
    line,
    rate,
    redis_up,
)


def redis_row() -> Row:
    return Row(
        "Redis",
        (
            redis_up(4),
            stat(
                "Queues readable",
                "Red when a queue's depth could not be read: wrong key type, missing group or Redis down.",
                (Target(f"autoglm_redis_queue_read_ok{{{INST}}}", "{{redis}} {{queue}}"),),
                NONE,
                mapped=up_down("unreadable", "ok"),
                width=4,
            ),
            timeseries(
                "PING latency",
                "Round trip of a PING on an open connection; spikes mean Redis is busy or swapping.",
                (Target(f"autoglm_redis_ping_duration_seconds{{{INST}}}", "{{redis}}"),),
                SECONDS,
                width=8,
                height=5,
            ),
            timeseries(
                "Clients",
                "Connected clients and those blocked in BLPOP/XREADGROUP; none blocked: nobody consumes.",
                (
                    Target(f"autoglm_redis_connected_clients{{{INST}}}", "{{redis}} connected"),
                    Target(f"autoglm_redis_blocked_clients{{{INST}}}", "{{redis}} blocked"),
                ),
                SHORT,
                width=8,
                height=5,
            ),
            timeseries(
                "Memory",
                "Memory Redis allocated against its maxmemory (shown only when one is set).",
                (
                    Target(f"autoglm_redis_memory_used_bytes{{{INST}}}", "{{redis}} used"),
                    Target(f"autoglm_redis_memory_max_bytes{{{INST}}} > 0", "{{redis}} max"),
                ),
                BYTES,
            ),
            timeseries(
                "Queue depth",
                "Items waiting in each queue; above the line and still growing is a backlog.",
                (Target(f"autoglm_redis_queue_depth{{{INST}}}", "{{redis}} {{queue}}"),),
                SHORT,
                steps=line("queue_backlog_min_depth", "orange"),
            ),
        ),
    )


def engine_row() -> Row:
    tokens = f"instance_engine:autoglm_engine_generation_tokens:rate{W}{{{INST}}}"
    prompt = rate("autoglm_engine_prompt_tokens_total", INST, "instance, engine")
    per_token = "instance_engine:autoglm_engine_"
    return Row(
        "Engine",
        (
            engine_up(4),
            state_timeline(
                "Engine stalled",
                "Red while requests wait in the engine and it generates no token: the engine hangs.",
                (Target(f"autoglm_engine_stalled{{{INST}}}", "{{engine}}"),),
                mapped=flag("generating", "stalled"),
                width=20,
                height=5,
            ),
            timeseries(
                "Requests waiting and running",
                "Requests queued and in progress; waiting above the line calls for another replica.",
                (
                    Target(f"autoglm_engine_requests_waiting{{{INST}}}", "{{engine}} waiting"),
                    Target(f"autoglm_engine_requests_running{{{INST}}}", "{{engine}} running"),
                ),
                SHORT,
                steps=line("engine_queue_scale_out", "orange"),
                width=12,
            ),
            timeseries(
                "KV cache usage",
                "Share of the engine's KV cache in use; near full, requests queue or get preempted.",
                (Target(f"autoglm_engine_kv_cache_usage_ratio{{{INST}}}", "{{engine}}"),),
                RATIO,
                steps=line("kv_cache_usage_ratio"),
                high=1,
                width=12,
            ),
            timeseries(
                "Token rate",
                "Tokens generated and prompt tokens read per second; flat at 0 while requests wait: a stall.",
                (Target(tokens, "{{engine}} generated"), Target(prompt, "{{engine}} prompt")),
                TOKENS_PER_SECOND,
                width=8,
            ),
            timeseries(
                "Energy per generated token",
                "Joules the node's serving GPUs used (NVML's energy counter) per token the engine generated; "
                "rising at a steady token rate: the GPU works harder for each token (throttled, swapping).",
                (Target(f"{per_token}energy_per_token_joules:ratio_rate{W}{{{INST}}}", "{{engine}}"),),
                JOULES,
                width=8,
            ),
            timeseries(
                "GPU time per generated token",
                "Seconds the node's serving GPUs were busy (utilization) per token the engine generated.",
                (Target(f"{per_token}gpu_seconds_per_token:ratio_rate{W}{{{INST}}}", "{{engine}}"),),
                SECONDS,
                width=8,
            ),
        ),
    )


def logs_row() -> Row:
    def quantile(q: float) -> str:
        buckets = rate("autoglm_trace_stage_duration_seconds_bucket", INST, "le, stage")
        return f"histogram_quantile({q}, {buckets})"

    return Row(
        "Logs, traces and read failures",
        (
            timeseries(
                "Log errors by pattern",
                "New error lines by pattern (CUDA OOM, model load failure...); any bar deserves a look.",
                (
                    Target(
                        increase("autoglm_log_errors_total", INST, "instance, log, pattern"),
                        "{{log}} {{pattern}}",
                    ),
                ),
                SHORT,
                bars=True,
                width=8,
            ),
            timeseries(
                "Trace stage durations",
                "Median and 95th percentile time of each traced stage of a request: look for the slow one.",
                (Target(quantile(0.5), "{{stage}} p50"), Target(quantile(0.95), "{{stage}} p95")),
                SECONDS,
                width=8,
            ),
            timeseries(
                "Dependency read failures",
                "Runs in which Redis or the engine could not be read, by reason.",
                (
                    Target(
                        rate("autoglm_redis_failures_total", INST, "instance, redis, reason"),
                        "{{redis}} {{reason}}",
                    ),
                    Target(
                        rate("autoglm_engine_failures_total", INST, "instance, engine, reason"),
                        "{{engine}} {{reason}}",
                    ),
                ),
                OPS,
                width=8,
            ),
        ),
    )


def dashboard() -> Dashboard:
    return Dashboard(
        "autoglm-dependencies",
        "AutoGLM / Queue and dependencies",
        "Redis (PING, clients, memory, queue depths), the inference engine (waiting, running, KV cache, "
        "tokens, stalls), error logs and traced request stages.",
        (redis_row(), engine_row(), logs_row()),
        (INSTANCE_VAR,),
    )
