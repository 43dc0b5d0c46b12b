"""Every threshold, window and selector the alerts and dashboards share, in one place.

Change a number here, run `make mixin`, and the rule files, the dashboards' threshold lines and
the Kubernetes PrometheusRule all follow (kubernetes-mixin's _config, in Python). What the verdict
also judges by is not repeated here: it comes from the exporter's own thresholds module, so an
alert and a verdict cannot disagree."""

from autoglm_exporter.diagnosis import thresholds as verdict


def prometheus_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: 300 -> "5m", 90 -> "90s"."""
    whole = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


# Which scrape job the exporter runs as (docker-compose, the Kubernetes ServiceMonitor).
EXPORTER_JOB = "autoglm-exporter"
EXPORTER_SELECTOR = f'job="{EXPORTER_JOB}"'

# Where each alert's runbook lives: RUNBOOK_BASE + "#" + the alert name in lower case.
RUNBOOK_BASE = "https://github.com/autoglm/autoglm-exporter/blob/main/docs/runbooks.md"

# How long a condition must hold before the alert fires (the e2e test shortens these).
FOR = {
    "page_fast": "1m",  # the service or a dependency is down: users see it now
    "page": "2m",
    "ticket": "10m",
    "ticket_slow": "15m",
}

# Rate windows of the rules; dashboards use $__rate_interval instead.
RATE_WINDOW = "5m"
LOG_ERROR_WINDOW = prometheus_duration(verdict.RECENT_LOG_SECONDS)  # a CUDA OOM line keeps its alert
XID_WINDOW = prometheus_duration(verdict.RECENT_XID_SECONDS)
CAPTURE_WINDOW = "10m"  # a stack capture refused for permission keeps its ticket this long
RESTART_WINDOW = "15m"

THRESHOLDS = {
    "gpu_memory_used_ratio": verdict.GPU_MEMORY_FULL_RATIO,  # GPU memory near full
    "gpu_idle_utilization_ratio": 0.05,  # "idle" while requests wait
    "gpu_scale_out_utilization_ratio": 0.70,  # autoscaling target (seed section 5)
    "context_switches_per_cpu_per_second": verdict.CONTEXT_SWITCHES_PER_CPU_STORM,  # storm
    "cpu_throttled_ratio": verdict.CPU_THROTTLED_RATIO,  # share of cgroup periods throttled
    "queue_backlog_min_depth": 10,  # a queue this deep and still growing is a backlog
    "engine_queue_scale_out": 5,  # waiting requests per engine replica before scaling out
    "restarts_per_window": 3,  # restarts within RESTART_WINDOW that make a crash loop
    "probe_latency_warning_seconds": 10,  # dashboards: slow answers
    "collector_stale_seconds": 60,  # dashboards: last success older than this is red
    "kv_cache_usage_ratio": 0.90,  # dashboards: KV cache nearly full
    "gpu_temperature_celsius": 85,  # dashboards: hot GPU
}

# XIDs that mean the GPU or its memory needs attention (NVIDIA's XID catalogue): 48 double-bit
# ECC, 63/64 row remapping, 74 NVLink, 79 fell off the bus, 94/95 contained/uncontained ECC,
# 119/120 GSP firmware.
CRITICAL_XIDS = (48, 63, 64, 74, 79, 94, 95, 119, 120)

# Clock-event reasons that hold the clocks down for heat or hardware faults. sw_power_cap is left
# out: a GPU generating flat out sits at its power cap by design (the GPU dashboard still shows it).
THROTTLE_REASONS = ("hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")
