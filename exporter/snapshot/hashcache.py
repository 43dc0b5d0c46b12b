"""sha256 of (large) files, remembered by (path, size, mtime_ns, inode) so a 20 GB model is read
once, not on every snapshot.

A file whose size, modification time or inode changed is read again; one that changes while it is
read is not remembered (its digest describes no single version of it). Reads go in bounded chunks
into one reused buffer, and an optional deadline stops a long read between two chunks. The cache
is bounded (least recently used entries go first) and may be saved to a JSON file so that one-shot
commands (`autoglm-exporter snapshot`) share it across runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

CHUNK_SIZE = 1 << 20  # bytes read at a time
MAX_ENTRIES = 100_000
FILE_FORMAT = 1


class HashDeadline(TimeoutError):
    """The deadline passed before the file was read to its end."""


class FileChanged(OSError):
    """The file changed while it was read."""


@dataclass(frozen=True)
class Hashed:
    sha256: str
    size: int
    cached: bool  # True: answered from the cache without reading the file


_Key = tuple[str, int, int, int]  # (real path, size, mtime_ns, inode)


class HashCache:
    def __init__(self, max_entries: int = MAX_ENTRIES, chunk_size: int = CHUNK_SIZE) -> None:
        if chunk_size <= 0 or max_entries <= 0:
            raise ValueError("chunk_size and max_entries must be positive")
        self.max_entries = max_entries
        self.chunk_size = chunk_size
        self._entries: OrderedDict[_Key, str] = OrderedDict()
        self._lock = threading.Lock()
        self.files_read = 0  # files really read (not answered from the cache)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def sha256(self, path: str, deadline: float | None = None) -> Hashed:
        """The file's sha256 (hex). `deadline` is a time.monotonic() value.

        Raises OSError (FileNotFoundError, PermissionError, IsADirectoryError...), FileChanged,
        HashDeadline.
        """
        real = os.path.realpath(path)
        before = os.stat(real)
        key = _key(real, before)
        with self._lock:
            digest = self._entries.get(key)
            if digest is not None:
                self._entries.move_to_end(key)
                return Hashed(digest, before.st_size, cached=True)
        digest, size = self._read(real, before, deadline)
        with self._lock:
            self._entries[key] = digest
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return Hashed(digest, size, cached=False)

    def _read(self, path: str, before: os.stat_result, deadline: float | None) -> tuple[str, int]:
        digest = hashlib.sha256()
        buffer = bytearray(self.chunk_size)
        view = memoryview(buffer)
        size = 0
        with open(path, "rb", buffering=0) as handle:
            opened = os.fstat(handle.fileno())
            if _key(path, opened) != _key(path, before):
                raise FileChanged(f"{path} changed while it was read")
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    raise HashDeadline(f"{path}: deadline passed after {size} bytes")
                count = handle.readinto(buffer)
                if not count:
                    break
                digest.update(view[:count])
                size += count
            after = os.fstat(handle.fileno())
        with self._lock:
            self.files_read += 1
        if size != before.st_size or _key(path, after) != _key(path, before):
            raise FileChanged(f"{path} changed while it was read")
        return digest.hexdigest(), size

    # --- persistence ------------------------------------------------------------------------

    def save(self, path: str) -> None:
        """Write the cache to a JSON file atomically (a crash leaves the old file whole)."""
        with self._lock:
            rows = [[*key, digest] for key, digest in self._entries.items()]
        temporary = f"{path}.tmp.{os.getpid()}"
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump({"format": FILE_FORMAT, "entries": rows}, handle)
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    def load(self, path: str) -> int:
        """Merge entries from a file written by save(); a missing or unreadable file adds none.

        Returns how many entries were added.
        """
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return 0
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            return 0
        added = 0
        with self._lock:
            for row in data.get("entries", []):
                if (
                    isinstance(row, list)
                    and len(row) == 5
                    and isinstance(row[0], str)
                    and all(isinstance(v, int) for v in row[1:4])
                    and isinstance(row[4], str)
                ):
                    self._entries[(row[0], row[1], row[2], row[3])] = row[4]
                    added += 1
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return added


def _key(path: str, stat: os.stat_result) -> _Key:
    return (path, stat.st_size, stat.st_mtime_ns, stat.st_ino)


# One cache for the whole process: the daemon's periodic snapshots share it.
DEFAULT_CACHE = HashCache()
