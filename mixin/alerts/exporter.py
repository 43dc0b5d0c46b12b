"""The autoglm.exporter group: the exporter itself (scraped, its collectors, its config, its
permission to capture stacks)."""

from __future__ import annotations

from .. import config
from ..config import EXPORTER_SELECTOR, FOR, duration
from .alert import Alert
from .fanout import fan_out


def exporter() -> list[Alert]:
    capture_window = duration(config.CAPTURE_WINDOW)
    capture_failures = (
        "sum by (instance, job, service) (increase(autoglm_forensics_capture_failures_total"
        f'{{kind="permission"}}[{capture_window}])) > 0'
    )
    return [
        Alert(
            "AutoglmExporterDown",
            "critical",
            f"up{{{EXPORTER_SELECTOR}}} == 0 or absent(up{{{EXPORTER_SELECTOR}}})",
            "autoglm-exporter{{ if $labels.instance }} on {{ $labels.instance }}{{ end }} cannot be scraped",
            "Prometheus cannot scrape autoglm-exporter{{ if $labels.instance }} on {{ $labels.instance }}"
            "{{ else }} (no target at all){{ end }}: nothing else about this chain is being watched.",
            FOR["exporter"],
        ),
        Alert(
            "AutoglmCollectorFailing",
            "warning",
            "autoglm_exporter_collector_success == 0",
            "Collector {{ $labels.collector }} keeps failing",
            "The {{ $labels.collector }} collector of the exporter on {{ $labels.instance }} has failed for "
            + duration(FOR["ticket"])
            + ": its part of the chain is blind. Errors by kind are in "
            "autoglm_exporter_collector_errors_total and the exporter's log.",
            FOR["ticket"],
        ),
        Alert(
            "AutoglmCollectorStuck",
            "warning",
            "autoglm_exporter_collector_stuck == 1",
            "Collector {{ $labels.collector }} is stuck",
            "A run of the {{ $labels.collector }} collector on {{ $labels.instance }} is still going past "
            "its "
            "deadline (a hung NVML call, socket or subprocess); no new run starts until it returns.",
            FOR["exporter"],
        ),
        Alert(
            "AutoglmConfigReloadFailed",
            "warning",
            "autoglm_exporter_config_last_reload_successful == 0",
            "autoglm-exporter on {{ $labels.instance }} rejected its new configuration",
            "The last configuration load of the exporter on {{ $labels.instance }} failed; it keeps running "
            "on the previous one. `autoglm-exporter check-config` prints every error.",
            FOR["exporter"],
        ),
        Alert(
            "AutoglmCaptureNotPermitted",
            "warning",
            fan_out(capture_failures, "service", "service"),
            "The exporter may not capture stacks of {{ $labels.dependency }}",
            "py-spy could not attach to {{ $labels.dependency }} on {{ $labels.instance }} (permission): "
            "give "
            "the exporter CAP_SYS_PTRACE and the host PID namespace, or hangs are paged without evidence.",
        ),
    ]
