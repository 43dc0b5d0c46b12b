"""A fault of a service that both of its sides see clears as one.

A dead process, a closed port or a port another process holds is seen from two sides: the
service's own (the process collector: process missing, port not listening, port taken) and its
users' (the probe: refused, wrong port, an HTTP error from whoever holds the port). Each side's
clear waits for `confirm_readings` readings of its own collector, so on the way back the side
that cleared first left the other named alone for a moment: a cause nobody has any more (the
fault matrix saw `service/process_missing` after a killed service came back, `client/http_error`
after a taken port was freed). Here a side that its own collector has seen fixed clears at once
when the other side agrees, as good as a second reading: the service's side when its users' probe
answers, the users' side once the service's side was fixed. When the service's side is seen
fixed the probe is read again soon, so the users' side agrees (or not) in seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .model import SAME_FAULT, Change, Link
from .tracker import LinkTracker

# The service's own faults that its users meet directly: a refusal, or someone else answering.
USERS_MEET = frozenset({*SAME_FAULT, "port_taken"})
USERS_SIDE = ("client", "network")


def _service_side(link: Link) -> bool:
    return link.layer == "service" and link.reason in USERS_MEET


class ClearTogether:
    def __init__(self) -> None:
        self._fixed: set[str] = set()  # services whose own side was fixed while users' side was not yet

    @staticmethod
    def service_faults(tracker: LinkTracker) -> set[str]:
        """The services whose own side of such a fault is believed now."""
        return {b.link.subject for b in tracker.believed() if _service_side(b.link) and b.link.subject}

    def clear(self, tracker: LinkTracker, links: Sequence[Link], before: Iterable[str]) -> list[Change]:
        """After an update: clear each side its own collector saw fixed when the other side agrees.
        `before`: service_faults() before the update."""
        self._fixed |= set(before) - self.service_faults(tracker)
        answering = {link.subject for link in links if link.layer == "client" and link.ok is True}
        changes: list[Change] = []
        for link in tracker.clearing():
            if _service_side(link) and link.subject in answering:
                changes += tracker.believe_now(link.name)
                self._fixed.add(link.subject or "")
            elif link.layer in USERS_SIDE and link.subject in self._fixed:
                changes += tracker.believe_now(link.name)
        still_met = {b.link.subject for b in tracker.believed() if b.link.layer in USERS_SIDE}
        self._fixed &= still_met
        return changes

    @staticmethod
    def read_again(tracker: LinkTracker) -> set[str]:
        """The probe, while the service's own side of such a fault is seen fixed but not cleared."""
        return {"probe"} if any(_service_side(link) for link in tracker.clearing()) else set()
