"""The facts the verdict reads, typed: each collector's own record (exporter/facts/), gathered in one.

The verdict reads the records, never the collectors that gather them. The store hands facts over
by collector name; `Facts.of` names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from ..facts.container import ContainerFacts
from ..facts.engine import EngineFacts
from ..facts.environment import EnvironmentFacts
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
    forensics: ForensicsFacts | None = None

    @classmethod
    def of(cls, facts: Mapping[str, object]) -> Facts:
        """The store's facts by collector name (forensics: the stack captures' evidence)."""
        return cls(
            system=cast("SystemFacts | None", facts.get("system")),
            process=cast("ProcessFacts | None", facts.get("process")),
            container=cast("ContainerFacts | None", facts.get("container")),
            probe=cast("ProbeFacts | None", facts.get("probe")),
            inflight=cast("InFlightFacts | None", facts.get("inflight")),
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
