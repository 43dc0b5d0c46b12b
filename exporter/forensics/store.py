"""Saved captures: one JSON file per capture under a directory, newest first, with retention.

A file holds the dumps (frames only: no locals, ever) and their analysis. Its name starts with
the capture's UTC time, so names sort by time:

    20250101T120000.123456Z-inference-probe_failing.json

Files are written to a hidden temporary name and renamed into place, so a reader never sees half
a capture. After every save the oldest files beyond `max_count`, or beyond `max_bytes` in all,
are deleted; the newest capture is always kept, even alone above `max_bytes` (the evidence of the
hang that just happened is the one that matters). `load()` and `read_bytes()` accept only names
of this form, so no name can reach outside the directory.

The records (pyspy's Dump, analysis's Analysis) are plain dataclasses; pydantic writes and reads
them as the file's `dumps` and `analysis`, so their fields are the format (FORMAT 1 since 0.x).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import json
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SerializerFunctionWrapHandler, TypeAdapter, field_serializer

from ..logs.redact import redact_data
from .analysis import Analysis
from .pyspy import Dump

FORMAT = 1
_NAME = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z)-[A-Za-z0-9][A-Za-z0-9_.-]{0,150}\.json$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class CaptureNotFound(LookupError):
    """No capture by that name (or the name is not one a capture can have)."""


@dataclass(frozen=True)
class StoredCapture:
    name: str  # the file name, what load() takes
    path: Path
    time: float  # epoch seconds of the first dump (of the save when there were none)
    service: str
    reason: str
    pid: int
    size: int  # bytes on disk
    summary: str  # the analysis in one sentence
    deadlock_suspected: bool

    def to_dict(self) -> dict[str, Any]:
        """What the API lists about a capture: everything but where it lies on disk."""
        return _STORED_CAPTURE.dump_python(self, mode="json", exclude={"path"})


_STORED_CAPTURE = TypeAdapter(StoredCapture)


class _Header(BaseModel):
    """The top of a capture file: what listing reads (other keys are ignored here)."""

    format: int = FORMAT
    service: str
    reason: str
    time: float  # epoch seconds of the first dump (of the save when there were none)
    time_iso: str
    pid: int = 0
    summary: str = ""
    deadlock_suspected: bool = False


class _Document(_Header):
    """A whole capture file: the header, the analysis and the dumps it was made from."""

    analysis: Analysis
    dumps: tuple[Dump, ...]

    @field_serializer("analysis", mode="wrap")
    def _with_counts(self, analysis: Analysis, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Threads by state, for whoever reads the file; loading computes them again.
        return {**serialize(analysis), "counts": analysis.counts()}


@dataclass(frozen=True)
class LoadedCapture:
    info: StoredCapture
    dumps: tuple[Dump, ...]
    analysis: Analysis


class CaptureStore:
    """Captures under `directory`; safe to use from several threads of one process."""

    def __init__(
        self, directory: str | os.PathLike[str], max_count: int = 20, max_bytes: int = 50_000_000
    ) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError("max_count and max_bytes must be at least 1")
        self.directory = Path(directory)
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, int], StoredCapture]] = {}

    def save(self, service: str, reason: str, dumps: Sequence[Dump], analysis: Analysis) -> StoredCapture:
        """Write one capture, then delete the oldest beyond the limits. Returns what was saved."""
        when = dumps[0].time if dumps else dt.datetime.now(dt.UTC).timestamp()
        document = _Document(
            service=service,
            reason=reason,
            time=when,
            time_iso=_iso(when),
            pid=analysis.pid,
            summary=analysis.summary,
            deadlock_suspected=analysis.deadlock_suspected,
            analysis=analysis,
            dumps=tuple(dumps),
        ).model_dump(mode="json")
        data = json.dumps(redact_data(document), indent=1).encode()  # a thread name may hold anything
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            path = self._free_name(when, service, reason)
            handle, partial = tempfile.mkstemp(prefix=".capture-", suffix=".tmp", dir=self.directory)
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                os.chmod(partial, 0o640)
                os.replace(partial, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
                raise
            saved = self._info(path)
            self._enforce_retention()
        return saved

    def list(self) -> builtins.list[StoredCapture]:
        """Every capture, newest first. Files that cannot be read as captures are left out."""
        captures = []
        with self._lock:
            paths = self._paths()
            for path in paths:
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    captures.append(self._info(path))
            present = {path.name for path in paths}
            for name in [name for name in self._cache if name not in present]:
                del self._cache[name]
        return captures

    def load(self, name: str) -> LoadedCapture:
        """The capture called `name` with its dumps and analysis; CaptureNotFound otherwise."""
        path = self.path_of(name)
        try:
            document = _Document.model_validate_json(path.read_bytes())
            with self._lock:
                info = self._info(path)
            return LoadedCapture(info=info, dumps=document.dumps, analysis=document.analysis)
        except FileNotFoundError:
            raise CaptureNotFound(f"no capture named {name!r}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CaptureNotFound(f"capture {name!r} cannot be read: {exc}") from None

    def read_bytes(self, name: str) -> bytes:
        """The capture file as saved (JSON), to serve as it is."""
        try:
            return self.path_of(name).read_bytes()
        except FileNotFoundError:
            raise CaptureNotFound(f"no capture named {name!r}") from None

    def path_of(self, name: str) -> Path:
        """The path of capture `name`: only names this store gives, never outside its directory."""
        if not isinstance(name, str) or not _NAME.match(name) or name != os.path.basename(name):
            raise CaptureNotFound(f"{name!r} is not a capture name")
        path = self.directory / name
        if path.resolve().parent != self.directory.resolve():
            raise CaptureNotFound(f"{name!r} is not a capture name")
        return path

    def total_bytes(self) -> int:
        return sum(capture.size for capture in self.list())

    def _paths(self) -> builtins.list[Path]:
        """Capture files, newest first (names sort by time)."""
        try:
            names = [
                entry.name for entry in os.scandir(self.directory) if entry.is_file(follow_symlinks=False)
            ]
        except FileNotFoundError:
            return []
        return [self.directory / name for name in sorted((n for n in names if _NAME.match(n)), reverse=True)]

    def _free_name(self, when: float, service: str, reason: str) -> Path:
        """A new file name whose time stamp sorts after every capture of the same instant."""
        micros = round(when * 1_000_000)
        while True:
            stamp = _stamp(micros)
            if not any(self.directory.glob(f"{stamp}-*")):
                return self.directory / f"{stamp}-{_safe(service)}-{_safe(reason)}.json"
            micros += 1

    def _info(self, path: Path) -> StoredCapture:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        cached = self._cache.get(path.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        header = _Header.model_validate_json(path.read_bytes())
        info = StoredCapture(
            name=path.name, path=path, size=stat.st_size, **header.model_dump(exclude={"format", "time_iso"})
        )
        self._cache[path.name] = (key, info)
        return info

    def _enforce_retention(self) -> None:
        kept_bytes, kept, dropping = 0, 0, False
        for path in self._paths():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            # The newest is always kept; once one is dropped, every older one goes too.
            dropping = dropping or (
                kept > 0 and (kept >= self.max_count or kept_bytes + size > self.max_bytes)
            )
            if not dropping:
                kept, kept_bytes = kept + 1, kept_bytes + size
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._cache.pop(path.name, None)


def _safe(text: str) -> str:
    """A service or reason as a file-name part: letters, digits, `_`, `.`, `-`."""
    cleaned = _UNSAFE.sub("_", text).strip("._-")[:60]
    return cleaned or "unnamed"


def _stamp(micros: int) -> str:
    seconds, fraction = divmod(micros, 1_000_000)
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y%m%dT%H%M%S") + f".{fraction:06d}Z"


def _iso(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
