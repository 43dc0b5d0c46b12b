"""The collectors, one module each, and how a Config turns into instances of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..config import KNOWN_COLLECTORS, Config
from ..linux.processes import MEMBERSHIP_REUSE, ServiceMatcher, shared_matcher
from .base import Collector
from .container import ContainerCollector
from .engine import EngineCollector
from .environment import EnvironmentCollector
from .exporter import ExporterCollector, dependencies_of
from .gpu.collector import GpuCollector
from .inflight import InFlightCollector, InFlightRegistry
from .logs import LogsCollector
from .probe import ProbeCollector
from .process import ProcessCollector
from .redis import RedisCollector
from .system import SystemCollector

# The probes now waiting: the probe collector fills it, the inflight collector reads it. One for the
# process, not one per build: a reload keeps or replaces those two collectors each on its own
# settings, and they must still share it. Keyed by target name.
PROBES_IN_FLIGHT = InFlightRegistry()

# Each collector with how to build it from the config, in the chain's order (doctor prints it so).
_REGISTRY: tuple[tuple[type[Collector], Callable[[Config], Collector]], ...] = (
    (SystemCollector, lambda config: SystemCollector(config.proc_root)),
    (ProcessCollector, lambda config: ProcessCollector(config.services, config.proc_root, _matcher(config))),
    (
        ContainerCollector,
        lambda config: ContainerCollector(
            config.services, config.proc_root, f"{config.sys_root}/fs/cgroup", _matcher(config)
        ),
    ),
    (ProbeCollector, lambda config: ProbeCollector(config.targets, PROBES_IN_FLIGHT)),
    (
        InFlightCollector,
        lambda config: InFlightCollector(config.targets, PROBES_IN_FLIGHT, config.forensics.hang_after),
    ),
    (RedisCollector, lambda config: RedisCollector(config.redis)),
    (EngineCollector, lambda config: EngineCollector(config.engines, config.collector("engine").interval)),
    (LogsCollector, lambda config: LogsCollector(config.logs)),
    (
        GpuCollector,
        lambda config: GpuCollector(config.gpu, config.services, config.proc_root, matcher=_matcher(config)),
    ),
    (
        EnvironmentCollector,
        lambda config: EnvironmentCollector(
            config.services, config.environment, config.proc_root, _matcher(config)
        ),
    ),
    (ExporterCollector, lambda config: ExporterCollector(dependencies_of(config))),
)
COLLECTOR_CLASSES: dict[str, type[Collector]] = {cls.name: cls for cls, _ in _REGISTRY}


def _matcher(config: Config) -> ServiceMatcher:
    """The one ServiceMatcher of the collectors that ask for a service's processes (process,
    container, gpu, environment): it hands out one membership per cycle of the quickest of them."""
    shortest = min(config.collector(name).interval for name in ("process", "container", "gpu", "environment"))
    return shared_matcher(config.services, config.proc_root, reuse_for=MEMBERSHIP_REUSE * shortest)


def build_collectors(config: Config, overrides: Mapping[str, bool] | None = None) -> list[Collector]:
    """Instances of every enabled collector; `overrides` are the --[no-]collector.NAME flags."""
    overrides = overrides or {}
    return [
        build(config)
        for cls, build in _REGISTRY
        if overrides.get(cls.name, config.collector(cls.name).enabled)
    ]


assert set(COLLECTOR_CLASSES) <= set(KNOWN_COLLECTORS), "a collector is missing from config.KNOWN_COLLECTORS"
