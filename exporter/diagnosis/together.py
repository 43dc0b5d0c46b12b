"""A fault clears as one: its cause, its other side and the symptom users met.

One fault is often seen by several collectors: a dead process by the process reading (process
missing) and by the user's probe (refused), Redis down by the Redis reading and by the probe of
the service that needs it (HTTP 500). Each link's clear waits for `confirm_readings` readings of
its own collector, so on the way back whichever cleared last was named alone for a moment, a cause
nobody has any more (the fault matrix saw `service/process_missing` after a killed service came
back, `client/http_error` after a taken port was freed or Redis came back).

So once a chain's cause has cleared, the links of that chain that their own collector has since
seen fixed clear with it: the users' side (the probe's links) and the links about the cause's own
subject (the other side of the same thing). A link still failing at its latest reading stays, and
clears as soon as its collector sees it fixed. While the cause is seen fixed but not yet cleared,
the probe is read again soon, so the users' side has looked again by then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .model import Change, Link
from .tracker import LinkTracker

USERS_SIDE = ("client", "network")

Holds = Callable[[str, Link], bool]  # does this chain (a service) hold this link


class ClearTogether:
    def __init__(self) -> None:
        # chain -> the subjects of causes that cleared while links of the chain were still believed
        self._cleared: dict[str, set[str]] = {}

    def clear(self, tracker: LinkTracker, causes: Mapping[str, Link], holds: Holds) -> list[Change]:
        """After an update: `causes` are the links each chain named before it."""
        believed = {b.link.name for b in tracker.believed()}
        for chain, cause in causes.items():
            if cause.name not in believed:
                self._cleared.setdefault(chain, set()).add(cause.subject or "")
        changes: list[Change] = []
        for chain, subjects in list(self._cleared.items()):
            for link in tracker.clearing():
                if holds(chain, link) and self._with_cause(link, subjects):
                    changes += tracker.believe_now(link.name)
            left = [b.link for b in tracker.believed() if holds(chain, b.link)]
            if not any(self._with_cause(link, subjects) for link in left):
                del self._cleared[chain]
        return changes

    @staticmethod
    def _with_cause(link: Link, subjects: set[str]) -> bool:
        return link.layer in USERS_SIDE or (link.subject or "") in subjects

    @staticmethod
    def read_again(tracker: LinkTracker, causes: Mapping[str, Link]) -> set[str]:
        """The probe, while a chain's cause is seen fixed but not cleared yet."""
        fixed = {link.name for link in tracker.clearing()}
        return {"probe"} if any(cause.name in fixed for cause in causes.values()) else set()
