"""Every collector declared once: its name, its config section and defaults, the facts it hands to
the verdict, how the daemon treats its readings, and where its code lives.

The config model builds its `collectors:` section from these, the registry (collectors/__init__.py)
builds instances from them, the daemon schedules by them and the verdict's `Facts` is checked
against them. A declaration names its code by import path, so knowing a collector costs
nothing: only an enabled collector's module (and its third-party libraries: NVML, redis, httpx)
is ever imported; its facts type (a plain record of exporter/facts/) is named the same way. A
collector outside this list (a test's, a plugin's) is added with `config.declare`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic.dataclasses import dataclass as pydantic_dataclass

from .types import Boolean, Duration

if TYPE_CHECKING:
    from .model import Config

HOUR, DAY = 3600.0, 86400.0
Interval = Annotated[float, Duration(maximum=DAY)]
Timeout = Annotated[float, Duration(maximum=HOUR)]

ENVIRONMENT_INTERVAL = 300.0  # running each service's interpreter to list packages is not a 10 s job
ENVIRONMENT_TIMEOUT = 120.0
INFLIGHT_INTERVAL = 1.0  # how long the probes now waiting have waited: cheap, and a hang is news at once
# The service's processes are read twice per interval (never more often than this, unless the
# interval itself is shorter): a crash loop is two young deaths, each seen by a reading of its own,
# so at one reading per 10 s it was named 20 s late; /proc reads of the matched services are cheap.
PROCESS_MIN_INTERVAL = 1.0


@pydantic_dataclass(frozen=True, config={"extra": "forbid", "populate_by_name": True})
class CollectorSettings:
    """One collector's section; intervals and timeouts left out come from `global` (or the
    collector's own default, see Config.collector)."""

    enabled: Boolean = True
    interval: Interval | None = None
    timeout: Timeout | None = None


class Shared(Protocol):
    """What the collectors of one build share (made by the registry)."""

    def matcher(self) -> Any: ...  # the one ServiceMatcher of the collectors that share it

    @property
    def probes_in_flight(self) -> Any: ...  # the probes now waiting (probe fills, inflight reads)


def _global_interval(config: Config) -> float:
    return config.interval


def _global_timeout(config: Config) -> float:
    return config.timeout


def _process_interval(config: Config) -> float:
    return min(config.interval, max(config.interval / 2, PROCESS_MIN_INTERVAL))


@dataclass(frozen=True)
class CollectorDeclaration:
    name: str  # the collector's name: its config section, flags, metrics' `collector` label, facts key
    # "module:Class" of the Collector; imported only when the collector is built.
    implementation: str
    # Builds it from the config; receives the class `implementation` names (so declaring it
    # imports nothing) and what the collectors of this build share.
    build: Callable[[Any, Config, Shared], Any]
    # "module:Type" of its Result.facts, the verdict's input (exporter/facts/; None: it hands
    # none). By name: the facts stand above the config in the package's layers.
    facts: str | None = None
    section: type[CollectorSettings] = CollectorSettings  # its `collectors.NAME` section
    interval: Callable[[Config], float] = _global_interval  # when its section gives none
    timeout: Callable[[Config], float] = _global_timeout
    # A new state seen by it (or awaited from it) is read again seconds later instead of an
    # interval later: readings that are facts of the moment (a refusal, a process gone, the GPU
    # driver's own samples) or trends judged over time rather than by their count (the engine's
    # tokens), not averages over the interval itself (the machine's CPU).
    read_again_soon: bool = False
    # The collectors whose next reading may explain a state it sees (Link.awaits).
    awaits: tuple[str, ...] = ()
    # It asks which processes are a service's: the one ServiceMatcher of the cycle answers.
    shares_service_matcher: bool = False

    def load(self) -> Any:
        """The collector's class (imports its module)."""
        return _load(self.implementation)

    def facts_type(self) -> type | None:
        return _load(self.facts) if self.facts else None


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _probe_timeout(config: Config) -> float:
    # Probes wait up to their own timeouts; their collector's deadline must leave room for that.
    return max([config.timeout] + [target.timeout + 2.0 for target in config.targets])


_PACKAGE = "autoglm_exporter.collectors"
_FACTS = "autoglm_exporter.facts"

# In the chain's order (doctor prints it so, the flags are listed so).
DECLARED: list[CollectorDeclaration] = [
    CollectorDeclaration(
        "system",
        f"{_PACKAGE}.system:SystemCollector",
        lambda cls, config, shared: cls(config.proc_root),
        facts=f"{_FACTS}.system:SystemFacts",
    ),
    CollectorDeclaration(
        "process",
        f"{_PACKAGE}.process:ProcessCollector",
        lambda cls, config, shared: cls(config.services, config.proc_root, shared.matcher()),
        facts=f"{_FACTS}.process:ProcessFacts",
        interval=_process_interval,
        read_again_soon=True,
        awaits=("probe",),
        shares_service_matcher=True,
    ),
    CollectorDeclaration(
        "container",
        f"{_PACKAGE}.container:ContainerCollector",
        lambda cls, config, shared: cls(
            config.services, config.proc_root, f"{config.sys_root}/fs/cgroup", shared.matcher()
        ),
        facts=f"{_FACTS}.container:ContainerFacts",
        shares_service_matcher=True,
    ),
    CollectorDeclaration(
        "probe",
        f"{_PACKAGE}.probe:ProbeCollector",
        lambda cls, config, shared: cls(config.targets, shared.probes_in_flight),
        facts=f"{_FACTS}.probe:ProbeFacts",
        timeout=_probe_timeout,
        read_again_soon=True,
        awaits=("process",),
    ),
    CollectorDeclaration(
        "inflight",  # probes still waiting, read every second
        f"{_PACKAGE}.inflight:InFlightCollector",
        lambda cls, config, shared: cls(config.targets, shared.probes_in_flight, config.forensics.hang_after),
        facts=f"{_FACTS}.inflight:InFlightFacts",
        interval=lambda config: min(config.interval, INFLIGHT_INTERVAL),
        awaits=("engine",),
    ),
    CollectorDeclaration(
        "redis",
        f"{_PACKAGE}.redis:RedisCollector",
        lambda cls, config, shared: cls(config.redis),
        facts=f"{_FACTS}.redis:RedisFacts",
        read_again_soon=True,
    ),
    CollectorDeclaration(
        "engine",
        f"{_PACKAGE}.engine:EngineCollector",
        lambda cls, config, shared: cls(config.engines, config.collector("engine").interval),
        facts=f"{_FACTS}.engine:EngineFacts",
        # Its stall is judged over time (readings spanning two intervals), not by their count, so a
        # reading taken again is one more look: an engine down, or the flat tokens behind a
        # generation that hangs, are seen seconds later instead of an interval later.
        read_again_soon=True,
    ),
    CollectorDeclaration(
        "logs",
        f"{_PACKAGE}.logs:LogsCollector",
        lambda cls, config, shared: cls(config.logs),
        facts=f"{_FACTS}.logs:LogsFacts",
        read_again_soon=True,
    ),
    CollectorDeclaration(
        "gpu",
        f"{_PACKAGE}.gpu.collector:GpuCollector",
        lambda cls, config, shared: cls(
            config.gpu, config.services, config.proc_root, matcher=shared.matcher()
        ),
        facts=f"{_FACTS}.gpu:GpuFacts",
        timeout=lambda config: max(config.timeout, config.gpu.call_timeout + 2.0),
        # The GPU's state, events and utilisation are the driver's own samples, facts of the
        # moment: a hung nvidia-smi or a lost GPU is confirmed seconds later, not an interval.
        read_again_soon=True,
        shares_service_matcher=True,
    ),
    CollectorDeclaration(
        "environment",
        f"{_PACKAGE}.environment:EnvironmentCollector",
        lambda cls, config, shared: cls(
            config.services, config.environment, config.proc_root, shared.matcher()
        ),
        facts=f"{_FACTS}.environment:EnvironmentFacts",
        interval=lambda config: max(config.interval, ENVIRONMENT_INTERVAL),
        timeout=lambda config: ENVIRONMENT_TIMEOUT,
        shares_service_matcher=True,
    ),
    CollectorDeclaration(
        "exporter",  # the exporter's own process and configured chain
        f"{_PACKAGE}.exporter:ExporterCollector",
        lambda cls, config, shared: cls(_load(f"{_PACKAGE}.exporter:dependencies_of")(config)),
        facts=f"{_FACTS}.exporter:ExporterFacts",
    ),
]


def declared(name: str) -> CollectorDeclaration:
    """The declaration of the collector called `name` (KeyError: none is)."""
    for declaration in DECLARED:
        if declaration.name == name:
            return declaration
    raise KeyError(f"no collector is declared as {name!r}")
