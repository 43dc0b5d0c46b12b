"""Log lines: one per event, on stderr and (for the api) in the service's own log file.

The file is what the exporter's log collector follows, so it reads like a Python service's log:

    2025-11-25 13:42:01,123 INFO demo.api: demo api listening on http://127.0.0.1:8080 ...
    2025-11-25 13:42:07,456 ERROR demo.api: POST /inference 503 request 3f2a...: redis unreachable ...

Opened for append, flushed after every line (a follower must see a line as soon as it happens), and
newlines inside a message are escaped: one event is always one line.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What PyTorch raises when a CUDA allocation fails (torch >= 2.1 wording), as a service logs it.
CUDA_OOM_MESSAGE = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
    "of 79.15 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.08 GiB "
    "memory in use. Of the allocated memory 75.31 GiB is allocated by PyTorch, and 1.27 GiB is reserved "
    "by PyTorch but unallocated. If reserved but unallocated memory is large try setting "
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
)


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


def log_to_stderr(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_to_file(path: str, logger: logging.Logger) -> logging.FileHandler:
    """Append `logger`'s lines to `path` too (FileHandler flushes after each record); OSError when
    the file cannot be opened."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(OneLineFormatter(FORMAT))
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler
