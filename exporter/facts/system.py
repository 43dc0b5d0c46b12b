"""What the system collector hands to the verdict: the machine's CPU, memory and load."""

from __future__ import annotations

from dataclasses import dataclass

from ..linux import procfs


@dataclass(frozen=True)
class SystemFacts:
    """The latest reading plus per-second rates since the previous one (None on the first run)."""

    stat: procfs.SystemStat
    memory: dict[str, int]
    load: tuple[float, float, float]
    context_switches_per_second: float | None
    cpu_busy_ratio: float | None  # share of all CPU time not idle or iowait since the last run
