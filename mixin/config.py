"""Every threshold, window, objective and selector the alerts, the routing and the dashboards share.

Change a number here, run `make mixin`, and the rule files, Alertmanager's routing, the dashboards'
threshold lines and the Kubernetes manifests all follow (kubernetes-mixin's _config, in Python).
What the verdict also judges by is not repeated here: it comes from the exporter's own thresholds
module, so an alert and a verdict cannot disagree.

Every duration is written in seconds and printed through `duration()`, which multiplies it by
TIME_SCALE: 1 for the shipped files. The end-to-end test generates the same rules with one smaller
factor (`time_scale()`), so that an hour of error budget passes in minutes and every `for:`, window,
latency objective and Alertmanager wait shrinks by the same ratio."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from autoglm_exporter.base import thresholds as verdict
from autoglm_exporter.collectors.probe import DURATION_BUCKETS

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

# The factor every duration of the generated files is multiplied by; see time_scale().
TIME_SCALE = 1.0


@contextmanager
def time_scale(factor: float) -> Iterator[None]:
    """Generate with every duration multiplied by `factor` (the end-to-end test's shortcut)."""
    global TIME_SCALE
    before, TIME_SCALE = TIME_SCALE, factor
    try:
        yield
    finally:
        TIME_SCALE = before


def prometheus_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: 300 -> "5m", 90 -> "90s", 1.5 -> "1500ms"."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"{seconds} s is no duration")
    if millis % 1000:
        return f"{millis}ms"
    whole = millis // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def duration(seconds: float) -> str:
    """A shipped duration, scaled by TIME_SCALE, as Prometheus and Alertmanager write it."""
    return prometheus_duration(seconds * TIME_SCALE)


# --- labels ----------------------------------------------------------------------------------------

# Which scrape job the exporter runs as (docker-compose, the Kubernetes ServiceMonitor).
EXPORTER_JOB = "autoglm-exporter"
EXPORTER_SELECTOR = f'job="{EXPORTER_JOB}"'

# Severity label values: the names kube-prometheus-stack's and the mixins' routing expects. Rename
# the values (not the keys) to fit an Alertmanager that routes on other names.
SEVERITY = {
    "critical": "critical",  # users are hurt now: wake someone
    "warning": "warning",  # degraded, at risk or partly blind: fix it this week
    "info": "info",  # no action; the Watchdog
}

# Where each alert's runbook lives: RUNBOOK_BASE + "#" + the alert name in lower case.
RUNBOOK_BASE = "https://github.com/autoglm/autoglm-exporter/blob/main/docs/runbooks.md"
# The exporter's status page for a series of the dashboards (Grafana data link): its instance
# label is host:port of the exporter under docker-compose. Under Kubernetes the ServiceMonitor
# sets instance to the node name: point this at your ingress or `kubectl port-forward` instead.
STATUS_PAGE_URL = "http://${__field.labels.instance}/"

# --- how long a condition must hold before an alert fires -----------------------------------------

# One incident, one page: the alert that names a cause fires before the symptoms it explains, and
# inhibits them in Alertmanager. Symptoms (nobody answers, the verdict, error budget burn) wait two
# minutes longer than causes: an exporter reading every 10 s, a 10 s scrape and evaluation and a
# stack capture (the in-flight hang capture starts 5 s into an unanswered probe) all fit in that
# margin, and Alertmanager's group_wait (below) adds another 30 s for the cause to join.
FOR = {
    # a named broken link: no process, nothing listens, Redis or the engine down or stalled (six
    # readings in a row without a token while requests wait: longer than any prefill pause)
    "cause": 1 * MINUTE,
    "network": 2 * MINUTE,  # connections refused or timing out: after the causes that explain it
    "stall": 2 * MINUTE,  # GPU readings must agree a while: an idle GPU between batches is normal
    "symptom": 3 * MINUTE,  # what users see; the causes get two minutes to be named first
    # An error budget burning fast: also what users see, named after the symptom that says how
    # (nobody answers, the verdict), so it pages alone only for what those miss (a slow service,
    # one failing half its requests).
    "slo": 5 * MINUTE,
    "exporter": 2 * MINUTE,  # the exporter itself cannot be scraped
    "ticket": 10 * MINUTE,
    "ticket_slow": 15 * MINUTE,
}

# How long an alert about the chain stays firing after its expression stopped matching. An exporter
# restart or a failed scrape makes every series stale at once: without this, each alert of an open
# incident resolved and paged again once the series were back (after its `for:` once more). As long
# as the exporter's own down alert takes to fire, so that one of them always speaks for the incident;
# the price is a resolved notification this much later than the fix.
KEEP_FIRING = FOR["exporter"]

# Windows of the rules; dashboards use $__rate_interval instead.
RATE_WINDOW = 5 * MINUTE
LOG_ERROR_WINDOW = verdict.RECENT_LOG_SECONDS  # a CUDA OOM line keeps its alert this long
XID_WINDOW = verdict.RECENT_XID_SECONDS
CAPTURE_WINDOW = 10 * MINUTE  # a stack capture refused for permission keeps its ticket this long
RESTART_WINDOW = 15 * MINUTE
# A probe result older than this is stale: with the default 10 s interval and 30 s timeout a
# healthy probe finishes at least every 40 s, so three of those mean the probes stopped.
PROBE_STALE = 2 * MINUTE

THRESHOLDS = {
    "gpu_memory_used_ratio": verdict.GPU_MEMORY_FULL_RATIO,  # GPU memory near full
    "gpu_idle_utilization_ratio": 0.05,  # "idle" while requests wait
    "gpu_scale_out_utilization_ratio": 0.70,  # autoscaling target (seed section 5)
    "context_switches_per_cpu_per_second": verdict.CONTEXT_SWITCHES_PER_CPU_STORM,  # storm
    "cpu_throttled_ratio": verdict.CPU_THROTTLED_RATIO,  # share of cgroup periods throttled
    "queue_backlog_min_depth": 10,  # a queue this deep and still growing is a backlog
    "queue_backlog_high_depth": 100,  # a queue this deep for ticket_slow is stuck, growing or not
    "engine_queue_scale_out": 5,  # waiting requests per engine replica before scaling out
    "restarts_per_window": 3,  # restarts within RESTART_WINDOW that make a crash loop
    "probe_latency_warning_seconds": 10,  # dashboards: slow answers
    "collector_stale_seconds": 60,  # dashboards: last success older than this is red
    "kv_cache_usage_ratio": 0.90,  # KV cache nearly full: requests queue or are preempted
    "redis_memory_used_ratio": 0.90,  # Redis near its maxmemory: writes fail or keys are evicted
    "gpu_temperature_celsius": 85,  # dashboards: hot GPU
}

# HTTP status classes of the dashboards' "Last HTTP status" tile: 0 (no answer) and 1xx red,
# 2xx green, 3xx yellow (a probe should not be redirected), 4xx orange, 5xx red.
HTTP_STATUS_STEPS = ((200, "green"), (300, "yellow"), (400, "orange"), (500, "red"))

# XID classes and the clock-event reasons that count as throttling: the verdict's, read from one place.
CRITICAL_XIDS = verdict.XID_CRITICAL
WARNING_XIDS = verdict.XID_WARNING
THROTTLE_REASONS = verdict.GPU_THROTTLE_REASONS

# --- service level objectives -----------------------------------------------------------------------

# The buckets of the probe histograms (autoglm_probe_request_duration_seconds and
# autoglm_probe_first_token_seconds), from the probe collector itself. A latency objective counts
# the probes in its threshold's bucket, so every threshold must be one of these bounds.
PROBE_BUCKETS = DURATION_BUCKETS


@dataclass(frozen=True)
class Objective:
    """A service level objective measured by the client probes of each user-facing service.

    `target`: the share of good probes over the 30-day period; 1 - target is the error budget.
    `threshold`: for latency objectives, the seconds a good probe answers within (a bucket bound);
    None for availability (a good probe is a successful one)."""

    alert: str
    name: str  # the recording rules' name part
    description: str  # what a bad probe is; {threshold} is the latency threshold, as scaled
    target: float
    threshold: float | None = None

    @property
    def budget(self) -> float:
        return 1 - self.target


# Why these numbers. Availability: the client probe is a user's request; 99.5% over 30 days
# allows 3.6 hours of failed probes a month: a bad deploy or a driver restart now and then, not a
# daily outage. Latency: the probe asks for 50 tokens (the seed's request), which a healthy
# service answers in 1-3 s; 10 s is the point where a chat user gives up, and 99% within it keeps
# the budget small enough (1%) that a service slow on every request burns it at 100x and pages
# from the fast window within about twelve minutes (at 95% the fastest possible burn is 20x, barely above
# the 14.4x of the fast window: a service slow on every request would page after 45 minutes).
# Time to first token: streaming client targets only; the first token of a short prompt comes
# within a second unless requests queue, so 99% within 5 s.
AVAILABILITY = Objective(
    "AutoglmAvailabilityBudgetBurn", "probe_errors", "probes of the service that fail", 0.995
)
LATENCY = Objective(
    "AutoglmLatencyBudgetBurn", "probe_slow", "probes of the service slower than {threshold:g} s", 0.99, 10
)
FIRST_TOKEN = Objective(
    "AutoglmFirstTokenBudgetBurn",
    "probe_first_token_slow",
    "streaming probes whose first token took longer than {threshold:g} s",
    0.99,
    5,
)
OBJECTIVES = (AVAILABILITY, LATENCY, FIRST_TOKEN)


@dataclass(frozen=True)
class BurnWindows:
    """A multiwindow burn-rate alert (the SRE workbook, chapter 5): both windows must burn the
    error budget `burn_rate` times faster than the 30-day period allows. The long window says the
    burn is significant, the short one that it is still going on (so the alert resolves minutes
    after the fix instead of hours)."""

    long: float
    short: float
    burn_rate: float
    severity: str


# The workbook's three pairs for a 30-day period: 2% of the budget gone in an hour pages, 5% in
# six hours pages, 10% in three days is a ticket. A service failing half its probes burns at
# 100x an availability budget of 0.5%: the 1 h window passes 14.4 x 0.5% = 7.2% errors after
# 9 minutes, so it pages within 20 minutes with the symptom `for:` on top; one failed probe in an
# hour of 10 s probes is 0.3% (and 3% of the 5 m window), far from either threshold.
BURN_WINDOWS = (
    BurnWindows(1 * HOUR, 5 * MINUTE, 14.4, "critical"),
    BurnWindows(6 * HOUR, 30 * MINUTE, 6, "critical"),
    BurnWindows(3 * DAY, 6 * HOUR, 1, "warning"),
)
SLO_PERIOD = 30 * DAY


def slo_windows() -> list[float]:
    """Every window a burn-rate alert reads, shortest first (each is one recording rule)."""
    return sorted({w for pair in BURN_WINDOWS for w in (pair.long, pair.short)})


def latency_bucket(seconds: float) -> float:
    """A latency threshold, scaled, as the histogram bucket bound the objective counts."""
    scaled = seconds * TIME_SCALE
    for bound in PROBE_BUCKETS:
        if abs(bound - scaled) < 1e-9:
            return float(bound)
    raise ValueError(f"a latency objective of {scaled:g} s is no bucket bound of the probe histograms")


# --- Alertmanager ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Alertmanager's waits for a route, in seconds."""

    group_wait: float
    group_interval: float
    repeat_interval: float


# critical: wait 30 s after the first alert of an incident, so that the cause joins its symptoms
# before anyone is woken; then updates every 30 s too: an alert that lands in a group that paged
# before (the same cause again, a symptom; Alertmanager keeps an emptied group a while) pages
# within the same 30 s, not after the 5 minutes a group used to wait. warning: batch a few minutes.
# watchdog: the dead man's switch is re-sent every minute; the receiver pages when it stops.
ROUTE_TIMING = {
    "default": Timing(30, 5 * MINUTE, 4 * HOUR),
    "critical": Timing(30, 30, 1 * HOUR),
    "warning": Timing(1 * MINUTE, 10 * MINUTE, 24 * HOUR),
    "info": Timing(5 * MINUTE, 30 * MINUTE, 24 * HOUR),
    "watchdog": Timing(1, 1 * MINUTE, 1 * MINUTE),
}
