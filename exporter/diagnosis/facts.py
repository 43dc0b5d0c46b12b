"""The facts the verdict reads, typed: each collector's declared facts type (exporter/facts/),
gathered in one record by collector name.

A field per collector that declares facts (config/collectors.py), named and typed as declared
(tests/test_declared_collectors.py checks it), and the stack captures' own; `Facts.of` reads the
store's facts by those names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from ..facts.container import ContainerFacts
from ..facts.engine import EngineFacts
from ..facts.environment import EnvironmentFacts
from ..facts.exporter import ExporterFacts
from ..facts.forensics import ForensicsFacts
from ..facts.gpu import GpuFacts
from ..facts.inflight import InFlightFacts
from ..facts.logs import LogsFacts
from ..facts.probe import ProbeFacts
from ..facts.process import ProcessFacts, ServiceFacts
from ..facts.redis import RedisFacts
from ..facts.system import SystemFacts


@dataclass(frozen=True)
class Facts:
    """The latest facts of every collector (None: disabled, failed, or not run yet)."""

    system: SystemFacts | None = None
    process: ProcessFacts | None = None
    container: ContainerFacts | None = None
    probe: ProbeFacts | None = None
    inflight: InFlightFacts | None = None
    redis: RedisFacts | None = None
    engine: EngineFacts | None = None
    logs: LogsFacts | None = None
    gpu: GpuFacts | None = None
    environment: EnvironmentFacts | None = None
    exporter: ExporterFacts | None = None
    forensics: ForensicsFacts | None = None

    @classmethod
    def of(cls, facts: Mapping[str, object]) -> Facts:
        """The store's facts by collector name (forensics: the stack captures' evidence). The
        runner refuses a Result whose facts are not of the declared type, so none arrives here
        as another."""
        return cls(**{name: facts.get(name) for name in _FIELDS})  # type: ignore[arg-type]

    @property
    def services(self) -> Mapping[str, ServiceFacts]:
        """The one membership result of this cycle: each configured service's processes."""
        return self.process.services if self.process is not None else {}


_FIELDS = tuple(field.name for field in fields(Facts))
