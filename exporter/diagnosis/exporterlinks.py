"""Links about the exporter itself: collectors failing or stuck."""

from __future__ import annotations

from collections.abc import Mapping

from ..core.store import CollectorHealth
from .model import Link


def exporter_links(health: Mapping[str, CollectorHealth]) -> list[Link]:
    links = []
    for name, h in sorted(health.items()):
        if h.runs and not h.success:
            state = "stuck" if h.stuck else "failing"
            links.append(
                Link(
                    f"collector {name}",
                    "exporter",
                    False,
                    f"{state}: {h.last_error}",
                    reason="collector_stuck" if h.stuck else "collector_failed",
                    evidence=(f"collector {name} last error: {h.last_error}",),
                    next_command="autoglm-exporter doctor --log.level=debug",
                )
            )
    return links
