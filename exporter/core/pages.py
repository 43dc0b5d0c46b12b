"""The /metrics page, rendered by the publisher, read by scrapes.

A scrape only reads bytes: every format a scraper asked for in the last PAGE_KEPT_SECONDS (text
or OpenMetrics, plain or gzip) is rendered again right after each publish, in the publishing
collector's thread. Only the first scrape of a format nobody asked for lately renders it, once
(one render at a time, so 200 scrapers arriving together do not render it 200 times). Between a
publish and the end of its render, a scrape gets the page of the publish before: never a wait.
"""

from __future__ import annotations

import functools
import gzip
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

PAGE_KEPT_SECONDS = 300.0  # a format no scraper asked for this long is no longer rendered ahead
MAX_FORMATS = 8  # (content type, gzip) pairs kept; Accept headers come from clients

Format = tuple[str, bool]  # (content type, gzip)


class Pages:
    def __init__(self, registry: CollectorRegistry, version: Callable[[], int]) -> None:
        self._registry = registry
        self._version = version
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._pages: dict[Format, tuple[int, bytes]] = {}
        self._asked: dict[Format, float] = {}

    def page(self, accept: str, compressed: bool) -> tuple[bytes, str]:
        """The page for this Accept header and its content type: bytes already rendered if any."""
        _, content_type = _negotiate(accept)
        key = (content_type, compressed)
        with self._lock:
            self._asked[key] = time.monotonic()
            if len(self._asked) > MAX_FORMATS:
                oldest = min(self._asked, key=self._asked.__getitem__)
                del self._asked[oldest]
                self._pages.pop(oldest, None)
            cached = self._pages.get(key)
        if cached is not None:
            return cached[1], content_type
        with self._render_lock:  # the first scrape of this format renders it; the others wait for it
            with self._lock:
                cached = self._pages.get(key)
            if cached is None:
                cached = self._render(accept, key)
        return cached[1], content_type

    def refresh(self) -> None:
        """Render every format asked for lately (after a publish, in the publisher's thread)."""
        now = time.monotonic()
        with self._lock:
            wanted = [key for key, at in self._asked.items() if now - at < PAGE_KEPT_SECONDS]
        with self._render_lock:
            for key in wanted:
                self._render(_ACCEPT[key[0]], key)

    def _render(self, accept: str, key: Format) -> tuple[int, bytes]:
        version = self._version()
        encoder, _ = _negotiate(accept)
        body = encoder(self._registry)
        if key[1]:
            body = gzip.compress(body, compresslevel=1)
        with self._lock:
            current = self._pages.get(key)
            if current is None or current[0] <= version:
                self._pages[key] = (version, body)
        return version, body


@functools.lru_cache(maxsize=32)
def _negotiate(accept: str) -> tuple[Callable[[CollectorRegistry], bytes], str]:
    """choose_encoder, remembered: Prometheus sends the same Accept header on every scrape."""
    encoder, content_type = choose_encoder(accept)
    _ACCEPT.setdefault(content_type, accept)
    return encoder, content_type


_ACCEPT: dict[str, str] = {}  # content type -> an Accept header that chooses it
