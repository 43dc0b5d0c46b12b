"""What each link's state is believed to be, and since when: no flapping on one noisy reading.

A link's new state (broken for a reason, or not broken) is believed once it held for
`confirm_readings` readings of the link's own collector (`Link.source`): a publish of an
unrelated collector is not a reading of it, so two readings are two intervals of evidence. A link
that judged a window itself (`Link.held`) counts those readings already. The onset of a state is
when its collector first observed it (or when the link says the condition began); a state its
collector's first reading already saw began before the exporter started: no onset.

A link that changes state without a new reading of its own collector was explained again by
another collector's facts (a refusal, once the process reading shows no process, is a dead
process): the readings that saw it carry over. A link that `awaits` another collector is believed
once that collector has read since the state was first seen, or after one reading more than
`confirm_readings`, so one incident gets one verdict, not the side that happened to read first.

A reload that replaces a collector (its settings changed: a service moved, an engine's URL) makes
its earlier readings evidence about the old settings: each state that collector set is kept until
the new collector's first reading, which then decides it alone (cleared or kept at once), so the
verdict never names the old config's fault for an interval, nor goes healthy before a look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .model import Change, Link
from .ranking import Broken


@dataclass
class _State:
    source: str
    believed: Link | None  # the broken link the verdict uses; None: not broken
    since: float | None  # when the believed state began; None: before the exporter started
    pending: Link | None = None  # the newest sight of a state not believed yet (None: not broken)
    has_pending: bool = False
    count: int = 0  # readings the pending state held
    pending_since: float | None = None
    last_reading: tuple[str, int] | None = None
    # Each collector's readings when the pending state was first seen: has an awaited one read since?
    readings_then: Mapping[str, int] = field(default_factory=dict)
    # Its collector was replaced by a reload after this many readings: the next one decides alone.
    decide_after: int | None = None


def state_of(link: Link | None) -> str | None:
    return link.reason if link is not None and link.ok is False else None


def _began(link: Link | None, reading: tuple[str, int], observed_at: float) -> float | None:
    """When a state began: what the link knows, else when its collector saw it; None when the
    collector's first reading already saw it (it began before the exporter started)."""
    if link is not None and link.began_at is not None:
        return link.began_at
    return None if reading[1] == 1 else observed_at


class LinkTracker:
    def __init__(self) -> None:
        self._states: dict[str, _State] = {}
        self._derives = 0

    def update(
        self,
        links: Iterable[Link],
        readings: Mapping[str, int],
        observed_at: Mapping[str, float],
        now: float,
        confirm: int,
    ) -> list[Change]:
        """Take one derivation's links in; returns the links whose believed state changed."""
        self._derives += 1
        changes: list[Change] = []
        seen = set()
        for link in links:
            seen.add(link.name)
            changes += self._observe(link.name, link, link.source, readings, observed_at, now, confirm)
        for name in [name for name in self._states if name not in seen]:
            # Gone from the facts (its collector failed, the probe finished): not broken any more,
            # once that held as long as anything else.
            changes += self._observe(
                name, None, self._states[name].source, readings, observed_at, now, confirm
            )
        return changes

    def reexamine(self, replaced: Mapping[str, int]) -> None:
        """A reload replaced these collectors (name -> readings so far): their next reading decides
        each state they set, without waiting for `confirm_readings`."""
        for state in self._states.values():
            if state.source in replaced:
                state.decide_after = replaced[state.source]

    def believed(self) -> list[Broken]:
        return [Broken(s.believed, s.since) for s in self._states.values() if s.believed is not None]

    def unconfirmed_sources(self) -> set[str]:
        """The collectors that saw a state the tracker does not believe yet, and those such a state
        awaits: their next reading decides."""
        pending = [s for s in self._states.values() if s.has_pending]
        awaited = {s.pending.awaits for s in pending if s.pending is not None and s.pending.awaits}
        return {s.source for s in pending} | awaited

    def clearing(self) -> list[Link]:
        """Believed broken links that a reading of their own collector has since seen fixed."""
        fixed = [s for s in self._states.values() if s.has_pending and state_of(s.pending) is None]
        return [s.believed for s in fixed if s.believed is not None]

    def pending_broken(self) -> list[Link]:
        return [s.pending for s in self._states.values() if s.pending is not None and s.pending.ok is False]

    def believe_now(self, name: str) -> list[Change]:
        """Believe a pending state at once (it says more about the symptom the verdict names)."""
        state = self._states.get(name)
        if state is None or not state.has_pending:
            return []
        return self._believe(name, state, state.pending, state.pending_since)

    def _observe(
        self,
        name: str,
        link: Link | None,
        source: str,
        readings: Mapping[str, int],
        observed_at: Mapping[str, float],
        now: float,
        confirm: int,
    ) -> list[Change]:
        # A source that is not a collector counts every derivation as a reading (a fallback).
        reading = (source, readings[source]) if source in readings else ("", self._derives)
        observed = state_of(link)
        state = self._states.get(name)
        if state is None:
            if observed is None:
                return []  # not broken and never was: nothing to remember
            state = self._states[name] = _State(source, None, None)
        state.source = source
        decisive = state.decide_after is not None and reading[1] > state.decide_after
        if decisive:
            state.decide_after = None
        if observed == state_of(state.believed):
            state.has_pending, state.pending, state.count = False, None, 0
            if observed is None:
                del self._states[name]  # a blip that did not hold: nothing left to remember
            elif link is not None:
                state.believed = link  # the same state, its newest words ("no answer for 9 s so far")
            return []
        if not state.has_pending or observed != state_of(state.pending):
            explained_again = state.pending is not None and link is not None and reading == state.last_reading
            if not explained_again:
                state.count, state.last_reading = 0, None
                state.pending_since = _began(link, reading, observed_at.get(source, now))
                state.readings_then = dict(readings)
            state.has_pending = True
        state.pending = link
        if reading != state.last_reading:
            state.count += 1
            state.last_reading = reading
        state.count = max(state.count, link.held if link is not None else 0)
        needed = 1 if decisive else confirm
        if state.count >= needed + self._still_awaited(link, state, readings):
            return self._believe(name, state, link, state.pending_since)
        return []

    @staticmethod
    def _still_awaited(link: Link | None, state: _State, readings: Mapping[str, int]) -> int:
        """1 while the collector the link awaits has not read since the state was first seen."""
        if link is None or link.awaits is None or link.awaits not in readings:
            return 0
        return int(readings[link.awaits] <= state.readings_then.get(link.awaits, 0))

    def _believe(self, name: str, state: _State, link: Link | None, since: float | None) -> list[Change]:
        previous = state.believed
        link = link if state_of(link) is not None else None
        state.believed, state.since = link, since
        state.has_pending, state.pending, state.count = False, None, 0
        if link is None:
            del self._states[name]  # cleared: nothing left to remember
            assert previous is not None
            return [
                Change(since, "link", name, None, None, f"cleared ({previous.layer} / {previous.reason})")
            ]
        return [Change(since, "link", name, link.layer, link.reason, link.summary)]
