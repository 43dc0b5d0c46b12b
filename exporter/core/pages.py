"""The /metrics page, rendered by the publisher, read by scrapes.

A scrape only reads bytes: every format a scraper asked for in the last PAGE_KEPT_SECONDS (text
or OpenMetrics, plain or gzip) is rendered again right after each publish, in the publishing
collector's thread. Only the first scrape of a format nobody asked for lately renders it, once
(one render at a time, so 200 scrapers arriving together do not render it 200 times). Between a
publish and the end of its render, a scrape gets the page of the publish before: never a wait.

A render costs what changed, not the whole page: the page is a sequence of parts (one per
collector's result, the verdict, the self-metrics), and a part the store marks as unchanged since
the last render keeps its text; in a part that changed, a family equal to the one of the same name
last time keeps its text too. Each format's text is made once per render and compressed from
there for gzip. A render holds the GIL the scrapes need, and collectors publish every few seconds
each: a whole-page render per publish was most of the exporter's CPU and its scrape tail latency.
"""

from __future__ import annotations

import functools
import gzip
import threading
import time
from array import array
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import cast

from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.samples import Sample

from ..metrics.spec import Family

PAGE_KEPT_SECONDS = 300.0  # a format no scraper asked for this long is no longer rendered ahead
MAX_FORMATS = 8  # (content type, gzip) pairs kept; Accept headers come from clients

Format = tuple[str, bool]  # (content type, gzip)
# Families served together and what identifies their content: the same key, the same families
# (so their text is kept from the last render); None: render them every time.
Part = tuple[Hashable | None, Sequence[Family]]
# What the store has now: its version and the parts of the page, in the page's order.
Snapshot = Callable[[], tuple[int, list[Part]]]
Encoder = Callable[["_Families"], bytes]


class Pages:
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()  # guards _texts too
        self._pages: dict[Format, tuple[int, bytes]] = {}
        self._asked: dict[Format, float] = {}
        self._texts: dict[str, _Texts] = {}  # content type -> the texts of its last render

    def page(self, accept: str, compressed: bool) -> tuple[bytes, str]:
        """The page for this Accept header and its content type: bytes already rendered if any."""
        content_type = _negotiate(accept)
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
                cached = self._render([key])[key]
        return cached[1], content_type

    def refresh(self) -> None:
        """Render every format asked for lately (after a publish, in the publisher's thread)."""
        now = time.monotonic()
        with self._lock:
            wanted = [key for key, at in self._asked.items() if now - at < PAGE_KEPT_SECONDS]
        with self._render_lock:
            self._render(wanted)
            for content_type in set(self._texts) - {content_type for content_type, _ in wanted}:
                del self._texts[content_type]  # nobody asks for it: its texts only hold memory

    def _render(self, formats: Iterable[Format]) -> dict[Format, tuple[int, bytes]]:
        """Render `formats` from one snapshot of the store (with the render lock held)."""
        version, parts = self._snapshot()
        texts: dict[str, bytes] = {}
        rendered = {}
        for content_type, compressed in formats:
            if content_type not in texts:
                if content_type not in self._texts:
                    self._texts[content_type] = _Texts(_ENCODERS[content_type])
                texts[content_type] = self._texts[content_type].page(parts)
            body = texts[content_type]
            if compressed:
                body = gzip.compress(body, compresslevel=1)
            rendered[(content_type, compressed)] = (version, body)
        with self._lock:
            for key, page in rendered.items():
                current = self._pages.get(key)
                if current is None or current[0] <= version:
                    self._pages[key] = page
        return rendered


class _Texts:
    """One format's texts from the last render: of each keyed part, and of each family by name."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self._trailer = _trailer(encoder)
        self._parts: dict[Hashable, tuple[bytes, tuple[str, ...]]] = {}  # key -> (text, family names)
        self._families: dict[str, tuple[Family, bytes, bytes]] = {}  # name -> (family, values, text)

    def page(self, parts: list[Part]) -> bytes:
        """The page's text: kept texts of unchanged parts and families, the others encoded."""
        parts_now: dict[Hashable, tuple[bytes, tuple[str, ...]]] = {}
        families_now: dict[str, tuple[Family, bytes, bytes]] = {}
        chunks = []
        for key, families in parts:
            kept = self._parts.get(key) if key is not None else None
            if kept is None:
                text = b"".join(self._family_text(family, families_now) for family in families)
                kept = (text, tuple(family.name for family in families))
            else:
                for name in kept[1]:  # still on the page: remember them for when the part changes
                    if name in self._families:
                        families_now[name] = self._families[name]
            if key is not None:
                parts_now[key] = kept
            chunks.append(kept[0])
        chunks.append(self._trailer)
        self._parts, self._families = parts_now, families_now  # what left the page is forgotten
        return b"".join(chunks)

    def _family_text(self, family: Family, families_now: dict[str, tuple[Family, bytes, bytes]]) -> bytes:
        values = _values(family)
        last = self._families.get(family.name)
        # The very same object may have been changed since: only an equal other one is the same.
        if (
            values is not None
            and last is not None
            and last[0] is not family
            and last[1] == values
            and last[0] == family
        ):
            text = last[2]
        else:
            text = _part_text(self._encoder, self._trailer, (family,))
        if values is not None:
            families_now[family.name] = (family, values, text)
        return text


_PLAIN_SAMPLE_TAIL = (None,) * (len(Sample._fields) - 3)  # no timestamp, exemplar or histogram


def _values(family: Family) -> bytes | None:
    """The family's sample values as the bits of doubles; None when equality is not enough to
    say its text is the same (a timestamp or an exemplar, whose text differs for 1 and 1.0).

    Equal families have the same text but for the sign of a zero (0.0 == -0.0): the bits tell."""
    samples = cast(Metric, family).samples
    try:
        values = array("d", [sample.value for sample in samples if sample[3:] == _PLAIN_SAMPLE_TAIL])
    except TypeError:  # a value that is not a number
        return None
    return values.tobytes() if len(values) == len(samples) else None


def _part_text(encoder: Encoder, trailer: bytes, families: Sequence[Family]) -> bytes:
    """The families' text without the trailer: every format is its families' texts one after
    another, then a trailer (OpenMetrics' "# EOF"), so the page is its parts' texts and one trailer."""
    text = encoder(_Families(families))
    if not text.endswith(trailer):  # an encoder of another shape would make a page of garbage
        raise RuntimeError(f"the encoder's text does not end with its trailer {trailer!r}")
    return text[: len(text) - len(trailer)]


class _Families:
    """Families in the shape an encoder reads (a registry's collect())."""

    def __init__(self, families: Sequence[Family]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return cast(Sequence[Metric], self._families)


@functools.lru_cache(maxsize=32)
def _negotiate(accept: str) -> str:
    """The content type for this Accept header (choose_encoder, remembered: Prometheus sends the
    same header on every scrape); its encoder is in _ENCODERS from then on."""
    encoder, content_type = choose_encoder(accept)
    _ENCODERS.setdefault(content_type, encoder)
    return content_type


@functools.lru_cache(maxsize=32)
def _trailer(encoder: Encoder) -> bytes:
    """What the encoder writes after the last family (OpenMetrics' "# EOF"; nothing for text)."""
    return encoder(_Families(()))


_ENCODERS: dict[str, Encoder] = {}  # content type -> the encoder that writes it
