"""The collectors, one module each, and how a Config turns into instances of them.

What each collector is (name, section, facts, policies, code) is declared once, in
config/collectors.py; this registry builds the enabled ones from those declarations and imports
nothing else: a disabled collector's module (and its libraries) never loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING

from ..config import Config
from ..config.collectors import DECLARED, CollectorDeclaration

if TYPE_CHECKING:
    from ..linux.processes import ServiceMatcher
    from .base import Collector
    from .inflight import InFlightRegistry


class _ProbesInFlight:
    """The probes now waiting: the probe collector fills it, the inflight collector reads it. One
    for the process, not one per build: a reload keeps or replaces those two collectors each on
    its own settings, and they must still share it. Made when first asked for."""

    @cached_property
    def registry(self) -> InFlightRegistry:
        from .inflight import InFlightRegistry

        return InFlightRegistry()


_PROBES_IN_FLIGHT = _ProbesInFlight()


class _Shared:
    """What the collectors of one build share."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._matcher: ServiceMatcher | None = None

    @property
    def probes_in_flight(self) -> InFlightRegistry:
        return _PROBES_IN_FLIGHT.registry

    def matcher(self) -> ServiceMatcher:
        """The one ServiceMatcher of the collectors that ask for a service's processes: it hands
        out one membership per cycle of the quickest of them."""
        if self._matcher is None:
            from ..linux.processes import MEMBERSHIP_REUSE, shared_matcher

            config = self.config
            shortest = min(config.collector(d.name).interval for d in DECLARED if d.shares_service_matcher)
            self._matcher = shared_matcher(
                config.services, config.proc_root, reuse_for=MEMBERSHIP_REUSE * shortest
            )
        return self._matcher


def declarations() -> tuple[CollectorDeclaration, ...]:
    """Every declared collector, in the chain's order."""
    return tuple(DECLARED)


def collector_names() -> tuple[str, ...]:
    return tuple(declaration.name for declaration in DECLARED)


def enabled(config: Config, overrides: Mapping[str, bool] | None = None) -> list[CollectorDeclaration]:
    """The declarations of the collectors `config` runs; `overrides` are the --[no-]collector.NAME flags."""
    overrides = overrides or {}
    return [d for d in DECLARED if overrides.get(d.name, config.collector(d.name).enabled)]


def build_collectors(config: Config, overrides: Mapping[str, bool] | None = None) -> list[Collector]:
    """Instances of every enabled collector (their modules imported now, the others never)."""
    shared = _Shared(config)
    return [_build(declaration, config, shared) for declaration in enabled(config, overrides)]


def _build(declaration: CollectorDeclaration, config: Config, shared: _Shared) -> Collector:
    collector: Collector = declaration.build(declaration.load(), config, shared)
    collector.facts_type = declaration.facts_type()
    return collector
