"""What every collector is: a thing that reads the world once and returns a Result.

A collector knows nothing of HTTP, the scheduler or other collectors. It may keep state between
runs (previous counters for rates, process identities for restarts): the runner never runs the
same collector twice at once.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..core.health import ERROR_KINDS as ERROR_KINDS
from ..metrics.spec import Family, MetricSpec


class CollectorError(Exception):
    """A failure the collector understood: it says which bounded kind it is."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown collector error kind {kind!r}")
        super().__init__(message)
        self.kind = kind


@dataclass
class Result:
    """One finished run: the metric families to serve and the typed facts the diagnosis reads."""

    families: list[Family] = field(default_factory=list)
    facts: Any = None


class Collector(abc.ABC):
    name: ClassVar[str]
    metrics: ClassVar[tuple[MetricSpec, ...]]
    # What the collector was built from: a reload keeps an instance (and its state, such as
    # restart counts) when its settings did not change.
    settings: tuple[Any, ...] = ()

    @abc.abstractmethod
    def collect(self) -> Result:
        """Read the world once. Raise CollectorError (or anything) on failure."""
