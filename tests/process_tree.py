"""Real process trees for the worker tests: tests/worker_tree.py started, described and cleaned up."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from autoglm_exporter.config import ProcessMatch, ServiceConfig

from .support import wait_until

TREE = Path(__file__).with_name("worker_tree.py")


@dataclass
class Tree:
    tag: str
    parent: subprocess.Popen[bytes]
    child: int
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> str | None:
        """The child's state letter; None once it is gone."""
        with contextlib.suppress(FileNotFoundError):
            return Path(f"/proc/{self.child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return None

    def stop_child(self) -> None:
        os.kill(self.child, signal.SIGSTOP)
        wait_until(lambda: self.state() == "T")

    def service(self) -> ServiceConfig:
        # The built-in defaults' shape: the API server by its command line or its port.
        return ServiceConfig(
            "engine", ProcessMatch(cmdline=f"worker_tree\\.py {self.tag}", port=self.port), port=self.port
        )


@contextlib.contextmanager
def process_trees() -> Iterator[Callable[..., Tree]]:
    """A function that starts a tree (worker_tree.py's flags as arguments); every tree it started
    is killed on the way out, a stopped child too."""
    started: list[Tree] = []

    def start(*flags: str) -> Tree:
        tag = f"tree-{uuid.uuid4().hex[:10]}"
        parent = subprocess.Popen([sys.executable, str(TREE), tag, *flags], stdout=subprocess.PIPE)
        assert parent.stdout is not None
        ready = re.fullmatch(rb"ready pid=(\d+) child=(\d+) port=(\d+)\n", parent.stdout.readline())
        assert ready, "worker_tree.py did not start"
        started.append(Tree(tag, parent, int(ready[2]), int(ready[3])))
        return started[-1]

    try:
        yield start
    finally:
        for tree in started:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(tree.child, sig)
            tree.parent.kill()
            tree.parent.wait(5)
            assert tree.parent.stdout is not None
            tree.parent.stdout.close()
