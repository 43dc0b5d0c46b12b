"""LogFollower against real files: appends, rotation, truncation, deletion, long lines, bad bytes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest

from autoglm_exporter.logs.follow import TRUNCATION_MARK, LogFollower

from .conftest import wait_until


def append(path: Path, data: str | bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def read_all(follower: LogFollower, calls: int = 20) -> list[str]:
    """Everything the follower has to give, over at most `calls` calls."""
    lines: list[str] = []
    for _ in range(calls):
        batch = follower.read_lines()
        if not batch:
            break
        lines += batch
    return lines


# --- where reading starts -------------------------------------------------------------------


def test_an_existing_file_is_read_from_its_end_old_lines_are_history(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("old 1\nold 2\n")
    follower = LogFollower(str(log))
    assert follower.read_lines() == []
    assert follower.present and follower.error is None
    append(log, "new 1\nnew 2\n")
    assert follower.read_lines() == ["new 1", "new 2"]
    assert follower.read_lines() == []


def test_a_line_half_written_when_we_start_is_history_too(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("old\nhalf of an old li")
    follower = LogFollower(str(log))
    assert follower.read_lines() == []
    append(log, "ne\nnew\n")
    assert follower.read_lines() == ["new"]


def test_a_file_that_appears_later_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    follower = LogFollower(str(log))
    assert follower.read_lines() == []
    assert not follower.present and follower.error is None
    log.write_text("first\nsecond\n")
    assert follower.read_lines() == ["first", "second"]
    assert follower.present


def test_an_empty_file_at_start_gives_everything_written_later(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("")
    follower = LogFollower(str(log))
    assert follower.read_lines() == []
    append(log, "a\n")
    assert follower.read_lines() == ["a"]


# --- lines -----------------------------------------------------------------------------------


def test_a_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("")
    follower = LogFollower(str(log))
    follower.read_lines()
    append(log, "CUDA out of ")
    assert follower.read_lines() == []
    append(log, "memory")
    assert follower.read_lines() == []
    append(log, ". Tried to allocate 20.00 MiB\nnext")
    assert follower.read_lines() == ["CUDA out of memory. Tried to allocate 20.00 MiB"]
    append(log, "\n")
    assert follower.read_lines() == ["next"]


def test_crlf_line_endings_and_empty_lines(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("")
    follower = LogFollower(str(log))
    follower.read_lines()
    append(log, b"windows\r\n\nunix\n")
    assert follower.read_lines() == ["windows", "", "unix"]


def test_invalid_utf8_is_replaced_never_raised(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("")
    follower = LogFollower(str(log))
    follower.read_lines()
    append(log, b"bad \xff\xfe bytes \xc3\n" + "ok é 中文\n".encode())
    assert follower.read_lines() == ["bad \ufffd\ufffd bytes \ufffd", "ok é 中文"]


def test_a_1mb_line_without_newline_is_cut_and_never_held_whole(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("")
    follower = LogFollower(str(log), max_line_bytes=1000)
    follower.read_lines()
    append(log, "x" * (1024 * 1024))
    tracemalloc.start()
    try:
        assert follower.read_lines() == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 64 KiB read chunks and a 1000 byte line buffer: far below the megabyte in the file.
    assert peak < 256 * 1024, peak
    append(log, "y" * 5000 + "\nafter\n")
    lines = follower.read_lines()
    assert lines == ["x" * 1000 + TRUNCATION_MARK, "after"]
    assert follower.truncated_lines == 1


def test_a_long_line_is_cut_at_a_character_boundary(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("")
    follower = LogFollower(str(log), max_line_bytes=10)
    follower.read_lines()
    append(log, ("abcdefghi" + "é" * 5 + "\n").encode())  # the cut falls inside "é"
    assert follower.read_lines() == ["abcdefghi" + TRUNCATION_MARK]
    append(log, "0123456789\n")  # exactly the bound: not cut
    assert follower.read_lines() == ["0123456789"]
    assert follower.truncated_lines == 1


def test_at_most_max_bytes_per_read_then_the_rest_next_time(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("")
    follower = LogFollower(str(log), max_bytes_per_read=1000)
    follower.read_lines()
    expected = [f"line {i:04d} " + "." * 88 for i in range(50)]  # 100 bytes with the newline
    append(log, "".join(line + "\n" for line in expected))
    batches = [follower.read_lines() for _ in range(6)]
    assert [len(batch) for batch in batches] == [10, 10, 10, 10, 10, 0]
    assert [line for batch in batches for line in batch] == expected


# --- rotation, truncation, deletion ---------------------------------------------------------


def test_rotation_by_rename_finishes_the_old_file_then_reads_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("history\n")
    follower = LogFollower(str(log))
    follower.read_lines()
    append(log, "before rotation\n")
    # The service keeps its handle across the rename, as logrotate leaves it.
    with open(log, "ab") as writer:
        log.rename(tmp_path / "error.log.1")
        writer.write(b"late line in the old file\nunfinished")
        writer.flush()
        append(log, "first line of the new file\n")
        assert follower.read_lines() == [
            "before rotation",
            "late line in the old file",
            "unfinished",
            "first line of the new file",
        ]
        assert follower.rotations == 1
        writer.write(b" and more\n")  # after we moved on: the new file is what we follow
        writer.flush()
        append(log, "second line of the new file\n")
        assert follower.read_lines() == ["second line of the new file"]


def test_rotation_with_a_backlog_larger_than_one_read(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("")
    follower = LogFollower(str(log), max_bytes_per_read=250)
    follower.read_lines()
    old = [f"old {i:03d}" for i in range(60)]  # 8 bytes + newline each: 540 bytes
    append(log, "".join(line + "\n" for line in old))
    log.rename(tmp_path / "error.log.1")
    log.write_text("new 000\nnew 001\n")
    lines = read_all(follower)
    assert lines == old + ["new 000", "new 001"]


def test_truncation_in_place_copytruncate_starts_again_at_zero(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("history\n")
    follower = LogFollower(str(log))
    follower.read_lines()
    append(log, "one\ntwo\nhalf")
    assert follower.read_lines() == ["one", "two"]
    shutil.copyfile(log, tmp_path / "error.log.1")
    with open(log, "r+b") as handle:  # copytruncate: same inode, cut to 0
        handle.truncate(0)
    append(log, "after\n")
    assert follower.read_lines() == ["after"]
    assert follower.rotations == 1


def test_truncated_then_rewritten_past_our_position_before_we_look(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("")
    follower = LogFollower(str(log))
    follower.read_lines()
    append(log, "short one\n")
    assert follower.read_lines() == ["short one"]
    with open(log, "r+b") as handle:
        handle.truncate(0)
    append(log, "a longer line written after the truncation\nand another\n")  # now longer than before
    assert follower.read_lines() == ["a longer line written after the truncation", "and another"]
    assert follower.rotations == 1
    append(log, "then simply appended\n")
    assert follower.read_lines() == ["then simply appended"]
    assert follower.rotations == 1


def test_deleted_file_is_finished_then_absent_then_recreated(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("history\n")
    follower = LogFollower(str(log))
    follower.read_lines()
    append(log, "last words\n")
    log.unlink()
    assert follower.read_lines() == ["last words"]
    assert not follower.present
    assert follower.rotations == 1
    assert follower.read_lines() == []
    log.write_text("reborn\n")
    assert follower.read_lines() == ["reborn"]
    assert follower.present


def test_deleted_and_recreated_between_two_reads(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("history\n")
    follower = LogFollower(str(log))
    follower.read_lines()
    append(log, "old tail\n")
    log.unlink()
    log.write_text("new head\n")
    assert follower.read_lines() == ["old tail", "new head"]


# --- errors ------------------------------------------------------------------------------------

_UNREADABLE_CHILD = """
import json, os, sys
from autoglm_exporter.logs.follow import LogFollower  # imported before giving up root
os.setgid(65534)
os.setuid(65534)
results = []
for path in sys.argv[1:]:
    follower = LogFollower(path)
    lines = follower.read_lines()
    results.append({"lines": lines, "present": follower.present, "error": follower.error})
print(json.dumps(results))
"""


def test_permission_denied_is_a_clear_error_not_an_exception(tmp_path: Path) -> None:
    # Root reads anything: a real permission check needs an unprivileged reader.
    base = Path(tempfile.mkdtemp(prefix="logfollow-", dir="/tmp"))
    try:
        base.chmod(0o755)
        unreadable = base / "error.log"
        unreadable.write_text("secret history\n")
        unreadable.chmod(0o000)
        closed_dir = base / "closed"
        closed_dir.mkdir(mode=0o700)
        hidden = closed_dir / "error.log"
        hidden.write_text("x\n")
        if os.geteuid() == 0:
            done = subprocess.run(
                [sys.executable, "-c", _UNREADABLE_CHILD, str(unreadable), str(hidden)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            results = json.loads(done.stdout)
        else:
            results = []
            for path in (unreadable, hidden):
                follower = LogFollower(str(path))
                results.append(
                    {"lines": follower.read_lines(), "present": follower.present, "error": follower.error}
                )
    finally:
        shutil.rmtree(base)
    assert results[0] == {"lines": [], "present": True, "error": f"permission denied reading {unreadable}"}
    assert results[1] == {"lines": [], "present": False, "error": f"permission denied reading {hidden}"}


def test_a_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    follower = LogFollower(str(tmp_path))
    assert follower.read_lines() == []
    assert follower.error == f"{tmp_path} is a directory, not a log file"


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        LogFollower("/nonexistent", max_line_bytes=0)


# --- a real writer in another process ---------------------------------------------------------

_WRITER = """
import random, sys, time
path, count = sys.argv[1], int(sys.argv[2])
random.seed(7)
with open(path, "ab", buffering=0) as log:
    for i in range(count):
        line = f"{i:05d} " + "w" * random.randint(0, 300) + "\\n"
        cut = random.randint(0, len(line))
        log.write(line[:cut].encode())  # a line in two writes: the reader may see half of it
        if i % 50 == 0:
            time.sleep(0.002)
        log.write(line[cut:].encode())
print("done", flush=True)
"""


def test_lines_from_a_live_writer_arrive_whole_and_in_order(tmp_path: Path, child_processes) -> None:
    log = tmp_path / "error.log"
    log.write_text("history\n")
    follower = LogFollower(str(log), max_bytes_per_read=4096)
    assert follower.read_lines() == []
    count = 3000
    writer = child_processes(_WRITER, str(log), str(count))
    received: list[str] = []
    deadline = time.monotonic() + 30
    while len(received) < count and time.monotonic() < deadline:
        received += follower.read_lines()
        time.sleep(0.001)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == b"done"
    received += read_all(follower, calls=1000)
    assert len(received) == count
    for i, line in enumerate(received):
        assert line.startswith(f"{i:05d} ") and set(line[6:]) <= {"w"}, (i, line)


def test_a_writer_rotating_under_a_reader_loses_nothing(tmp_path: Path, child_processes) -> None:
    log = tmp_path / "error.log"
    rotating_writer = """
import os, sys, time
path = sys.argv[1]
for generation in range(5):
    with open(path, "ab") as log:
        for i in range(200):
            log.write(f"{generation}-{i:03d}\\n".encode())
            log.flush()
            time.sleep(0.001)
    os.rename(path, f"{path}.{generation}")
print("done", flush=True)
"""
    follower = LogFollower(str(log))
    follower.read_lines()  # missing at start: everything that appears is news
    writer = child_processes(rotating_writer, str(log))
    received: list[str] = []

    def finished() -> bool:
        received.extend(follower.read_lines())
        return writer.poll() is not None

    wait_until(finished, timeout=30, interval=0.001)
    received += read_all(follower)
    # Each generation lives for about 200 ms and we look every millisecond: we see all of them,
    # each complete and in order (old file finished before the new one is started).
    expected = [f"{generation}-{i:03d}" for generation in range(5) for i in range(200)]
    assert received == expected
    assert follower.rotations == 5
