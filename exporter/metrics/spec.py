"""Declared metrics: one MetricSpec per family, so the code and the metrics reference agree.

Collectors build their families from these specs; the README's metrics reference is generated
from the same list (see exporter/commands/metricsdoc.py) and a test fails when the two drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

Kind = Literal["gauge", "counter", "info", "histogram"]


class Family(Protocol):
    """The part of prometheus_client's *MetricFamily classes collectors use."""

    name: str

    def add_metric(self, labels: Any, value: Any, timestamp: Any = None) -> None: ...


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as exposed, without the _total / _info suffix that prometheus_client adds
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()

    @property
    def exposed_name(self) -> str:
        suffix = {"counter": "_total", "info": "_info", "gauge": "", "histogram": ""}[self.kind]
        return self.name + suffix

    def family(self) -> Family:
        """A fresh, empty family: collectors build new families every cycle, never mutate old ones."""
        labels = list(self.labels)
        family: Metric
        if self.kind == "counter":
            family = CounterMetricFamily(self.name, self.help, labels=labels)
        elif self.kind == "info":
            family = InfoMetricFamily(self.name, self.help, labels=labels)
        elif self.kind == "histogram":
            # add_metric(labels, [(upper bound, cumulative count), ...], sum)
            family = HistogramMetricFamily(self.name, self.help, labels=labels)
        else:
            family = GaugeMetricFamily(self.name, self.help, labels=labels)
        return cast(Family, family)

    def single(self, value: float) -> Family:
        """A family holding one unlabelled sample."""
        family = self.family()
        family.add_metric([], value)
        return family


class Families:
    """One fresh family per spec, filled sample by sample. A value of None means unknown: it adds no
    sample, so an unknown reading is an absent series, never a made-up 0."""

    def __init__(self, specs: Iterable[MetricSpec]) -> None:
        self._families = {spec.name: spec.family() for spec in specs}

    def add(self, spec: MetricSpec, labels: list[str], value: Any) -> None:
        if value is not None:
            self._families[spec.name].add_metric(labels, value)

    def list(self) -> list[Family]:
        return list(self._families.values())


def gauge(name: str, help_text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "gauge", help_text, tuple(labels))


def counter(name: str, help_text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "counter", help_text, tuple(labels))


def info(name: str, help_text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "info", help_text, tuple(labels))


def histogram(name: str, help_text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "histogram", help_text, tuple(labels))
