"""Reading exceptions from client libraries (httpx, redis-py) the same way in every collector."""

from __future__ import annotations

import errno

MAX_MESSAGE = 200  # characters of an error message kept for facts, logs and pages


class ReasonedFailure(Exception):
    """A read that failed for a bounded `reason` (a label value of the collector's failures
    counter, a reason the verdict knows); the message says how, for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def refused(exc: BaseException) -> bool:
    """Whether a connection was refused somewhere down the exception's cause chain."""
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain is short; bounded anyway
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or getattr(seen, "errno", None) == errno.ECONNREFUSED:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def short_message(exc: BaseException) -> str:
    """The exception's message on one line, bounded; its type name when it has none."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:MAX_MESSAGE]
