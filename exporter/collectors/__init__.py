"""The collectors, one module each, and how a Config turns into instances of them."""

from __future__ import annotations

from collections.abc import Mapping

from ..config import Config
from .base import Collector
from .process import ProcessCollector
from .system import SystemCollector

COLLECTOR_CLASSES: dict[str, type[Collector]] = {
    SystemCollector.name: SystemCollector,
    ProcessCollector.name: ProcessCollector,
}


def build_collectors(config: Config, overrides: Mapping[str, bool] | None = None) -> list[Collector]:
    """Instances of every enabled collector; `overrides` are the --[no-]collector.NAME flags."""
    overrides = overrides or {}
    enabled = [name for name in COLLECTOR_CLASSES if overrides.get(name, config.collector(name).enabled)]
    built: list[Collector] = []
    for name in enabled:
        if name == SystemCollector.name:
            built.append(SystemCollector(config.proc_root))
        elif name == ProcessCollector.name:
            built.append(ProcessCollector(config.services, config.proc_root))
    return built
