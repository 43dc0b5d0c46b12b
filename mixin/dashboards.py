"""The five Grafana dashboards, generated into dashboards/*.json.

Chain overview (the verdict and each link) → Service process → Queue and dependencies → GPU →
Exporter health. Every threshold line comes from config.THRESHOLDS, read when the dashboards are
built, so `make mixin` after changing a number moves the lines."""

from __future__ import annotations

import json

from . import config
from .config import RATE_WINDOW, prometheus_duration
from .fleet import fleet
from .grafana import (
    BYTES,
    CELSIUS,
    CORES,
    HERTZ,
    JOULES,
    NONE,
    OPS,
    PER_SECOND,
    RATIO,
    SECONDS,
    SHORT,
    TOKENS_PER_SECOND,
    WATTS,
    Annotation,
    Dashboard,
    Link,
    Panel,
    Row,
    State,
    Step,
    Target,
    Variable,
    flag,
    stat,
    state_timeline,
    table,
    timeseries,
    up_down,
)
from .rules import slo_rule_name

# Rates that recording rules (rules.py) keep are read from them: computed once, the same numbers
# the alerts and the autoscalers see, over the rules' window W.
W = prometheus_duration(RATE_WINDOW)  # the recording rules' names carry the shipped window
INST = 'instance=~"$instance"'  # the selector every query starts from
SVC = f'{INST}, service=~"$service"'
SVC_ONLY = 'service=~"$service"'  # service-wide series (the objectives) have no instance
GPU = f'{INST}, gpu=~"$gpu"'

INSTANCE_VAR = Variable("instance", "Instance", "autoglm_exporter_build_info", "instance")
SERVICE_VAR = Variable("service", "Service", f"autoglm_process_up{{{INST}}}", "service")
GPU_VAR = Variable("gpu", "GPU", f"autoglm_gpu_info{{{INST}}}", "gpu")
# The engine's own metrics come from Prometheus scraping it (job vllm), not from the exporter.
MODEL_VAR = Variable("model_name", "Model", "vllm:num_requests_running", "model_name")


def line(key: str, color: str = "red") -> tuple[Step, ...]:
    """The threshold named `key` in config.THRESHOLDS, as a panel threshold."""
    return (Step(config.THRESHOLDS[key], color),)


def rate(metric: str, selector: str, by: str, window: str = "$__rate_interval") -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{window}]))"


def increase(metric: str, selector: str, by: str, window: str = "$__rate_interval") -> str:
    return f"sum by ({by}) (increase({metric}{{{selector}}}[{window}]))"


# --- panels more than one dashboard shows ---------------------------------------------------------


def redis_up(width: int) -> Panel:
    return stat(
        "Redis up",
        "Red when a Redis instance does not answer PING in time.",
        (Target(f"autoglm_redis_up{{{INST}}}", "{{redis}}"),),
        NONE,
        mapped=up_down(),
        width=width,
    ).with_links((runbook("AutoglmRedisDown"),))


def engine_up(width: int) -> Panel:
    return stat(
        "Engine up",
        "Red when the inference engine's metrics endpoint does not answer.",
        (Target(f"autoglm_engine_up{{{INST}}}", "{{engine}}"),),
        NONE,
        mapped=up_down(),
        width=width,
    ).with_links((runbook("AutoglmEngineDown"),))


def gpu_available(width: int) -> Panel:
    return stat(
        "GPU available",
        "Whether an NVIDIA GPU could be read; a host without one shows a neutral tile, not an error.",
        (Target(f"autoglm_gpu_available{{{INST}}}", "{{instance}}"),),
        NONE,
        # neutral: a CPU-only host is not broken; a GPU host that cannot read its GPU has
        # AutoglmCollectorFailing for the gpu collector
        mapped=(State(0, "no GPU", "blue"), State(1, "available", "green")),
        width=width,
    )


# --- 1. Chain overview ------------------------------------------------------------------------

# The current verdict (value 1) or, on a healthy instance, a "healthy / every link answers" series
# (value 0): so no data means no data, never a silent "healthy".
VERDICT = (
    f"autoglm_diagnosis_verdict{{{INST}}} == 1"
    f' or label_replace(label_replace(autoglm_diagnosis_healthy{{{INST}}} == 1, "layer", "healthy", "", ""),'
    ' "reason", "every link answers", "", "") - 1'
)
VERDICT_STATES = (State(0, "healthy", "green"), State(1, "broken", "red"))

PROBE_WITH_LAYER = (
    f"autoglm_probe_success{{{INST}}} * on (instance, job, target) group_left (layer, service)"
    f" autoglm_probe_target_info{{{SVC}}}"
)
STATUS_PAGE = Link("Status page of ${__field.labels.instance}", config.STATUS_PAGE_URL)
RUNBOOKS = Link("Runbooks", config.RUNBOOK_BASE)


def runbook(alert: str) -> Link:
    return Link(f"Runbook: {alert}", f"{config.RUNBOOK_BASE}#{alert.lower()}")


def verdict_row() -> Row:
    verdict = (Target(VERDICT, "{{instance}} {{service}}: {{layer}} / {{reason}}"),)
    held = f"time() - autoglm_diagnosis_verdict_since_timestamp_seconds{{{SVC}}}"
    firing = 'ALERTS{alertstate="firing", alertname=~"Autoglm.+", alertname!="AutoglmWatchdog"}'
    return Row(
        "Verdict",
        (
            stat(
                "Verdict",
                "The first broken link of each service's chain as layer / reason, red; green when every link "
                "answers.",
                verdict,
                NONE,
                mapped=VERDICT_STATES,
                text_mode="name",
                no_value="no verdict: is the exporter scraped?",
                width=12,
            ).with_links((RUNBOOKS,), (STATUS_PAGE,)),
            stat(
                "Verdict held for",
                "How long each service's current verdict (or its health) has held, from the exporter's own "
                "clock.",
                (Target(held, "{{instance}} {{service}}"),),
                SECONDS,
                base_color="blue",
                width=6,
            ).with_links(data_links=(STATUS_PAGE,)),
            stat(
                "Healthy",
                "Red as soon as any link of the chain is broken on the instance.",
                (Target(f"autoglm_diagnosis_healthy{{{INST}}}", "{{instance}}"),),
                NONE,
                mapped=up_down("broken", "healthy"),
                width=6,
            ).with_links(data_links=(STATUS_PAGE,)),
            table(
                "Firing alerts",
                "The alerts firing now, with the service they break; a name opens its runbook.",
                Target(firing),
                hide=("Time", "Value", "__name__", "alertstate"),
                width=24,
                height=6,
            ).with_links(
                (RUNBOOKS,),
                (
                    Link(
                        "Runbook: ${__data.fields.alertname}",
                        config.RUNBOOK_BASE + "#${__data.fields.alertname}",
                    ),
                ),
            ),
            state_timeline(
                "Verdict over time",
                "When each verdict held: a row per first broken link (layer / reason), or healthy.",
                verdict,
                mapped=VERDICT_STATES,
                no_value="no verdict in the time range: was the exporter scraped?",
            ),
        ),
    )


def links_row() -> Row:
    return Row(
        "Links of the chain",
        (
            stat(
                "Probe success",
                "Each probe target's last result with its layer of the chain; red means the request failed.",
                (Target(PROBE_WITH_LAYER, "{{layer}}: {{target}}"),),
                NONE,
                mapped=up_down("failing", "ok"),
                width=8,
            ).with_links((runbook("AutoglmServiceNotAnswering"),)),
            stat(
                "Process up",
                "Red when no process of the service runs.",
                (Target(f"autoglm_process_up{{{SVC}}}", "{{service}}"),),
                NONE,
                mapped=up_down(),
                width=4,
            ).with_links((runbook("AutoglmProcessMissing"),)),
            stat(
                "Expected port listening",
                "Red when the service runs but nothing of it listens on its configured port.",
                (Target(f"autoglm_process_expected_port_listening{{{SVC}}}", "{{service}}:{{port}}"),),
                NONE,
                mapped=up_down("not listening", "listening"),
                width=4,
            ).with_links((runbook("AutoglmPortNotListening"),)),
            redis_up(3),
            engine_up(3),
            gpu_available(2),
        ),
    )


def probes_row() -> Row:
    return Row(
        "Probes",
        (
            timeseries(
                "Probe latency by phase",
                "Which phase takes the time: connect (network), processing (the service), transfer.",
                (Target(f"autoglm_probe_phase_duration_seconds{{{INST}}}", "{{target}} {{phase}}"),),
                SECONDS,
            ),
            timeseries(
                "Probe duration",
                "Total time of each probe; above the line users wait too long.",
                (Target(f"autoglm_probe_duration_seconds{{{INST}}}", "{{target}}"),),
                SECONDS,
                steps=line("probe_latency_warning_seconds"),
            ),
            timeseries(
                "Probe failures by reason",
                "Failed probes per second: connect_refused means nothing listens, read_timeout a hang.",
                (
                    Target(
                        f"instance_target:autoglm_probe_failures:rate{W}{{{INST}}}",
                        "{{target}} {{reason}}",
                    ),
                ),
                OPS,
            ),
            timeseries(
                "Time to first token",
                "How long streaming probes wait for the first token; rising means the engine is slow.",
                (Target(f"autoglm_probe_time_to_first_token_seconds{{{INST}}}", "{{target}}"),),
                SECONDS,
                steps=line("probe_latency_warning_seconds"),
            ),
            timeseries(
                "Consecutive failures and waiting now",
                "Probes that failed in a row, and how long the probe in flight has waited: a hang shows "
                "before it times out.",
                (
                    Target(f"autoglm_probe_consecutive_failures{{{INST}}}", "{{target}} failures in a row"),
                    Target(f"autoglm_probe_in_flight_seconds{{{INST}}}", "{{target}} seconds waiting"),
                ),
                SHORT,
            ),
            stat(
                "Startup seconds",
                "Seconds from the process start until it listened and until it first answered a probe.",
                (Target(f"autoglm_service_startup_seconds{{{SVC}}}", "{{service}} {{milestone}}"),),
                SECONDS,
                base_color="blue",
                width=12,
                height=8,
            ),
            stat(
                "Last HTTP status",
                "HTTP status of each target's last answer: green 2xx, yellow 3xx, orange 4xx, red 5xx and 0 "
                "(no answer).",
                (Target(f"autoglm_probe_http_status_code{{{INST}}}", "{{target}}"),),
                NONE,
                steps=tuple(Step(value, color) for value, color in config.HTTP_STATUS_STEPS),
                base_color="red",
                width=12,
                height=8,
            ),
        ),
    )


def _quantiles(histogram: str, selector: str, by: str, legend: str) -> tuple[Target, ...]:
    """p50, p95 and p99 of a histogram's rate, one series per `by`."""
    buckets = f"sum by (le, {by}) (rate({histogram}_bucket{{{selector}}}[$__rate_interval]))"
    return tuple(
        Target(f"histogram_quantile({q}, {buckets})", f"{legend} p{round(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    )


VLLM = 'model_name=~"$model_name"'


def latency_row() -> Row:
    """What users wait for: the probes' own percentiles beside the engine's (vLLM's histograms, scraped
    from the engine's /metrics by Prometheus itself)."""
    return Row(
        "Latency",
        (
            timeseries(
                "Probe duration percentiles",
                "p50, p95 and p99 of the probes' whole request, from their histogram; above the line misses "
                "the latency objective.",
                _quantiles("autoglm_probe_request_duration_seconds", INST, "target", "{{target}}"),
                SECONDS,
                steps=line("probe_latency_warning_seconds"),
                width=12,
            ),
            timeseries(
                "Probe time to first token percentiles",
                "p50, p95 and p99 of the streaming probes' wait for their first token.",
                _quantiles("autoglm_probe_first_token_seconds", INST, "target", "{{target}}"),
                SECONDS,
                width=12,
            ),
            timeseries(
                "Engine time to first token",
                "p50, p95 and p99 of vLLM's time to first token (queue and prefill) over every request it "
                "served.",
                _quantiles("vllm:time_to_first_token_seconds", VLLM, "model_name", "{{model_name}}"),
                SECONDS,
                width=6,
            ),
            timeseries(
                "Engine inter-token latency",
                "p50, p95 and p99 of vLLM's time between two output tokens: the decode speed users see.",
                _quantiles("vllm:inter_token_latency_seconds", VLLM, "model_name", "{{model_name}}"),
                SECONDS,
                width=6,
            ),
            timeseries(
                "Engine end-to-end latency",
                "p50, p95 and p99 of vLLM's whole request, from arrival to the last token.",
                _quantiles("vllm:e2e_request_latency_seconds", VLLM, "model_name", "{{model_name}}"),
                SECONDS,
                width=6,
            ),
            timeseries(
                "Engine queue time",
                "p50, p95 and p99 of the time vLLM's requests waited before being scheduled: rising means "
                "too few replicas.",
                _quantiles("vllm:request_queue_time_seconds", VLLM, "model_name", "{{model_name}}"),
                SECONDS,
                width=6,
            ),
        ),
    )


def slo_row() -> Row:
    def ratio(objective: config.Objective, window: float) -> str:
        return f"{slo_rule_name(objective, window)}{{{SVC_ONLY}}}"

    hour = config.HOUR
    burn = tuple(
        Target(f"{ratio(o, hour)} / {o.budget:g}", f"{{{{service}}}} {o.name.removeprefix('probe_')}")
        for o in config.OBJECTIVES
    )
    return Row(
        "Service level objectives",
        (
            stat(
                "Probes succeeding (1h)",
                f"Share of client probes that succeeded over the last hour, per service; the objective is "
                f"{config.AVAILABILITY.target:.1%}.",
                (Target(f"1 - {ratio(config.AVAILABILITY, hour)}", "{{service}}"),),
                RATIO,
                base_color="blue",
                width=6,
            ).with_links((runbook(config.AVAILABILITY.alert),)),
            stat(
                "Probes within the latency objective (1h)",
                f"Share of client probes that answered within {config.LATENCY.threshold:g} s over the last "
                f"hour; the objective is {config.LATENCY.target:.0%}.",
                (Target(f"1 - {ratio(config.LATENCY, hour)}", "{{service}}"),),
                RATIO,
                base_color="blue",
                width=6,
            ).with_links((runbook(config.LATENCY.alert),)),
            timeseries(
                "Error budget burn rate (1h)",
                "How many times faster than the 30-day budget allows each objective burns; the fast alert "
                "pages from 14.4.",
                burn,
                SHORT,
                width=12,
            ),
        ),
    )


def host_row() -> Row:
    working = f'{INST}, mode!~"idle|iowait"'
    busy = f"sum by (instance) (rate(autoglm_system_cpu_seconds_total{{{working}}}[$__rate_interval]))"
    return Row(
        "Host resources",
        (
            timeseries(
                "CPU busy",
                "Cores busy on the whole machine against the cores it has: at the top, every thread waits "
                "for a CPU.",
                (
                    Target(busy, "{{instance}} busy"),
                    Target(f"autoglm_system_cpus{{{INST}}}", "{{instance}} cores"),
                ),
                CORES,
                width=6,
            ),
            timeseries(
                "Memory available",
                "Memory available to new work (free plus reclaimable) against the total.",
                (
                    Target(
                        f'autoglm_system_memory_bytes{{{INST}, field=~"total|available"}}',
                        "{{instance}} {{field}}",
                    ),
                ),
                BYTES,
                width=6,
            ),
            timeseries(
                "Load average",
                "Runnable and uninterruptible threads averaged over 1, 5 and 15 minutes, against the cores.",
                (
                    Target(f"autoglm_system_load{{{INST}}}", "{{instance}} {{window}}"),
                    Target(f"autoglm_system_cpus{{{INST}}}", "{{instance}} cores"),
                ),
                SHORT,
                width=6,
            ),
            timeseries(
                "Threads running and blocked",
                "Threads runnable now, and blocked in I/O (D state): many blocked means the disk or a mount "
                "hangs.",
                (
                    Target(f"autoglm_system_procs_running{{{INST}}}", "{{instance}} running"),
                    Target(f"autoglm_system_procs_blocked{{{INST}}}", "{{instance}} blocked"),
                ),
                SHORT,
                width=6,
            ),
        ),
    )


CHAIN_ANNOTATIONS = (
    Annotation(
        "Verdict changes",
        f"autoglm_diagnosis_verdict_since_timestamp_seconds{{{SVC}}} * 1000",
        "Verdict of {{service}} changed",
        "{{instance}}: see the Verdict panel for the new one",
        "red",
        ("service", "instance"),
    ),
    Annotation(
        "Process starts",
        f"autoglm_process_start_time_seconds{{{SVC}}} * 1000 > 0",
        "{{service}} started",
        "A new process of {{service}} on {{instance}} (a restart when it follows another)",
        "orange",
        ("service", "instance"),
    ),
)


def chain() -> Dashboard:
    return Dashboard(
        "autoglm-chain",
        "AutoGLM / Chain overview",
        "The verdict (first broken link of the chain) and how long it held, the alerts firing, every "
        "link (probes, process, port, Redis, engine, GPU), latency percentiles, the objectives and "
        "the host.",
        (verdict_row(), links_row(), probes_row(), latency_row(), slo_row(), host_row()),
        (INSTANCE_VAR, SERVICE_VAR, MODEL_VAR),
        annotations=CHAIN_ANNOTATIONS,
    )


# --- 2. Service process -----------------------------------------------------------------------


def context_switch_row() -> Row:
    per_cpu = f"instance:autoglm_system_context_switches_per_cpu:rate{W}{{{INST}}}"
    return Row(
        "Context switches",
        (
            timeseries(
                "Context switches per service",
                "All threads: voluntary switches are waits (I/O, locks), involuntary ones preemption.",
                (
                    Target(
                        f"instance_service:autoglm_process_context_switches:rate{W}{{{SVC}}}",
                        "{{service}} {{type}}",
                    ),
                ),
                PER_SECOND,
            ),
            timeseries(
                "System context switches per CPU",
                "Context switches of the whole machine per CPU; above the line is a context-switch storm.",
                (Target(per_cpu, "{{instance}}"),),
                PER_SECOND,
                steps=line("context_switches_per_cpu_per_second"),
            ),
        ),
    )


def threads_cpu_row() -> Row:
    restarts = (
        f"increase(autoglm_process_restarts_total{{{SVC}}}[{prometheus_duration(config.RESTART_WINDOW)}])"
    )
    return Row(
        "Threads, CPU and memory",
        (
            timeseries(
                "Threads",
                "Threads of the service's processes; steady growth is a thread leak.",
                (Target(f"autoglm_process_threads{{{SVC}}}", "{{service}}"),),
                SHORT,
                width=8,
            ),
            timeseries(
                "Thread states",
                "Threads in each scheduler state; many in D (disk sleep) means they wait for I/O.",
                (Target(f"autoglm_process_thread_states{{{SVC}}}", "{{service}} {{state}}"),),
                SHORT,
                width=8,
            ),
            timeseries(
                "CPU by mode",
                "CPU cores the service uses, user and system; flat at its quota means it is CPU-bound.",
                (
                    Target(
                        rate("autoglm_process_cpu_seconds_total", SVC, "instance, service, mode"),
                        "{{service}} {{mode}}",
                    ),
                ),
                CORES,
                width=8,
            ),
            timeseries(
                "Resident memory",
                "Resident memory of the service's processes; growth without bound is a leak.",
                (Target(f"autoglm_process_resident_memory_bytes{{{SVC}}}", "{{service}}"),),
                BYTES,
                width=8,
            ),
            timeseries(
                "Open file descriptors",
                "File descriptors the service holds open; steady growth is a leak of sockets or files.",
                (Target(f"autoglm_process_open_fds{{{SVC}}}", "{{service}}"),),
                SHORT,
                width=8,
            ),
            timeseries(
                f"Restarts in {prometheus_duration(config.RESTART_WINDOW)}",
                "Times the service's process was replaced; above the line it is crash-looping.",
                (Target(restarts, "{{service}}"),),
                SHORT,
                steps=line("restarts_per_window"),
                width=8,
            ),
            table(
                "Listening ports",
                "Every TCP port a process of the service listens on now; the expected port should be here.",
                Target(f"autoglm_process_listening{{{SVC}}} == 1"),
                height=5,
            ),
        ),
    )


def cgroup_row() -> Row:
    throttled = f"instance_service:autoglm_container_cpu_throttled:ratio_rate{W}{{{SVC}}}"
    return Row(
        "Container (cgroup)",
        (
            timeseries(
                "CPU throttled ratio",
                "Share of CPU periods the cgroup spent throttled; above the line requests slow down.",
                (Target(throttled, "{{service}}"),),
                RATIO,
                steps=line("cpu_throttled_ratio"),
                high=1,
                width=8,
            ),
            timeseries(
                "CPU used vs quota",
                "CPU cores the service uses against its cgroup quota; touching the quota means throttling.",
                (
                    Target(
                        f"instance_service:autoglm_process_cpu_seconds:rate{W}{{{SVC}}}",
                        "{{service}} used",
                    ),
                    Target(f"autoglm_container_cpu_quota_cores{{{SVC}}}", "{{service}} quota"),
                ),
                CORES,
                width=8,
            ),
            timeseries(
                "Memory vs limit",
                "The cgroup's memory against its limit; a working set near the limit risks an OOM kill.",
                (
                    Target(f"autoglm_container_memory_usage_bytes{{{SVC}}}", "{{service}} usage"),
                    Target(f"autoglm_container_memory_working_set_bytes{{{SVC}}}", "{{service}} working set"),
                    Target(f"autoglm_container_memory_limit_bytes{{{SVC}}}", "{{service}} limit"),
                ),
                BYTES,
                width=8,
            ),
            timeseries(
                "OOM kills",
                "Processes of the service's cgroup the kernel's OOM killer ended; any bar is a crash.",
                (
                    Target(
                        increase("autoglm_container_oom_kills_total", SVC, "instance, service"), "{{service}}"
                    ),
                ),
                SHORT,
                bars=True,
                width=24,
                height=6,
            ),
        ),
    )


def forensics_row() -> Row:
    captures = increase("autoglm_forensics_captures_total", SVC, "instance, service, reason", "$__range")
    failures = increase(
        "autoglm_forensics_capture_failures_total", SVC, "instance, service, kind", "$__range"
    )
    return Row(
        "Forensics and environment",
        (
            timeseries(
                "Threads by state in the last capture",
                "py-spy's view of the main process: many blocked threads while probes fail is a hang.",
                (Target(f"autoglm_forensics_threads{{{SVC}}}", "{{service}} {{state}}"),),
                SHORT,
                width=10,
            ),
            stat(
                "Deadlock suspected",
                "Red when the last stack captures found threads blocked on locks that never moved.",
                (Target(f"autoglm_forensics_deadlock_suspected{{{SVC}}}", "{{service}}"),),
                NONE,
                mapped=flag("no", "suspected"),
                width=4,
                height=8,
            ),
            stat(
                "Stack captures in range",
                "Captures taken and failed in the range; failures of kind permission need SYS_PTRACE.",
                (
                    Target(captures, "{{service}} {{reason}}"),
                    Target(failures, "{{service}} failed: {{kind}}"),
                ),
                SHORT,
                base_color="blue",
                width=10,
                height=8,
            ),
            state_timeline(
                "Environment drift",
                "When a part of the service's environment (packages, python, model...) left its baseline.",
                (Target(f"autoglm_environment_drift{{{SVC}}}", "{{service}} {{component}}"),),
                mapped=flag("baseline", "drifted", "orange"),
            ),
        ),
    )


def process() -> Dashboard:
    return Dashboard(
        "autoglm-process",
        "AutoGLM / Service process",
        "The service's processes: context switches of all threads, threads, CPU, memory, descriptors, "
        "restarts, ports, cgroup limits, stack captures and environment drift.",
        (context_switch_row(), threads_cpu_row(), cgroup_row(), forensics_row()),
        (INSTANCE_VAR, SERVICE_VAR),
    )


# --- 3. Queue and dependencies ----------------------------------------------------------------


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


def dependencies() -> Dashboard:
    return Dashboard(
        "autoglm-dependencies",
        "AutoGLM / Queue and dependencies",
        "Redis (PING, clients, memory, queue depths), the inference engine (waiting, running, KV cache, "
        "tokens, stalls), error logs and traced request stages.",
        (redis_row(), engine_row(), logs_row()),
        (INSTANCE_VAR,),
    )


# --- 4. GPU -----------------------------------------------------------------------------------


def gpu_overview_row() -> Row:
    return Row(
        "GPUs",
        (
            gpu_available(4),
            stat(
                "GPUs",
                "Number of GPUs found; fewer than installed means one fell off the bus.",
                (Target(f"autoglm_gpu_devices{{{INST}}}", "{{instance}}"),),
                SHORT,
                base_color="blue",
                width=4,
            ),
            stat(
                "GPU lost",
                "Red when NVML reports the GPU lost (fell off the bus): it needs a reset or a reboot.",
                (Target(f"autoglm_gpu_lost{{{GPU}}}", "GPU {{gpu}}"),),
                NONE,
                mapped=flag("ok", "lost"),
                width=4,
            ),
            stat(
                "CUDA compatibility",
                "Red when the service's CUDA runtime does not fit the GPU (compute capability) or driver.",
                (Target(f"autoglm_cuda_compatible{{{GPU}}}", "{{service}} on GPU {{gpu}}: {{check}}"),),
                NONE,
                mapped=up_down("incompatible", "compatible"),
                width=12,
            ),
            table(
                "GPU info",
                "Each GPU's name, driver, highest CUDA version the driver supports, compute capability.",
                Target(f"autoglm_gpu_info{{{GPU}}}"),
                height=5,
            ),
        ),
    )


def gpu_memory_row() -> Row:
    used_ratio = f"instance_gpu:autoglm_gpu_memory_used:ratio{{{GPU}}}"
    return Row(
        "Memory",
        (
            timeseries(
                "Memory used, total and reserved",
                "GPU memory in use against the total and what the driver reserves.",
                (
                    Target(f"autoglm_gpu_memory_used_bytes{{{GPU}}}", "GPU {{gpu}} used"),
                    Target(f"autoglm_gpu_memory_total_bytes{{{GPU}}}", "GPU {{gpu}} total"),
                    Target(f"autoglm_gpu_memory_reserved_bytes{{{GPU}}}", "GPU {{gpu}} reserved"),
                ),
                BYTES,
            ),
            timeseries(
                "Memory used ratio",
                "Share of each GPU's memory in use; above the line allocations may fail with CUDA OOM.",
                (Target(used_ratio, "GPU {{gpu}}"),),
                RATIO,
                steps=line("gpu_memory_used_ratio"),
                high=1,
            ),
            timeseries(
                "Memory per service",
                "GPU memory used by each service's processes (other: processes of no configured service).",
                (Target(f"autoglm_gpu_process_memory_used_bytes{{{GPU}}}", "GPU {{gpu}} {{service}}"),),
                BYTES,
                stack=True,
            ),
            timeseries(
                "Processes per service",
                "Compute processes on each GPU by service; 0 for the engine means it lost its GPU.",
                (Target(f"autoglm_gpu_processes{{{GPU}}}", "GPU {{gpu}} {{service}}"),),
                SHORT,
            ),
        ),
    )


def gpu_utilization_row() -> Row:
    per_service = f"instance_service:autoglm_gpu_utilization_ratio:avg{{{INST}}}"
    return Row(
        "Utilization, heat and power",
        (
            timeseries(
                "Utilization",
                "Share of time a kernel ran (and memory was busy); near 0 while requests wait is a stall.",
                (
                    Target(f"autoglm_gpu_utilization_ratio{{{GPU}}}", "GPU {{gpu}} kernels"),
                    Target(f"autoglm_gpu_memory_utilization_ratio{{{GPU}}}", "GPU {{gpu}} memory"),
                ),
                RATIO,
                high=1,
            ),
            timeseries(
                "Utilization per service",
                "Mean utilization of the GPUs each service runs on; above the line, scale out.",
                (Target(per_service, "{{service}}"),),
                RATIO,
                steps=line("gpu_scale_out_utilization_ratio", "orange"),
                high=1,
            ),
            timeseries(
                "Temperature",
                "GPU die temperature; above the line the GPU slows its clocks to cool down.",
                (Target(f"autoglm_gpu_temperature_celsius{{{GPU}}}", "GPU {{gpu}}"),),
                CELSIUS,
                steps=line("gpu_temperature_celsius"),
                width=8,
            ),
            timeseries(
                "Power draw vs limit",
                "Board power against the enforced limit; drawing at the limit caps the clocks.",
                (
                    Target(f"autoglm_gpu_power_draw_watts{{{GPU}}}", "GPU {{gpu}} draw"),
                    Target(f"autoglm_gpu_power_limit_watts{{{GPU}}}", "GPU {{gpu}} limit"),
                ),
                WATTS,
                width=8,
            ),
            timeseries(
                "Clocks",
                "SM and memory clocks; a drop while busy means something holds them down.",
                (Target(f"autoglm_gpu_clock_hertz{{{GPU}}}", "GPU {{gpu}} {{clock}}"),),
                HERTZ,
                width=8,
            ),
            state_timeline(
                "Clock event reasons active",
                "When a reason (power cap, thermal slowdown...) held the clocks down; idle is harmless.",
                (Target(f"autoglm_gpu_clock_event_reason_active{{{GPU}}} == 1", "GPU {{gpu}} {{reason}}"),),
                mapped=(State(1, "active", "orange"),),
                no_value="no reason held the clocks down",
            ),
        ),
    )


def gpu_errors_row() -> Row:
    return Row(
        "Errors",
        (
            timeseries(
                "XID errors",
                "XID events by number; 48, 63, 64, 74, 79, 94, 95 and 119/120 mean the GPU needs attention.",
                (
                    Target(
                        increase("autoglm_gpu_xid_errors_total", GPU, "instance, gpu, xid"),
                        "GPU {{gpu}} XID {{xid}}",
                    ),
                ),
                SHORT,
                bars=True,
            ),
            timeseries(
                "ECC errors",
                "Memory errors corrected and not; uncorrected ones crash the processes on the GPU.",
                (
                    Target(
                        increase("autoglm_gpu_ecc_errors_total", GPU, "instance, gpu, type"),
                        "GPU {{gpu}} {{type}}",
                    ),
                ),
                SHORT,
                bars=True,
            ),
        ),
    )


def gpu() -> Dashboard:
    return Dashboard(
        "autoglm-gpu",
        "AutoGLM / GPU",
        "NVIDIA GPUs: memory (per service too), utilization, temperature, power, clock event reasons, "
        "XID and ECC errors, CUDA compatibility with each service.",
        (gpu_overview_row(), gpu_memory_row(), gpu_utilization_row(), gpu_errors_row()),
        (INSTANCE_VAR, GPU_VAR),
    )


# --- 5. Exporter health -----------------------------------------------------------------------


def scrape_row() -> Row:
    scrape = f"{config.EXPORTER_SELECTOR}, {INST}"
    return Row(
        "Scrape",
        (
            stat(
                "Scrape up",
                "Red when Prometheus cannot scrape the exporter: every other panel is then blind.",
                (Target(f"up{{{scrape}}}", "{{instance}}"),),
                NONE,
                mapped=up_down(),
            ),
            stat(
                "Config reload",
                "Red when the last config reload failed: the exporter still runs the previous config.",
                (Target(f"autoglm_exporter_config_last_reload_successful{{{INST}}}", "{{instance}}"),),
                NONE,
                mapped=up_down("failed", "ok"),
            ),
            table(
                "Build info",
                "Version of the exporter and of the Python running it, per instance.",
                Target(f"autoglm_exporter_build_info{{{INST}}}"),
                width=12,
                height=5,
            ),
            timeseries(
                "Scrape duration",
                "How long a scrape of the exporter takes; /metrics is cached, so it should stay small.",
                (Target(f"scrape_duration_seconds{{{scrape}}}", "{{instance}}"),),
                SECONDS,
                width=24,
                height=6,
            ),
        ),
    )


def collectors_row() -> Row:
    last_success = f"time() - (autoglm_exporter_collector_last_success_timestamp_seconds{{{INST}}} > 0)"
    return Row(
        "Collectors",
        (
            state_timeline(
                "Collector success",
                "Red while a collector's runs fail: its series are missing from the other dashboards.",
                (Target(f"autoglm_exporter_collector_success{{{INST}}}", "{{instance}} {{collector}}"),),
                mapped=up_down("failed", "ok"),
                width=12,
                height=8,
            ),
            state_timeline(
                "Collector stuck",
                "Red while a collector's run is past its deadline (a hung NVML call or socket).",
                (Target(f"autoglm_exporter_collector_stuck{{{INST}}}", "{{instance}} {{collector}}"),),
                mapped=flag("no", "stuck"),
                width=12,
                height=8,
            ),
            timeseries(
                "Collector duration",
                "How long each collector's last run took; near its deadline it is about to time out.",
                (Target(f"autoglm_exporter_collector_duration_seconds{{{INST}}}", "{{collector}}"),),
                SECONDS,
                width=8,
            ),
            timeseries(
                "Last success age",
                "Seconds since each collector last succeeded; above the line its data is stale.",
                (Target(last_success, "{{collector}}"),),
                SECONDS,
                steps=line("collector_stale_seconds"),
                width=8,
            ),
            timeseries(
                "Collector errors by kind",
                "Failed collector runs per second by kind (timeout, error...).",
                (
                    Target(
                        rate("autoglm_exporter_collector_errors_total", INST, "instance, collector, kind"),
                        "{{collector}} {{kind}}",
                    ),
                ),
                OPS,
                width=8,
            ),
        ),
    )


def exporter_process_row() -> Row:
    own = f"{config.EXPORTER_SELECTOR}, {INST}"
    return Row(
        "Exporter process",
        (
            timeseries(
                "Exporter CPU",
                "CPU the exporter itself uses; a monitor should stay a small fraction of one core.",
                (Target(f"rate(process_cpu_seconds_total{{{own}}}[$__rate_interval])", "{{instance}}"),),
                CORES,
                width=6,
            ),
            timeseries(
                "Exporter memory",
                "Resident memory of the exporter; steady growth is a leak.",
                (Target(f"process_resident_memory_bytes{{{own}}}", "{{instance}}"),),
                BYTES,
                width=6,
            ),
            timeseries(
                "Exporter threads",
                "Threads of the exporter: a call that hangs must never multiply them.",
                (Target(f"autoglm_exporter_threads{{{INST}}}", "{{instance}}"),),
                SHORT,
                width=6,
            ),
            timeseries(
                "Exporter file descriptors",
                "File descriptors the exporter holds open against its limit.",
                (
                    Target(f"process_open_fds{{{own}}}", "{{instance}} open"),
                    Target(f"process_max_fds{{{own}}}", "{{instance}} limit"),
                ),
                SHORT,
                width=6,
            ),
        ),
    )


def exporter() -> Dashboard:
    return Dashboard(
        "autoglm-exporter",
        "AutoGLM / Exporter health",
        "The exporter itself: is it scraped, does its config load, do its collectors succeed in time, "
        "what it costs the machine.",
        (scrape_row(), collectors_row(), exporter_process_row()),
        (INSTANCE_VAR,),
    )


# --- generation -------------------------------------------------------------------------------


def dashboards() -> list[Dashboard]:
    return [chain(), process(), dependencies(), gpu(), exporter(), fleet()]


def render(dashboard: Dashboard) -> str:
    return json.dumps(dashboard.to_json(), indent=2, sort_keys=True) + "\n"


def generated_files() -> dict[str, str]:
    """{repo-relative path: content} of every dashboard."""
    return {f"dashboards/{d.uid}.json": render(d) for d in dashboards()}


def queries() -> list[tuple[str, str]]:
    """("<uid>/<panel title>", expr) for every target and ("<uid>/$<name>", selector) for every query
    variable (the series selector inside its label_values()), raw: pass each through
    grafana.concrete() before sending it to a plain Prometheus."""
    return [query for d in dashboards() for query in d.queries()]
