"""A collector is declared once (config/collectors.py, or `declare` from outside the package):
the config section, the registry, the daemon's schedule and the verdict's Facts all follow from
the declaration, and only the enabled collectors' modules are ever imported."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from autoglm_exporter.collectors import collector_names, declarations
from autoglm_exporter.collectors.base import Collector, Result
from autoglm_exporter.core.runner import CollectorRunner
from autoglm_exporter.core.store import Store
from autoglm_exporter.diagnosis.facts import Facts
from autoglm_exporter.diagnosis.model import Link

from .conftest import ExporterProcess, sample
from .support import REPO, free_port, start_logged, stop_process, wait_until

# The real exporter, with the test module that declares the `demo` collector imported first (as a
# plugin would be).
WITH_DEMO = "import tests.declared_demo; from autoglm_exporter.cli import main; raise SystemExit(main())"


def _only(*enabled: str) -> str:
    """A `collectors:` section that switches off every in-tree collector but `enabled`."""
    return "".join(f"  {name}: {{enabled: false}}\n" for name in collector_names() if name not in enabled)


def test_a_collector_declared_in_a_test_module_is_configured_scheduled_and_served(tmp_path: Path) -> None:
    counted = tmp_path / "counted.txt"
    counted.write_text("one\ntwo\n")
    config = tmp_path / "config.yml"
    config.write_text(f"collectors:\n  demo: {{interval: 200ms, path: {counted}}}\n" + _only())
    port = free_port()
    log = tmp_path / "exporter.log"
    command = [
        sys.executable,
        "-c",
        WITH_DEMO,
        f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    exporter = ExporterProcess(start_logged(command, log, cwd=REPO), port, log)
    try:

        def lines() -> float | None:
            assert exporter.process.poll() is None, f"exporter exited:\n{exporter.log()}"
            try:
                return sample(exporter.metrics(), "autoglm_demo_file_lines")
            except OSError:
                return None

        assert wait_until(lambda: lines() == 2.0, timeout=20)
        samples = exporter.metrics()
        assert sample(samples, "autoglm_exporter_collector_success", collector="demo") == 1.0
        assert (
            sample(samples, "autoglm_exporter_collector_success", collector="system") is None
        )  # switched off
        # Scheduled: a change of the file is read on the demo's own interval, not once.
        counted.write_text("one\ntwo\nthree\nfour\nfive\n")
        assert wait_until(lambda: lines() == 5.0, timeout=20)
    finally:
        stop_process(exporter.process)


def test_a_disabled_collectors_module_and_libraries_are_never_imported(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("collectors:\n" + _only("system", "process"))
    script = (
        "import json, sys\n"
        "from autoglm_exporter.collectors import build_collectors\n"
        "from autoglm_exporter.config import load_config\n"
        f"built = [c.name for c in build_collectors(load_config({str(config)!r}))]\n"
        "print(json.dumps({'built': built, 'modules': sorted(sys.modules)}))\n"
    )
    printed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert printed.returncode == 0, printed.stderr
    answer = json.loads(printed.stdout)
    assert answer["built"] == ["system", "process"]
    modules = set(answer["modules"])
    assert not modules & {"redis", "httpx", "pynvml"}
    others = {d.implementation.partition(":")[0] for d in declarations()} - {
        "autoglm_exporter.collectors.system",
        "autoglm_exporter.collectors.process",
    }
    assert not modules & others


def test_the_verdicts_facts_are_the_declared_collectors_facts() -> None:
    """Facts has one field per collector that declares facts (and the stack captures' own), each
    typed as the declared facts type: Facts.of reads them by those names."""
    declared = {d.name: d.facts_type() for d in declarations() if d.facts is not None}
    hints = typing.get_type_hints(Facts)
    assert set(hints) == set(declared) | {"forensics"}
    for name, facts_type in declared.items():
        assert hints[name] == facts_type | None, name
    published = {name: object() for name in declared}
    assert all(getattr(Facts.of(published), name) is published[name] for name in declared)


class _Counting(Collector):
    name = "counting"
    metrics = ()

    def collect(self) -> Result[str]:
        return Result([], "three")


def test_a_run_whose_facts_are_not_of_the_declared_type_fails_instead_of_reaching_the_verdict() -> None:
    store = Store()
    store.set_collectors(["counting"])
    collector = _Counting()
    collector.facts_type = int  # declared as int, hands a str
    assert not CollectorRunner(collector, store, timeout=10.0).run_once()
    health = store.health()["counting"]
    assert health.last_error_kind == "internal"
    assert "counting" not in store.facts()
    collector.facts_type = str
    assert CollectorRunner(collector, store, timeout=10.0).run_once()
    assert store.facts()["counting"] == "three"


def test_a_link_counts_only_a_declared_collectors_readings_and_awaits_only_what_it_declares() -> None:
    with pytest.raises(ValueError, match="'procss' is not a declared collector"):
        Link("process open-autoglm", "service", True, "up", source="procss")
    with pytest.raises(ValueError, match="system does not declare that it awaits probe"):
        Link("system", "resources", True, "fine", source="system", awaits="probe")
    assert Link("process x", "service", True, "up", source="process", awaits="probe").awaits == "probe"
