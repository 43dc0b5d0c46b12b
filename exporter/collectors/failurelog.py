"""Logging a dependency going down and coming back once, not on every 10 s run."""

from __future__ import annotations

import logging


class FailureLog:
    def __init__(self, logger: logging.Logger, label: str, down: str, up: str) -> None:
        self.logger = logger
        self.label = label  # the extra field that names the instance, e.g. "redis"
        self.down = down
        self.up = up
        self._reasons: dict[str, str] = {}

    def failed(self, name: str, reason: str, message: str) -> None:
        """Warn when `name` starts failing or fails for another reason than last time."""
        if self._reasons.get(name) != reason:
            self.logger.warning(
                self.down, extra={self.label: name, "reason": reason, "error": message}, stacklevel=2
            )
            self._reasons[name] = reason

    def ok(self, name: str) -> None:
        if self._reasons.pop(name, None) is not None:
            self.logger.info(self.up, extra={self.label: name}, stacklevel=2)

    def adopt(self, previous: FailureLog, names: set[str]) -> None:
        """Remember what `previous` logged of `names` (a reload): a failure goes on unlogged."""
        self._reasons.update({name: previous._reasons[name] for name in names if name in previous._reasons})
