"""The verdict over time, derived once per publish (never on a scrape).

Each publish: new readings feed the trends, every link is judged from the facts, the tracker
decides which states it believes (hysteresis, onsets), each chain picks its cause among its
believed broken links, and what changed goes into the history. A broken link that says more
about the symptom a chain names is believed at once (client/not_answering -> stall/threads_blocked);
everything else waits for `diagnosis.confirm_readings` readings of its own collector.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from ..base.published import Published
from ..config import Config
from ..metrics.spec import Family
from .chain import chain_verdict
from .chains import Chains, chains_of
from .exposition import verdict_families
from .facts import Facts
from .history import History
from .links import all_links
from .model import ChainVerdict, Change, Diagnosis, Link
from .ranking import pick, refines
from .service import recent_errors
from .together import ClearTogether
from .tracker import LinkTracker
from .trends import Trends

_NOT_YET = ("",)  # a chain's verdict before the first derivation


class Diagnoser:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.started_at = clock()
        self._lock = threading.Lock()
        self._tracker = LinkTracker()
        self._together = ClearTogether()
        self._trends = Trends()
        self._history = History()
        self._named: dict[str, tuple[str, ...] | None] = {}  # chain -> (layer, reason, link) it names
        self._healthy_since: dict[str, float] = {}
        self._on_unconfirmed: Callable[[set[str]], None] = lambda sources: None
        self.reconfigure(config)

    def when_unconfirmed(self, callback: Callable[[set[str]], None]) -> None:
        """Call `callback` after each derivation with the collectors whose new state is not believed
        yet (the daemon reads some of them again soon instead of a whole interval later). It runs
        in the publisher's thread: it must only schedule."""
        self._on_unconfirmed = callback

    def reconfigure(self, config: Config) -> None:
        with self._lock:
            self._chains: Chains = chains_of(config)
            self._confirm = config.diagnosis.confirm_readings
            self._hang_after = config.forensics.hang_after
            self._trends.restart_young = config.diagnosis.restart_loop_young
            self._trends.restart_window = config.diagnosis.restart_loop_window

    def collectors_replaced(self, readings: Mapping[str, int]) -> None:
        """A reload replaced these collectors (name -> readings so far): what they saw was about the
        old settings, so each one's next reading decides the states it set."""
        with self._lock:
            self._tracker.reexamine(readings)

    def derive(self, published: Published) -> tuple[list[Family], Diagnosis]:
        with self._lock:
            diagnosis = self._diagnose(published)
        return verdict_families(diagnosis), diagnosis

    def _diagnose(self, published: Published) -> Diagnosis:
        now = self._clock()
        facts = Facts.of(published.facts)
        readings = {name: health.runs for name, health in published.health.items()}
        self._trends.update(facts, readings, published.observed_at)
        links = all_links(facts, published.health, now, published.observed_at, self._trends, self._hang_after)
        causes = self._causes()
        changes = self._tracker.update(links, readings, published.observed_at, now, self._confirm)
        changes += self._together.clear(self._tracker, causes, self._chains.holds)
        read_again = self._tracker.unconfirmed_sources() | self._together.read_again(self._tracker, causes)
        self._on_unconfirmed(read_again)
        for service in self._chains.members:
            changes += self._sharpen(service)
        chains = []
        for service in self._chains.members:
            chain = chain_verdict(
                service,
                self._chains,
                self._tracker.believed(),
                facts.environment,
                self._healthy_since.get(service),
            )
            chain, change = self._note(chain, now)
            chains.append(chain)
            changes += change
        self._history.extend(changes)
        return Diagnosis(
            links,
            tuple(chains),
            recent_errors(facts.logs),
            self._history.changes(),
            tuple((b.link.name, b.since) for b in self._tracker.believed()),
            one_shot=False,
            started_at=self.started_at,
        )

    def _causes(self) -> dict[str, Link]:
        """The link each chain names now, by chain."""
        believed = {b.link.name: b.link for b in self._tracker.believed()}
        named = {chain: n[2] for chain, n in self._named.items() if n is not None and len(n) == 3}
        return {chain: believed[name] for chain, name in named.items() if name in believed}

    def _sharpen(self, service: str) -> list[Change]:
        """Believe at once what says more about the symptom this chain names."""
        changes: list[Change] = []
        for _ in range(len(self._tracker.pending_broken())):
            mine = [b for b in self._tracker.believed() if self._chains.holds(service, b.link)]
            current = pick(mine)
            if current is None:
                break
            sharper = next(
                (
                    link
                    for link in self._tracker.pending_broken()
                    if self._chains.holds(service, link) and refines(link, current)
                ),
                None,
            )
            if sharper is None:
                break
            changes += self._tracker.believe_now(sharper.name)
        return changes

    def _note(self, chain: ChainVerdict, now: float) -> tuple[ChainVerdict, list[Change]]:
        """Remember what the chain names; a change goes into the history."""
        verdict = chain.verdict
        named = (verdict.layer, verdict.reason, verdict.name) if verdict is not None else None
        before = self._named.get(chain.service, _NOT_YET)
        if named == before:
            return chain, []
        self._named[chain.service] = named
        if verdict is None:
            if before is _NOT_YET:
                return chain, []  # healthy from the start: nothing happened
            self._healthy_since[chain.service] = now
            chain = replace(chain, since=now)
            return chain, [Change(now, "verdict", chain.service, None, None, "healthy: every link answers")]
        self._healthy_since.pop(chain.service, None)
        summary = f"{verdict.name}: {verdict.summary}"
        return chain, [Change(now, "verdict", chain.service, verdict.layer, verdict.reason, summary)]
