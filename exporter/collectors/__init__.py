"""The collectors, one module each, and how a Config turns into instances of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..config import KNOWN_COLLECTORS, Config
from .base import Collector
from .container import ContainerCollector
from .engine import EngineCollector
from .environment import EnvironmentCollector
from .gpu.collector import GpuCollector
from .inflight import InFlightCollector, InFlightRegistry
from .logs import LogsCollector
from .probe import ProbeCollector
from .process import ProcessCollector
from .redis import RedisCollector
from .system import SystemCollector

# Each collector with how to build it from the config and the registry of probes in flight (one
# per build: the probe collector fills it, the inflight collector reads it), in the chain's order
# (doctor prints it so).
Build = Callable[[Config, InFlightRegistry], Collector]
_REGISTRY: tuple[tuple[type[Collector], Build], ...] = (
    (SystemCollector, lambda config, _: SystemCollector(config.proc_root)),
    (ProcessCollector, lambda config, _: ProcessCollector(config.services, config.proc_root)),
    (
        ContainerCollector,
        lambda config, _: ContainerCollector(
            config.services, config.proc_root, f"{config.sys_root}/fs/cgroup"
        ),
    ),
    (ProbeCollector, lambda config, in_flight: ProbeCollector(config.targets, in_flight)),
    (InFlightCollector, lambda config, in_flight: InFlightCollector(config.targets, in_flight)),
    (RedisCollector, lambda config, _: RedisCollector(config.redis)),
    (EngineCollector, lambda config, _: EngineCollector(config.engines)),
    (LogsCollector, lambda config, _: LogsCollector(config.logs)),
    (GpuCollector, lambda config, _: GpuCollector(config.gpu, config.services, config.proc_root)),
    (
        EnvironmentCollector,
        lambda config, _: EnvironmentCollector(config.services, config.environment, config.proc_root),
    ),
)
COLLECTOR_CLASSES: dict[str, type[Collector]] = {cls.name: cls for cls, _ in _REGISTRY}


def build_collectors(config: Config, overrides: Mapping[str, bool] | None = None) -> list[Collector]:
    """Instances of every enabled collector; `overrides` are the --[no-]collector.NAME flags."""
    overrides = overrides or {}
    in_flight = InFlightRegistry()
    return [
        build(config, in_flight)
        for cls, build in _REGISTRY
        if overrides.get(cls.name, config.collector(cls.name).enabled)
    ]


assert set(COLLECTOR_CLASSES) <= set(KNOWN_COLLECTORS), "a collector is missing from config.KNOWN_COLLECTORS"
