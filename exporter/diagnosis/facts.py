"""The facts the verdict reads, typed: each collector's own dataclass, gathered in one record.

The fact types are imported for the type checker only: the collectors import the thresholds of
this package, so importing them here at run time would make a cycle. A renamed field still fails
mypy, which is the point. The store hands facts over by collector name; `Facts.of` names them.

The in-flight probes are described here by the shape the contract gives them (collector
`inflight`, facts `InFlightFacts`: per target its service, layer, start, wait so far and whether
it connected), so the verdict does not depend on how they are gathered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from ..facts.container import ContainerFacts
    from ..facts.engine import EngineFacts
    from ..facts.environment import EnvironmentFacts
    from ..facts.forensics import ForensicsFacts
    from ..facts.gpu import GpuFacts
    from ..facts.logs import LogsFacts
    from ..facts.probe import ProbeFacts
    from ..facts.process import ProcessFacts, ServiceFacts
    from ..facts.redis import RedisFacts
    from ..facts.system import SystemFacts


class InFlightProbe(Protocol):
    """A probe that has not finished yet: how long it has waited so far."""

    @property
    def target(self) -> str: ...
    @property
    def service(self) -> str | None: ...
    @property
    def layer(self) -> str: ...
    @property
    def started_at(self) -> float: ...  # seconds since the epoch
    @property
    def waited(self) -> float: ...  # seconds, when the facts were taken
    @property
    def connected(self) -> bool: ...  # the peer accepted the connection and has not answered


class InFlight(Protocol):
    @property
    def targets(self) -> Mapping[str, InFlightProbe]: ...  # only targets with a probe in flight


@dataclass(frozen=True)
class Facts:
    """The latest facts of every collector (None: disabled, failed, or not run yet)."""

    system: SystemFacts | None = None
    process: ProcessFacts | None = None
    container: ContainerFacts | None = None
    probe: ProbeFacts | None = None
    inflight: InFlight | None = None
    redis: RedisFacts | None = None
    engine: EngineFacts | None = None
    logs: LogsFacts | None = None
    gpu: GpuFacts | None = None
    environment: EnvironmentFacts | None = None
    forensics: ForensicsFacts | None = None

    @classmethod
    def of(cls, facts: Mapping[str, object]) -> Facts:
        """The store's facts by collector name (forensics: the stack captures' evidence)."""
        return cls(
            system=cast("SystemFacts | None", facts.get("system")),
            process=cast("ProcessFacts | None", facts.get("process")),
            container=cast("ContainerFacts | None", facts.get("container")),
            probe=cast("ProbeFacts | None", facts.get("probe")),
            inflight=cast("InFlight | None", facts.get("inflight")),
            redis=cast("RedisFacts | None", facts.get("redis")),
            engine=cast("EngineFacts | None", facts.get("engine")),
            logs=cast("LogsFacts | None", facts.get("logs")),
            gpu=cast("GpuFacts | None", facts.get("gpu")),
            environment=cast("EnvironmentFacts | None", facts.get("environment")),
            forensics=cast("ForensicsFacts | None", facts.get("forensics")),
        )

    @property
    def services(self) -> Mapping[str, ServiceFacts]:
        """The one membership result of this cycle: each configured service's processes."""
        return self.process.services if self.process is not None else {}
