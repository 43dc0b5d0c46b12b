"""The autoglm.chain group: the service users call (its verdict, its client probes, its processes
and ports, its logs)."""

from __future__ import annotations

from .. import config
from ..config import FOR, THRESHOLDS, duration
from ..rules import REPLICAS, serving_elsewhere
from .alert import COUNT, Alert
from .fanout import fan_out, log_service, sole_service
from .templates import VERDICT_HELD, VERDICT_NOW, query_list

# Log patterns (besides CUDA OOM, which pages on its own) that mean the service cannot serve.
SERVICE_LOG_PATTERNS = "model_load_failure|config_not_found|nccl_error|oom_killed"
# Probe failures that mean no connection was made (the reasons of autoglm_probe_failures_total).
CONNECT_REASONS = "connect_refused|connect_timeout|unreachable|dns|tls"


def users_hurt() -> str:
    """The `on (instance, service)` match of the replicas whose users are hurt, leaving out error
    lines of the service's log while its client probe still succeeds: those are evidence, not an
    outage. The line's own alert (a CUDA OOM pages) speaks for them, and the verdict keeps them
    longer than that alert's window, so a page here would outlive the cause that silences it."""
    client_ok = (
        "min by (instance, service) (autoglm_probe_success * on (instance, job, target)"
        ' group_left (service) autoglm_probe_target_info{layer="client"}) == 1'
    )
    log_lines_only = (
        'max by (instance, service) (autoglm_diagnosis_verdict{layer="service", reason="log_errors"}) == 1'
        f" and on (instance, service) {client_ok}"
    )
    return (
        "on (instance, service)"
        f" (autoglm_diagnosis_users_hurt == 1 unless on (instance, service) ({log_lines_only}))"
    )


def verdict_alerts() -> list[Alert]:
    """The exporter's verdict: users hurt, at risk, or one replica of several down."""
    verdict = 'max by (instance, job, service) (autoglm_diagnosis_verdict{layer!="exporter"}) == 1'
    hurt = users_hurt()
    return [
        Alert(
            "AutoglmChainBroken",
            "critical",
            f"{verdict} and {hurt}",
            "{{ $labels.service }} on {{ $labels.instance }}: the chain is broken at " + VERDICT_NOW,
            "The exporter's verdict names " + VERDICT_NOW + " as the first broken link of the chain of "
            "{{ $labels.service }} on {{ $labels.instance }} (for " + VERDICT_HELD + "), and users are "
            "hurt: its client probe fails or the link is in the client, network, service or stall layer. "
            "The evidence is on the exporter's status page (/) and in `autoglm-exporter doctor`.",
            FOR["symptom"],
            "symptom",
        ),
        Alert(
            "AutoglmChainDegraded",
            "warning",
            f"{verdict} unless {hurt}",
            "{{ $labels.service }} on {{ $labels.instance }} still answers, but "
            + VERDICT_NOW
            + " is broken",
            "The exporter's verdict names " + VERDICT_NOW + " for {{ $labels.service }} on "
            "{{ $labels.instance }} (for " + VERDICT_HELD + ") while its client probe still succeeds: "
            "the service is at risk, not down.",
            FOR["ticket"],
            "symptom",
        ),
        Alert(
            "AutoglmReplicaDown",
            "warning",
            f"{REPLICAS} == 1 and on (instance, service) ({serving_elsewhere()} > 0)",
            "{{ $labels.service }} on {{ $labels.instance }} is down; other replicas serve",
            "The replica of {{ $labels.service }} on {{ $labels.instance }} does not serve its users (the "
            "verdict there: "
            + VERDICT_NOW
            + ") while "
            + query_list(
                "printf `max by (instance) (autoglm_diagnosis_users_hurt{service=%q}) == 0` $labels.service",
                "instance",
            )
            + "still do: capacity is reduced. It pages when the service's error budget burns, or when no "
            "replica is left.",
            FOR["ticket"],
            "symptom",
        ),
    ]


def unreachable() -> str:
    """Probe targets whose every failure of the window was a connect failure: a hang that follows
    a restart is not one."""
    W = duration(config.RATE_WINDOW)
    return (
        "(sum by (instance, job, target, reason)"
        f' (increase(autoglm_probe_failures_total{{reason=~"{CONNECT_REASONS}"}}[{W}])) > 0)'
        " * on (instance, job, target) group_left (service, layer, url) autoglm_probe_target_info"
        " and on (instance, target) autoglm_probe_consecutive_failures > 0"
        " unless on (instance, target) (sum by (instance, target) (increase(autoglm_probe_failures_total"
        f'{{reason!~"{CONNECT_REASONS}"}}[{W}])) > 0)'
    )


def client_alerts() -> list[Alert]:
    """The client probes: no answer, or no connection."""
    W = duration(config.RATE_WINDOW)
    return [
        Alert(
            "AutoglmServiceNotAnswering",
            "critical",
            "(autoglm_probe_consecutive_failures > 0)"
            ' * on (instance, target) group_left (service, url) autoglm_probe_target_info{layer="client"}',
            "{{ $labels.service }} does not answer its client probe {{ $labels.target }}",
            "The synthetic request {{ $labels.target }} to {{ $labels.url }} has failed {{ $value }} times "
            "in "
            "a row on {{ $labels.instance }}: users get no answer from {{ $labels.service }}.",
            FOR["symptom"],
            "symptom",
        ),
        Alert(
            "AutoglmServiceUnreachable",
            "critical",
            sole_service(unreachable(), "service", "service"),
            "{{ $labels.target }} cannot be connected to: {{ $labels.reason }}",
            "Probes of {{ $labels.target }} ({{ $labels.url }}, for {{ $labels.service }}) failed to connect "
            "with reason {{ $labels.reason }} on {{ $labels.instance }} ("
            + COUNT
            + " in the last "
            + W
            + "). "
            "connect_refused: nothing listens on the port (process down or on another "
            "port); connect_timeout: packets are dropped (firewall, routing) or the accept queue is full.",
            FOR["network"],
            "network",
        ),
    ]


def process_alerts() -> list[Alert]:
    """The service's processes: gone, not listening, their port taken, crash-looping."""
    restart_window = duration(config.RESTART_WINDOW)
    restarts = (
        f"increase(autoglm_process_restarts_total[{restart_window}]) >= {THRESHOLDS['restarts_per_window']}"
    )
    return [
        Alert(
            "AutoglmProcessMissing",
            "critical",
            fan_out("autoglm_process_up == 0", "service", "service"),
            "No process of {{ $labels.dependency }} runs on {{ $labels.instance }}",
            "The exporter on {{ $labels.instance }} finds no process matching service "
            "{{ $labels.dependency }}: "
            "it exited, crashed or never started, and {{ $labels.service }} cannot answer without it.",
            FOR["cause"],
            "cause",
        ),
        Alert(
            "AutoglmPortNotListening",
            "critical",
            fan_out(
                "autoglm_process_expected_port_listening == 0 and on (instance, service) autoglm_process_up "
                "== 1",
                "service",
                "service",
                ("port",),
            ),
            "{{ $labels.dependency }} runs but does not listen on port {{ $labels.port }}",
            "A process of {{ $labels.dependency }} is alive on {{ $labels.instance }} but nothing of it "
            "listens on its port {{ $labels.port }}: still loading the model, bound elsewhere, or stuck "
            "before listen(). {{ $labels.service }} cannot answer through it.",
            FOR["network"],
            "cause",
        ),
        Alert(
            "AutoglmPortTaken",
            "critical",
            fan_out("autoglm_process_expected_port_taken == 1", "service", "service", ("port",)),
            "Another process holds port {{ $labels.port }} of {{ $labels.dependency }}",
            "A process that is not part of {{ $labels.dependency }} listens on its port {{ $labels.port }} "
            "on "
            "{{ $labels.instance }}: clients reach the wrong program and the service cannot bind.",
            FOR["cause"],
            "cause",
        ),
        Alert(
            "AutoglmServiceRestarting",
            "warning",
            fan_out(restarts, "service", "service"),
            "{{ $labels.dependency }} restarted " + COUNT + " times in " + restart_window,
            "The main process of {{ $labels.dependency }} on {{ $labels.instance }} was replaced "
            + COUNT
            + " times in the last "
            + restart_window
            + ": a crash loop. Its error log says why.",
        ),
    ]


def log_alerts() -> list[Alert]:
    """The service's logs: CUDA out of memory, other error lines, the file gone."""
    log_window = duration(config.LOG_ERROR_WINDOW)
    log_errors = f'increase(autoglm_log_errors_total{{pattern=~"{SERVICE_LOG_PATTERNS}"}}[{log_window}]) > 0'
    oom = f'increase(autoglm_log_errors_total{{pattern="cuda_oom"}}[{log_window}]) > 0'
    return [
        Alert(
            "AutoglmCudaOutOfMemory",
            "critical",
            log_service(oom),
            "CUDA out of memory in log {{ $labels.log }}",
            "Log {{ $labels.log }}{{ with $labels.dependency }} of {{ . }}{{ end }} on {{ $labels.instance }}"
            " reported CUDA out of memory in the last "
            + log_window
            + " (matching lines: "
            + COUNT
            + "): requests fail while the GPU is full.",
            role="node",
        ),
        Alert(
            "AutoglmServiceLogErrors",
            "warning",
            log_service(log_errors),
            "{{ $labels.pattern }} errors in log {{ $labels.log }}",
            "Log {{ $labels.log }}{{ with $labels.dependency }} of {{ . }}{{ end }} on {{ $labels.instance }}"
            " matched {{ $labels.pattern }} in the last " + log_window + " (matching lines: " + COUNT + ").",
        ),
        Alert(
            "AutoglmLogFileMissing",
            "warning",
            log_service("autoglm_log_file_present == 0"),
            "The log file {{ $labels.log }} is missing",
            "The exporter on {{ $labels.instance }} cannot find the log file {{ $labels.log }}: error "
            "lines (CUDA out of memory, load failures) go unseen. The service writes elsewhere, the "
            "directory is not mounted, or the service never started.",
            FOR["ticket"],
        ),
    ]


def probe_results_stale() -> Alert:
    """The probe collector itself: no probe result comes any more."""
    stale = (
        f"(time() - autoglm_probe_last_finished_timestamp_seconds > "
        f"{config.PROBE_STALE * config.TIME_SCALE:g})"
        " * on (instance, job, target) group_left (service) autoglm_probe_target_info"
    )
    return Alert(
        "AutoglmProbeResultsStale",
        "warning",
        sole_service(stale, "service", "service"),
        "Probe {{ $labels.target }} has not finished for {{ $value | humanizeDuration }}",
        "The last result of probe {{ $labels.target }} on {{ $labels.instance }} is "
        "{{ $value | humanizeDuration }} old: the probe collector is stuck or stopped, and every "
        "page about {{ $labels.service }}'s answers is blind.",
        FOR["cause"],
    )


def chain() -> list[Alert]:
    return [*verdict_alerts(), *client_alerts(), *process_alerts(), *log_alerts(), probe_results_stale()]
