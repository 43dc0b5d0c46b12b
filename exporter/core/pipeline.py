"""What happens to every published result, wired once for the daemon, doctor and tests.

    collectors ─► Store ─► observers (the forensics trigger) ─► deriver (the verdict, start-up
                                                               times, the captures' metrics)

The daemon, the golden exposition test and anything else that wants the daemon's exact
behaviour build it here, so a change to the wiring shows everywhere at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..base.published import Published
from ..config import Config
from ..diagnosis import Diagnoser
from ..diagnosis.startup import StartupTracker
from ..metrics.spec import Family
from .hangwatch import HangWatch
from .store import Deriver, Store


@dataclass(frozen=True)
class Pipeline:
    store: Store
    hangwatch: HangWatch
    diagnoser: Diagnoser

    @classmethod
    def build(cls, config: Config) -> Pipeline:
        stores: list[Store] = []  # the capture thread touches the store made just below
        hangwatch = HangWatch(config.forensics, on_change=lambda: stores[0].touch())
        diagnoser = Diagnoser(config)
        # The forensics trigger observes every publish; the verdict is derived right after it.
        store = Store(chain_deriver(hangwatch, diagnoser), observers=(hangwatch.observe,))
        stores.append(store)
        return cls(store, hangwatch, diagnoser)


def chain_deriver(hangwatch: HangWatch, diagnoser: Diagnoser) -> Deriver:
    """What the store derives after every publish: the verdict (with the stack captures' evidence),
    start-up times, and the captures' metrics."""
    tracker = StartupTracker()

    def derive_all(published: Published) -> tuple[list[Family], object]:
        facts = {**published.facts, "forensics": hangwatch.facts()}
        families, diagnosis = diagnoser.derive(replace(published, facts=facts))
        return families + tracker.observe(facts) + hangwatch.families(), diagnosis

    return derive_all
