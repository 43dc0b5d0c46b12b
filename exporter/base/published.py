"""What the store holds right after a publish: a leaf, so the deriver reads it without importing the store."""

from __future__ import annotations

from dataclasses import dataclass

from .health import CollectorHealth


@dataclass(frozen=True)
class Published:
    """What the store holds right after a publish: copies, safe to read in any thread."""

    facts: dict[str, object]  # collector name -> the facts of its latest successful run
    observed_at: dict[str, float]  # collector name -> when its latest run (failed too) finished
    health: dict[str, CollectorHealth]
    publisher: str | None  # the collector that just published; None: something else changed
