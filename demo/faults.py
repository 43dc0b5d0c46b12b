"""The fault a service is told to have, and the waits that make it behave that way.

One FaultState per process, shared by every handler thread. A handler asks it what to do
(`current()`), waits while a blocking fault lasts (`wait_while`) or for a slow fault's seconds
(`pause`); setting another fault wakes every waiter, so clearing a hang, a stall or a slow fault
takes effect at once. Stopping the process does not wake them: a hung request stays hung until the process is
gone (its thread is a daemon), rather than being served half-way through a shutdown.
A fault in `sticky` (the deadlock) cannot be cleared: the threads it stuck never come back, only a
restart helps, and the state says so instead of pretending otherwise.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

DEFAULT_SLOW_SECONDS = 2.0
MAX_SECONDS = 3600.0


class FaultError(Exception):
    """A fault request that cannot be honoured; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.details = details


@dataclass(frozen=True)
class Fault:
    name: str
    seconds: float  # the slow fault's delay per request, 0 for the others
    since: float  # time.time() when it was set


class FaultState:
    def __init__(
        self, service: str, valid: tuple[str, ...], sticky: tuple[str, ...] = (), events: tuple[str, ...] = ()
    ) -> None:
        """`valid`: the faults this service has ("none" first); `events`: faults that happen once
        when requested (they leave the current fault as it is), `sticky`: faults that stay."""
        self.service = service
        self.valid = valid
        self.sticky = sticky
        self.events = events
        self._cond = threading.Condition()
        self._fault = Fault("none", 0.0, time.time())

    def current(self) -> Fault:
        with self._cond:
            return self._fault

    def set(self, name: Any, seconds: Any = None) -> Fault:
        """Validate and switch to the fault; FaultError when it is unknown, malformed or too late."""
        if not isinstance(name, str) or name not in self.valid:
            raise FaultError(400, f"unknown fault {name!r}", valid=list(self.valid))
        delay = _seconds(seconds) if name == "slow" else 0.0
        with self._cond:
            if self._fault.name in self.sticky:
                raise FaultError(
                    409,
                    f"the {self.service} is in fault {self._fault.name!r}, which only a restart of the "
                    "process clears",
                    restart_required=True,
                )
            if name in self.events:
                return self._fault
            self._fault = Fault(name, delay, time.time())
            self._cond.notify_all()
            return self._fault

    def wait_while(self, name: str, timeout: float | None = None) -> bool:
        """Block while the fault is `name`; True once it no longer is."""
        with self._cond:
            return self._cond.wait_for(lambda: self._fault.name != name, timeout)

    def pause(self, fault: Fault) -> None:
        """The slow fault's delay: `fault.seconds`, or less when another fault is set meanwhile."""
        with self._cond:
            self._cond.wait_for(lambda: self._fault is not fault, fault.seconds)

    def describe(self, fault: Fault | None = None) -> dict[str, Any]:
        fault = fault or self.current()
        return {
            "service": self.service,
            "fault": fault.name,
            "seconds": fault.seconds,
            "since": round(fault.since, 3),
            "restart_required": fault.name in self.sticky,
            "valid": list(self.valid),
        }


def _seconds(value: Any) -> float:
    if value is None:
        return DEFAULT_SLOW_SECONDS
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultError(400, "seconds must be a number")
    if not 0 <= value <= MAX_SECONDS:
        raise FaultError(400, f"seconds must be between 0 and {MAX_SECONDS:g}")
    return float(value)
