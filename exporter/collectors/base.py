"""What every collector is: a thing that reads the world once and returns a Result.

A collector knows nothing of HTTP, the scheduler or other collectors. It may keep state between
runs (previous counters for rates, process identities for restarts): the runner never runs the
same collector twice at once.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..base.health import ERROR_KINDS
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
    # A collector that reads several configured things (targets, instances, logs) names the
    # attribute that holds their configs (each with a .name) and the attributes that hold its state
    # of each (dicts keyed by the name, or objects with adopt(previous, names)). A reload that
    # changes some of them hands the state of the others to the new instance (adopt).
    items_attribute: ClassVar[str] = ""
    state_per_item: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def collect(self) -> Result:
        """Read the world once. Raise CollectorError (or anything) on failure."""

    def adopt(self, previous: Collector) -> None:
        """Take over `previous`'s state of every item whose config did not change (a reload that
        changed another item): its counters, consecutive failures and offsets go on, not from 0.
        Called on a new instance before its first run."""
        kept = self.unchanged_items(previous)
        for attribute in self.state_per_item:
            mine, theirs = getattr(self, attribute), getattr(previous, attribute)
            if isinstance(mine, dict):
                mine.update({name: theirs[name] for name in kept if name in theirs})
            else:
                mine.adopt(theirs, kept)

    def unchanged_items(self, previous: Collector) -> set[str]:
        """Names of the items configured alike in both, read in the same context (the collector's
        other settings, such as the /proc root, unchanged too)."""
        if type(previous) is not type(self) or not self.items_attribute:
            return set()
        before, now = previous.item_configs(), self.item_configs()
        return {name for name, config in now.items() if name in before and before[name] == config}

    def item_configs(self) -> dict[str, Any]:
        """Each item's name -> what its state depends on: its config and the other settings."""
        items = getattr(self, self.items_attribute)
        context = tuple(setting for setting in self.settings if setting is not items)
        return {item.name: (item, context) for item in items}
