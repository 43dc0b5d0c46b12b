"""XID error events since the exporter started, counted per GPU in bounded memory.

The NVML reader (nvmlreader.py) writes the log from its worker thread while a cycle runs;
the GPU collector reads a snapshot between cycles, so the two never touch it at once. The counts
outlive the GPU's other readings: a lost GPU keeps its XID series.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ...base.thresholds import XID_APPLICATION, XID_CRITICAL, XID_WARNING

# Every classified XID is a series at 0 from the first scrape, so an alert's increase() sees the first event.
COMMON_XIDS = tuple(sorted(XID_CRITICAL + XID_WARNING + XID_APPLICATION))
MAX_XIDS_PER_GPU = 64


@dataclass(frozen=True)
class XidSnapshot:
    counts: dict[int, dict[int, int]]  # gpu index -> xid -> events
    last: dict[int, tuple[int, float]]  # gpu index -> (xid, time)
    recent: tuple[tuple[float, int, int], ...]  # (time, gpu index, xid)
    identity: dict[int, tuple[str, str]]  # gpu index -> (uuid, name)


class XidLog:
    """XID events since start. Written only by the NVML worker; read through snapshot()."""

    def __init__(self) -> None:
        self.counts: dict[int, dict[int, int]] = {}
        self.last: dict[int, tuple[int, float]] = {}
        self.recent: deque[tuple[float, int, int]] = deque(maxlen=256)
        self.identity: dict[int, tuple[str, str]] = {}

    def identify(self, index: int, uuid: str, name: str) -> None:
        """Remember which GPU an index is, for the labels of its XID series."""
        self.identity[index] = (uuid, name)

    def watch(self, index: int, uuid: str, name: str) -> None:
        """A GPU whose XID events are registered: its common XIDs count from 0."""
        self.identify(index, uuid, name)
        counts = self.counts.setdefault(index, {})
        for xid in COMMON_XIDS:
            counts.setdefault(xid, 0)

    def record(self, index: int, xid: int, now: float) -> None:
        counts = self.counts.setdefault(index, {})
        if xid in counts or len(counts) < MAX_XIDS_PER_GPU:
            counts[xid] = counts.get(xid, 0) + 1
        self.last[index] = (xid, now)
        self.recent.append((now, index, xid))

    def snapshot(self) -> XidSnapshot:
        return XidSnapshot(
            {gpu: dict(c) for gpu, c in self.counts.items()},
            dict(self.last),
            tuple(self.recent),
            dict(self.identity),
        )
