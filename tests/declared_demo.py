"""A collector added the declared way, from outside the package: its section type, its facts, its
code and its one declaration, all in this module (tests/test_declared_collectors.py runs the
real exporter with this module imported first).

It counts the lines of the file its section names: `collectors: {demo: {path: FILE}}`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic.dataclasses import dataclass as pydantic_dataclass

from autoglm_exporter.collectors.base import Collector, CollectorError, Result
from autoglm_exporter.config import CollectorDeclaration, declare
from autoglm_exporter.config.collectors import CollectorSettings
from autoglm_exporter.config.types import Text
from autoglm_exporter.metrics.spec import gauge

LINES = gauge("autoglm_demo_file_lines", "Lines in the file the demo collector reads.")


@pydantic_dataclass(frozen=True, config={"extra": "forbid"})
class DemoSettings(CollectorSettings):
    path: Text = ""


@dataclass(frozen=True)
class DemoFacts:
    lines: int


class DemoCollector(Collector):
    name = "demo"
    metrics = (LINES,)

    def __init__(self, path: str) -> None:
        self.path = path
        self.settings = (path,)

    def collect(self) -> Result[DemoFacts]:
        try:
            with open(self.path, "rb") as handle:
                lines = handle.read().count(b"\n")
        except OSError as exc:
            raise CollectorError("os_error", f"{self.path}: {exc.strerror}") from exc
        return Result([LINES.single(lines)], DemoFacts(lines))


declare(
    CollectorDeclaration(
        "demo",
        f"{__name__}:DemoCollector",
        lambda cls, config, shared: cls(config.collectors.demo.path),
        facts=f"{__name__}:DemoFacts",
        section=DemoSettings,
        read_again_soon=True,
    )
)
