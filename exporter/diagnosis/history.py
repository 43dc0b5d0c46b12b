"""The incident timeline: which link broke first, what followed, what the verdict named, when it cleared."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from .model import Change

HISTORY_SIZE = 200  # changes kept, oldest dropped first: a day of a flapping link is not a leak


class History:
    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self._lock = threading.Lock()
        self._changes: deque[Change] = deque(maxlen=size)

    def extend(self, changes: Iterable[Change]) -> None:
        with self._lock:
            self._changes.extend(changes)

    def changes(self) -> tuple[Change, ...]:
        """Oldest first."""
        with self._lock:
            return tuple(self._changes)
