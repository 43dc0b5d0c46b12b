"""A fake /proc tree for the GPU joins: cmdline, stat (for the parent pid), environ, maps and the
files a process sees under /proc/PID/root."""

from __future__ import annotations

import os
import stat as stat_module
import sys
from collections.abc import Sequence
from pathlib import Path

from . import nvidia_smi

NVIDIA_SMI_SCRIPT = Path(nvidia_smi.__file__).resolve()


class FakeProc:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> str:
        return str(self.root)

    def add(
        self,
        pid: int,
        cmdline: list[str],
        ppid: int = 1,
        environ: dict[str, str] | None = None,
        maps: Sequence[str] = (),
        files: dict[str, str] | None = None,
        environ_mode: int | None = None,
    ) -> Path:
        directory = self.root / str(pid)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cmdline").write_bytes(b"\0".join(part.encode() for part in cmdline) + b"\0")
        comm = os.path.basename(cmdline[0])[:15] if cmdline else "kworker"
        rest = ["S", str(ppid)] + ["0"] * 48
        rest[17] = "1"  # threads
        rest[19] = "100"  # start time
        (directory / "stat").write_text(f"{pid} ({comm}) {' '.join(rest)}\n")
        env = environ or {}
        (directory / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))
        if environ_mode is not None:
            os.chmod(directory / "environ", environ_mode)
        lines = []
        for number, path in enumerate(maps):
            start = 0x7F0000000000 + number * 0x1000
            lines.append(f"{start:x}-{start + 0x1000:x} r-xp 00000000 08:01 {1000 + number} {' ' * 20}{path}")
        lines.append("7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]")
        (directory / "maps").write_text("\n".join(lines) + "\n")
        for path, content in (files or {}).items():
            target = directory / "root" / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        return directory


def fake_nvidia_smi(directory: Path, scenario: str) -> str:
    """An executable `nvidia-smi` in `directory` that runs the fake with `scenario`."""
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "nvidia-smi"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{NVIDIA_SMI_SCRIPT}" {scenario} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat_module.S_IXUSR | stat_module.S_IXGRP | stat_module.S_IXOTH)
    return str(wrapper)
