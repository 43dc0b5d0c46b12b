"""AutoGLM / Exporter health: is the exporter scraped, does its config load, do its collectors
succeed in time, what it costs the machine."""

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
    Dashboard,
    Row,
    Target,
    flag,
    stat,
    state_timeline,
    table,
    timeseries,
    up_down,
)
from .panels import (
    INST,
    INSTANCE_VAR,
    line,
    rate,
)


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
            timeseries(
                "Exporter stalled",
                "Share of time the exporter wanted to run and was not scheduled (a starved machine, a CPU "
                "quota, a frozen VM): its readings come that much later, and its deadlines leave that time "
                "out.",
                (
                    Target(
                        f"rate(autoglm_exporter_stalled_seconds_total{{{INST}}}[$__rate_interval])",
                        "{{instance}}",
                    ),
                ),
                RATIO,
                width=24,
            ),
        ),
    )


def dashboard() -> Dashboard:
    return Dashboard(
        "autoglm-exporter",
        "AutoGLM / Exporter health",
        "The exporter itself: is it scraped, does its config load, do its collectors succeed in time, "
        "what it costs the machine.",
        (scrape_row(), collectors_row(), exporter_process_row()),
        (INSTANCE_VAR,),
    )
