"""AutoGLM / Chain overview: the verdict (first broken link of the chain) and how long it held, the
alerts firing, every link, latency percentiles, the objectives and the host."""

from __future__ import annotations

from .. import config
from ..grafana import (
    BYTES,
    CORES,
    NONE,
    OPS,
    RATIO,
    SECONDS,
    SHORT,
    Annotation,
    Dashboard,
    Link,
    Row,
    State,
    Step,
    Target,
    Variable,
    stat,
    state_timeline,
    table,
    timeseries,
    up_down,
)
from ..rules import slo_rule_name
from .panels import (
    INST,
    INSTANCE_VAR,
    SERVICE_VAR,
    SVC,
    W,
    engine_up,
    gpu_available,
    line,
    redis_up,
    runbook,
)

SVC_ONLY = 'service=~"$service"'  # service-wide series (the objectives) have no instance
# The engine's own metrics come from Prometheus scraping it (job vllm), not from the exporter.
MODEL_VAR = Variable("model_name", "Model", "vllm:num_requests_running", "model_name")

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


def dashboard() -> Dashboard:
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
