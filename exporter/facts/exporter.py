"""What the exporter collector hands on: the exporter's own resources and the services' dependencies."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dependency:
    service: str
    kind: str  # redis | engine | service
    dependency: str


@dataclass(frozen=True)
class ExporterFacts:
    resident_bytes: int
    open_fds: int
    threads: int
    dependencies: tuple[Dependency, ...]
