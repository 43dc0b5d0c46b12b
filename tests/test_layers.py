"""The packages of exporter/ stand in layers, and every import runs down them, never back up.

A lower package that imports a higher one ties the two together (the leaf types then live in the
wrong place, or the import hides behind TYPE_CHECKING); this test names each such import with its
file and line, so the rule holds as the code grows. A new package must be placed in LAYERS.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

PACKAGE = "autoglm_exporter"  # exporter/ installs under this name

# Bottom up. A package may import those of lower tiers only; packages of one tier import neither
# each other. The package root (`autoglm_exporter/__init__.py`: the version) counts as a leaf; the
# modules directly in exporter/ (cli.py, __main__.py) are the top, named "cli".
LAYERS: tuple[tuple[str, ...], ...] = (
    ("base", "metrics"),  # leaf records and constants; the metric spec every family is built from
    ("logs",),  # redaction, log following, URLs without credentials
    ("config",),
    ("linux",),  # readers of the machine: /proc, cgroups, sockets, processes, subprocesses
    ("forensics", "snapshot"),  # libraries over the machine: py-spy captures, environment snapshots
    ("facts",),  # what each collector hands to the verdict
    # Side by side: the collectors gather the facts, the diagnosis judges them; neither knows the other.
    ("collectors", "diagnosis"),
    ("web",),  # the HTTP side; it reads the store through web.server.StoreReader
    ("core",),  # store, runners, scheduler, the hang watch, the daemon that wires them to the web side
    ("commands",),
    ("cli",),
)
TIER = {package: tier for tier, packages in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str:
    """`autoglm_exporter.collectors.gpu.nvml` -> collectors; the root -> base; cli.py -> cli."""
    parts = module.split(".")
    if len(parts) == 1:
        return "base"
    return "cli" if parts[1] in ("cli", "__main__") else parts[1]


def module_name(root: Path, path: Path) -> tuple[str, bool]:
    parts = path.relative_to(root).with_suffix("").parts
    is_package = parts[-1] == "__init__"
    return ".".join((PACKAGE, *(parts[:-1] if is_package else parts))), is_package


def imported_modules(root: Path, path: Path) -> list[tuple[int, str]]:
    """Every project module the file imports (TYPE_CHECKING and function-level imports too)."""
    module, is_package = module_name(root, path)
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return [(line, target) for line, target in found if target.split(".")[0] == PACKAGE]


def violations(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        source = package_of(module_name(root, path)[0])
        for line, target in imported_modules(root, path):
            imported = package_of(target)
            if imported == source:
                continue
            where = f"{path.relative_to(root.parent)}:{line}"
            if source not in TIER or imported not in TIER:
                found.append(f"{where}: {source} -> {imported}: a package LAYERS does not place")
            elif TIER[imported] >= TIER[source]:
                found.append(f"{where}: {source} -> {imported} ({target}) runs up or across the layers")
    return found


def test_every_import_runs_down_the_layers() -> None:
    assert violations(REPO / "exporter") == []


def test_every_package_is_placed() -> None:
    packages = {path.name for path in (REPO / "exporter").iterdir() if (path / "__init__.py").exists()}
    assert packages - set(TIER) == set()


def test_an_import_back_up_is_named(tmp_path: Path) -> None:
    """The check itself: an import up, one across a tier and one of an unplaced package are reported."""
    root = tmp_path / "exporter"
    for package in ("base", "collectors", "diagnosis", "stray"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "base" / "leaf.py").write_text("from ..diagnosis import model\n")
    (root / "diagnosis" / "model.py").write_text(
        "from ..base import leaf\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from autoglm_exporter.collectors.gpu import GpuCollector\n"
    )
    (root / "stray" / "thing.py").write_text("import autoglm_exporter.base.leaf\n")
    assert violations(root) == [
        "exporter/base/leaf.py:1: base -> diagnosis (autoglm_exporter.diagnosis) runs up or across the layers",
        "exporter/diagnosis/model.py:4: diagnosis -> collectors (autoglm_exporter.collectors.gpu) runs up or "
        "across the layers",
        "exporter/stray/thing.py:1: stray -> base: a package LAYERS does not place",
    ]
