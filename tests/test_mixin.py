"""`make mixin` as CI sees it: every generated file is committed as generated, and nothing else
sits where only generated files belong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mixin.__main__ as generate

from .conftest import REPO


def test_committed_files_are_what_the_mixin_generates() -> None:
    run = subprocess.run([sys.executable, "-m", "mixin", "--check"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_a_file_the_code_no_longer_generates_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dashboards").mkdir()
    (tmp_path / "dashboards" / "autoglm-chain.json").write_text("{}")
    (tmp_path / "dashboards" / "autoglm-removed.json").write_text("{}")
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    files = {"dashboards/autoglm-chain.json": "{}"}
    assert generate.leftovers(files) == ["dashboards/autoglm-removed.json"]
    assert generate.drifted(files) == []
