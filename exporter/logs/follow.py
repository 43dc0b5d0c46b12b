"""Follow a log file the way `tail -F` does, one bounded read at a time.

`LogFollower.read_lines()` returns the complete lines appended since the previous call:

- On the very first call an existing file is read from its END: what it already holds is history,
  not news (a line that was half written at that moment is history too and is skipped). A file
  that appears later, or the new file after a rotation, is read from its start.
- The file stays open between calls, and the path is checked with os.stat each call:
  * rotation by rename (or delete and recreate): the path names another inode, so the lines left
    in the old handle are read first (a last line without its newline is returned as it is: nobody
    will finish it), then the new file is opened and read from its start;
  * truncation in place (copytruncate): the file is shorter than our position, or the bytes just
    before our position are no longer those we read there, so reading starts again at 0 (a partial
    line held from before is dropped). Only a file truncated and rewritten with the very same bytes
    up to our position between two calls goes unnoticed.
- A partial last line is kept until its newline arrives.
- A line longer than `max_line_bytes` is cut to that many bytes and marked with TRUNCATION_MARK;
  the rest, up to its newline, is discarded as it is read: no more than the bound is ever held.
- Bytes that are not UTF-8 are replaced (U+FFFD), never an exception; a trailing "\\r" is dropped.
- At most `max_bytes_per_read` bytes are read per call; the rest waits for the next call, so a
  burst of megabytes cannot push a collector past its deadline.
- A missing file gives no lines and `present` False; a file we may not read gives no lines and a
  clear message in `error`. Neither raises.

A file that existed at the first call but could not be read then (permission denied) is still read
from its end once it becomes readable: its content stays history.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
from stat import S_ISDIR, S_ISREG
from typing import BinaryIO

TRUNCATION_MARK = "…[truncated]"
DEFAULT_MAX_LINE_BYTES = 8192
DEFAULT_MAX_BYTES_PER_READ = 4 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
TAIL_BYTES = 64


class LogFollower:
    def __init__(
        self,
        path: str,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_bytes_per_read: int = DEFAULT_MAX_BYTES_PER_READ,
    ) -> None:
        if max_line_bytes < 1 or max_bytes_per_read < 1:
            raise ValueError("max_line_bytes and max_bytes_per_read must be positive")
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.max_bytes_per_read = max_bytes_per_read
        self._handle: BinaryIO | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open handle
        self._position = 0  # offset in the open handle up to which bytes were consumed
        self._tail = b""  # the last bytes before _position, to notice a file rewritten under us
        self._start_at_end = True  # true until the file was first opened or seen missing
        self._partial = bytearray()  # the start of a line whose newline has not come yet
        self._cut = False  # the current line exceeded max_line_bytes: the rest is discarded
        self._skip_line = False  # the current line began before we started: drop it whole
        self._present = False
        self._error: str | None = None
        self.truncated_lines = 0  # lines cut to max_line_bytes since this follower was made
        self.rotations = 0  # files finished because the path moved on (renamed, deleted) or truncated

    @property
    def present(self) -> bool:
        """True when the path named a file at the last call."""
        return self._present

    @property
    def error(self) -> str | None:
        """Why the last call could not read the file (None when it could, or when it is missing)."""
        return self._error

    def close(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
        self._handle = None
        self._identity = None
        self._position = 0
        self._tail = b""
        self._reset_line()

    def read_lines(self) -> list[str]:
        """The complete lines appended since the previous call (at most max_bytes_per_read bytes)."""
        lines: list[str] = []
        budget = self.max_bytes_per_read
        self._error = None
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._present = False
            self._start_at_end = False  # whatever appears at the path from now on is news
            if self._handle is not None:
                budget = self._drain_old(lines, budget)
            return lines
        except OSError as exc:
            self._present = False
            self._error = _describe(self.path, exc)
            return lines
        if not S_ISREG(stat.st_mode):  # a directory (or a device) at the path is no log to follow
            self._present = False
            kind = "a directory" if S_ISDIR(stat.st_mode) else "not a regular file"
            self._error = f"{self.path} is {kind}, not a log file"
            return lines
        self._present = True
        identity = (stat.st_dev, stat.st_ino)

        if self._handle is not None and self._identity != identity:
            # Rotated (renamed away, or deleted and recreated): finish the old file first.
            budget = self._drain_old(lines, budget)
            if self._handle is not None:
                return lines  # the budget ran out inside the old file: the new one waits
        if self._handle is None:
            if not self._open():
                return lines
        elif stat.st_size < self._position or not self._tail_unchanged():
            # Truncated in place (copytruncate): the content starts again at 0.
            self.rotations += 1
            self._seek(0)
            self._reset_line()
        self._read(lines, budget)
        return lines

    # --- internals -------------------------------------------------------------------------

    def _open(self) -> bool:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - kept open between calls, like tail -F
        except FileNotFoundError:
            self._present = False
            self._start_at_end = False
            return False
        except OSError as exc:
            self._error = _describe(self.path, exc)
            return False
        try:
            opened = os.fstat(handle.fileno())
        except OSError as exc:
            handle.close()
            self._error = _describe(self.path, exc)
            return False
        self._handle = handle
        # The path may have changed between stat and open: trust what we actually opened.
        self._identity = (opened.st_dev, opened.st_ino)
        self._reset_line()
        if self._start_at_end:
            self._start_at_end = False
            end = opened.st_size
            self._seek(end)
            if self._tail and not self._tail.endswith(b"\n"):
                self._skip_line = True  # we start in the middle of a line: it is history
        else:
            self._seek(0)
        return True

    def _seek(self, offset: int) -> None:
        assert self._handle is not None
        self._handle.seek(offset)
        self._position = offset
        self._tail = self._bytes_before(offset)

    def _bytes_before(self, offset: int) -> bytes:
        assert self._handle is not None
        start = max(0, offset - TAIL_BYTES)
        try:
            return os.pread(self._handle.fileno(), offset - start, start)
        except OSError:
            return b""

    def _tail_unchanged(self) -> bool:
        """False when the bytes just before our position are no longer what we read there.

        A file truncated and rewritten past our position between two calls is as long as one that
        grew; its content tells them apart (unless the new bytes are the very same).
        """
        if not self._tail:
            return True
        return self._bytes_before(self._position) == self._tail

    def _drain_old(self, lines: list[str], budget: int) -> int:
        """Read what is left in the handle of a file that the path no longer names."""
        budget = self._read(lines, budget)
        if budget > 0:
            # Reached the old file's end: a last line without newline will never be finished.
            if (self._partial or self._cut) and not self._skip_line:
                lines.append(self._finish_line())
            self.close()
            self.rotations += 1
        return budget

    def _read(self, lines: list[str], budget: int) -> int:
        """Read up to `budget` bytes from the open handle; returns the budget left (0: stopped early)."""
        handle = self._handle
        if handle is None:
            return budget
        while budget > 0:
            try:
                chunk = handle.read(min(CHUNK_BYTES, budget))
            except OSError as exc:
                self._error = _describe(self.path, exc)
                return budget
            if not chunk:
                return budget
            budget -= len(chunk)
            self._position += len(chunk)
            self._tail = (self._tail + chunk[-TAIL_BYTES:])[-TAIL_BYTES:]
            self._feed(chunk, lines)
        return 0

    def _feed(self, chunk: bytes, lines: list[str]) -> None:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                self._keep(chunk, start, len(chunk))
                return
            self._keep(chunk, start, newline)
            if self._skip_line:
                self._reset_line()
            else:
                lines.append(self._finish_line())
            start = newline + 1

    def _keep(self, chunk: bytes, start: int, end: int) -> None:
        """Add chunk[start:end] to the current line, never holding more than max_line_bytes."""
        if self._cut or self._skip_line or start >= end:
            return
        room = self.max_line_bytes - len(self._partial)
        if end - start > room:
            self._partial += chunk[start : start + room]
            self._cut = True
        else:
            self._partial += chunk[start:end]

    def _finish_line(self) -> str:
        data = bytes(self._partial)
        cut = self._cut
        self._reset_line()
        if cut:
            self.truncated_lines += 1
            # The cut may fall inside a multi-byte character: drop that incomplete tail.
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            return decoder.decode(data, final=False) + TRUNCATION_MARK
        if data.endswith(b"\r"):
            data = data[:-1]
        return data.decode("utf-8", "replace")

    def _reset_line(self) -> None:
        self._partial = bytearray()
        self._cut = False
        self._skip_line = False


def _describe(path: str, exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied reading {path}"
    if exc.errno == errno.EISDIR:
        return f"{path} is a directory, not a log file"
    return f"cannot read {path}: {exc.strerror or exc}"
