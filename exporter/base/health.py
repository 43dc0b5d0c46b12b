"""A collector's health as the store keeps it: a leaf module, so the diagnosis, the status page
and the store can all name the record without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field

# The bounded set of reasons a collector run can fail, used as the `kind` label of
# autoglm_exporter_collector_errors_total. Every kind exists from the first scrape.
ERROR_KINDS = ("timeout", "skipped_stuck", "os_error", "parse_error", "internal")


@dataclass
class CollectorHealth:
    runs: int = 0  # finished runs, failed ones too: each is one reading of the collector
    success: bool = False
    duration: float = 0.0
    last_success: float = 0.0
    stuck: bool = False  # a run passed its deadline and its thread has not returned yet
    last_error: str | None = None
    last_error_kind: str | None = None  # one of ERROR_KINDS while the last run failed
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
