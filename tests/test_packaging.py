"""The package as pip installs it: every subpackage of exporter/ is in the wheel."""

from __future__ import annotations

import tomllib

from .conftest import REPO


def test_every_subpackage_is_listed_for_setuptools() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "autoglm_exporter" + "".join(f".{part}" for part in init.parent.relative_to(REPO / "exporter").parts)
        for init in (REPO / "exporter").rglob("__init__.py")
    }
    assert found == listed
