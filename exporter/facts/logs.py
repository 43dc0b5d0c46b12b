"""What the logs collector hands to the verdict: each log's pattern matches."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LogMatch:
    timestamp: float  # when the line was read, seconds since the epoch
    pattern: str
    line: str  # redacted, at most MAX_MATCH_LINE characters


@dataclass(frozen=True)
class LogFacts:
    name: str
    path: str
    service: str | None
    present: bool
    error: str | None
    counts: dict[str, int]  # matched lines since start, by pattern
    new_matches: dict[str, int]  # matched lines in this run, by pattern
    recent: tuple[LogMatch, ...]  # the last RECENT_MATCHES matches, newest last


@dataclass(frozen=True)
class LogsFacts:
    logs: dict[str, LogFacts]
