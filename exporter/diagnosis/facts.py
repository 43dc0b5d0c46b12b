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
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..collectors.container import ContainerFacts
    from ..collectors.engine import EngineFacts
    from ..collectors.environment import EnvironmentFacts
    from ..collectors.gpu.collector import GpuFacts
    from ..collectors.logs import LogsFacts
    from ..collectors.probe import ProbeFacts
    from ..collectors.process import ProcessFacts, ServiceFacts
    from ..collectors.redis import RedisFacts
    from ..collectors.system import SystemFacts
    from ..forensics.hangwatch import ForensicsFacts


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
        """The store's facts by collector name (forensics: the stack captures' evidence). Each
        field is named as the collector declared (config/collectors.py) and typed as its declared
        facts type (tests/test_declared_collectors.py checks both); the runner refuses a Result
        whose facts are not of that type, so none arrives here as another."""
        return cls(**{name: facts.get(name) for name in _FIELDS})  # type: ignore[arg-type]

    @property
    def services(self) -> Mapping[str, ServiceFacts]:
        """The one membership result of this cycle: each configured service's processes."""
        return self.process.services if self.process is not None else {}


_FIELDS = tuple(field.name for field in fields(Facts))
