"""Links about the exporter itself: collectors failing or stuck.

A run past its deadline ends one of two ways. An external command (nvidia-smi, py-spy) is killed
at its deadline and reaped: the run fails (`collector_failed`, kind timeout) and the next run
starts on time. A call inside the exporter's own thread (NVML, a socket, a D-state read) cannot
be interrupted: the run is given up and the collector is `collector_stuck` while that call has
not returned (its later runs are skipped, kind skipped_stuck), so a hung call costs one thread,
never one per interval.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..base.health import CollectorHealth
from .model import Link


def exporter_links(health: Mapping[str, CollectorHealth]) -> list[Link]:
    return [_collector_link(name, h) for name, h in sorted(health.items()) if h.runs and not h.success]


def _collector_link(name: str, health: CollectorHealth) -> Link:
    error = health.last_error or "no error message"
    if health.stuck or health.last_error_kind == "skipped_stuck":
        reason = "collector_stuck"
        summary = f"stuck: a call past its deadline has not returned; no new run until it does ({error})"
    elif health.last_error_kind == "timeout":
        reason = "collector_failed"
        summary = f"failed: its last run passed its deadline and was given up (a command is killed): {error}"
    else:
        reason = "collector_failed"
        summary = f"failed ({health.last_error_kind or 'error'}): {error}"
    return Link(
        f"collector {name}",
        "exporter",
        False,
        summary,
        reason,
        (f"collector {name} last error: {error}",),
        "autoglm-exporter doctor --log.level=debug",
        source=name,
    )
