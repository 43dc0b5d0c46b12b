"""The README's metrics reference is generated from the code and must not drift from it."""

from __future__ import annotations

import subprocess
import sys

from autoglm_exporter.commands import metricsdoc

from .conftest import REPO


def test_readme_metrics_reference_matches_the_code() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "autoglm_exporter.commands.metricsdoc", "--check", str(REPO / "README.md")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_exposed_metric_is_documented(start_exporter) -> None:
    exporter = start_exporter()
    documented = metricsdoc.render()
    exposed = {line.split()[2] for line in exporter.get().text.splitlines() if line.startswith("# TYPE")}
    assert len(exposed) > 20
    missing = [name for name in sorted(exposed) if f"| `{name}` |" not in documented]
    assert missing == []


def test_the_check_fails_on_a_stale_section(tmp_path) -> None:
    stale = tmp_path / "README.md"
    stale.write_text(f"intro\n{metricsdoc.BEGIN}\nold table\n{metricsdoc.END}\n")
    assert metricsdoc.main(["--check", str(stale)]) == 1
    assert metricsdoc.main([str(stale)]) == 0
    assert metricsdoc.main(["--check", str(stale)]) == 0
