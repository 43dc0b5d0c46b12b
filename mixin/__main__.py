"""`python -m mixin` writes every generated file; `python -m mixin --check` lists the ones whose
committed copy differs from what the code generates (exit 1), for CI and the drift test."""

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each module has generated_files() -> {path relative to the repo root: content}.
GENERATORS = ("mixin.alerts", "mixin.dashboards", "mixin.kubernetes")


def generated_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for name in GENERATORS:
        files.update(importlib.import_module(name).generated_files())
    return files


def drifted(files: dict[str, str]) -> list[str]:
    return [
        path
        for path, content in sorted(files.items())
        if not (ROOT / path).is_file() or (ROOT / path).read_text() != content
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixin", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args(argv)
    files = generated_files()
    stale = drifted(files)
    if args.check:
        for path in stale:
            print(f"{path}: differs from what `make mixin` generates", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_text(files[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
