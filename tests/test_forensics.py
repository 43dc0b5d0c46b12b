"""Hang forensics against real stuck Python services (tests/stuck_services.py) and the real py-spy.

The services run as children of the test (root here, so py-spy may ptrace them); the permission
tests drop the privilege py-spy runs with, exactly as a container without SYS_PTRACE does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autoglm_exporter.forensics import (
    CAPTURE_ERROR_KINDS,
    PTRACE_HINT,
    Analysis,
    CaptureError,
    CaptureNotFound,
    CaptureStore,
    Dump,
    Frame,
    ThreadStack,
    analyse,
    capture,
    profile,
)
from autoglm_exporter.forensics.analysis import waiting_on
from autoglm_exporter.linux.subprocesses import unreaped_count

from .conftest import DEBIAN_PYTHON, require_binary, wait_until

SERVICES = Path(__file__).resolve().with_name("stuck_services.py")
FIXTURES = Path(__file__).resolve().with_name("fixtures") / "forensics"
RUN_SERVICE = (
    f"import runpy, sys; sys.argv[0] = {str(SERVICES)!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
)
INTERVAL = 0.2  # between dumps: the stacks of a stuck thread do not move in 0.4 s


def marker_line(name: str) -> int:
    """The line of stuck_services.py that carries `# stuck: NAME`."""
    for number, text in enumerate(SERVICES.read_text().splitlines(), 1):
        if text.rstrip().endswith(f"# stuck: {name}"):
            return number
    raise AssertionError(f"no '# stuck: {name}' marker in {SERVICES}")


def settled(
    pid: int, py_spy: str, claim: Callable[[Analysis], bool], native: bool = True, count: int = 3
) -> tuple[list[Dump], Analysis]:
    """Capture until `claim` holds (at most 5 captures): a service that has just been triggered
    may take a moment to get stuck. The last capture comes back either way, to assert on."""
    for _ in range(5):
        dumps = capture(pid, count=count, interval=INTERVAL, py_spy=py_spy, native=native)
        analysis = analyse(dumps)
        if claim(analysis):
            break
    return dumps, analysis


@pytest.fixture(scope="session")
def py_spy() -> str:
    """The real py-spy binary installed with the package (the venv's bin may not be on PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return require_binary("py-spy")


class Lines:
    """Lines a child prints, read with a deadline (never blocks a test forever)."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        self.child = child
        self.fd = child.stdout.fileno()
        self.buffer = b""

    def read(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no line within {timeout}s (exit status {self.child.poll()})"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 4096)
                assert chunk, f"service exited with status {self.child.wait(5)}"
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


@dataclasses.dataclass
class Service:
    process: subprocess.Popen[bytes]
    lines: Lines
    ready: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def trigger(self, *expected: str) -> None:
        self.process.send_signal(signal.SIGUSR1)
        for line in expected:
            assert self.lines.read() == line


@pytest.fixture
def start_service() -> Iterator[Callable[..., Service]]:
    """Start a real stuck_services.py mode (with the venv's Python unless told another) and wait for
    its ready line; killed after the test."""
    children: list[subprocess.Popen[bytes]] = []

    def start(mode: str, python: str = sys.executable) -> Service:
        child = subprocess.Popen([python, "-c", RUN_SERVICE, mode], stdout=subprocess.PIPE)
        children.append(child)
        lines = Lines(child)
        ready = lines.read()
        assert ready.startswith(f"ready pid={child.pid}"), ready
        return Service(child, lines, ready)

    yield start
    for child in children:
        child.kill()
        child.wait(5)
        assert child.stdout is not None
        child.stdout.close()


# --- analysis of real stuck services --------------------------------------------------------------


def test_deadlock_names_both_threads_and_the_lines_of_their_lock_acquires(
    start_service, py_spy, interpreter
) -> None:
    service = start_service("deadlock", interpreter)
    service.trigger("triggered", "stuck")

    dumps, analysis = settled(service.pid, py_spy, lambda analysis: analysis.deadlock_suspected)

    assert len(dumps) == 3 and all(one.native for one in dumps)
    names = {frame.function for one in dumps for thread in one.threads for frame in thread.frames}
    if interpreter == DEBIAN_PYTHON:
        # The stripped build names no lock_PyThread_acquire_lock, only the exported primitive.
        assert "PyThread_acquire_lock_timed" in names and "lock_PyThread_acquire_lock" not in names
    assert analysis.deadlock_suspected
    blocked = {thread.name: thread for thread in analysis.in_state("blocked")}
    assert set(blocked) == {"MainThread", "worker-a", "worker-b"}
    for name in ("worker-a", "worker-b"):
        where = blocked[name].where
        assert where is not None
        assert (blocked[name].waiting_on, where.filename, where.line) == (
            "lock",
            str(SERVICES),
            marker_line(name),
        )
        assert where.function == name.replace("-", "_")
    assert blocked["MainThread"].waiting_on == "join"
    short = blocked["worker-a"].where.location.rsplit(":", 1)[0]
    assert short.endswith("stuck_services.py")
    assert analysis.summary == (
        f"threads worker-a and worker-b blocked on locks at {short}:{marker_line('worker-a')}, "
        f"{short}:{marker_line('worker-b')} (possible deadlock)"
    )
    assert analysis.counts() == {"blocked": 3, "busy": 0, "running": 0, "idle": 0}


def test_without_native_frames_a_wait_inside_c_is_never_called_a_deadlock(start_service, py_spy) -> None:
    # `with lock:` shows no Python frame for the acquire; without native frames it cannot be told
    # from time.sleep(), so the workers are idle in an unknown C call, not blocked.
    service = start_service("deadlock")
    service.trigger("triggered", "stuck")

    _, analysis = settled(service.pid, py_spy, lambda a: len(a.in_state("idle")) == 2, native=False, count=2)

    assert not analysis.native and not analysis.deadlock_suspected
    states = {thread.name: (thread.state, thread.waiting_on) for thread in analysis.threads}
    assert states == {
        "worker-a": ("idle", "unknown"),
        "worker-b": ("idle", "unknown"),
        "MainThread": ("blocked", "join"),  # threading.py's frames say so without native help
    }
    [main] = analysis.in_state("blocked")
    assert main.where is not None
    assert analysis.summary == f"1 thread blocked: MainThread on a thread join at {main.where.location}"


def test_a_spinning_worker_is_busy_in_its_function_not_blocked(start_service, py_spy, interpreter) -> None:
    service = start_service("spinner", interpreter)
    service.trigger("triggered")

    _, analysis = settled(service.pid, py_spy, lambda a: any(t.state == "busy" for t in a.threads))

    spinner = next(thread for thread in analysis.threads if thread.name == "spinner")
    assert spinner.state == "busy" and spinner.waiting_on is None
    assert spinner.where is not None and spinner.where.function == "spin"
    assert spinner.where.filename == str(SERVICES)
    loop = marker_line("spinner")
    assert spinner.where.line in (loop - 1, loop)  # `while True:` and its body
    assert spinner.active_samples >= 2
    assert not analysis.deadlock_suspected and analysis.in_state("blocked") == ()
    assert analysis.summary == f"1 thread busy: spinner in spin at {spinner.where.location}"


def test_a_healthy_idle_server_has_no_blocked_threads(start_service, py_spy, interpreter) -> None:
    service = start_service("healthy", interpreter)
    port = int(service.ready.rsplit("port=", 1)[1])
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok\n"

    analysis = analyse(capture(service.pid, count=3, interval=INTERVAL, py_spy=py_spy))

    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok\n"  # paused, not harmed
    assert analysis.counts()["blocked"] == 0 and not analysis.deadlock_suspected
    states = {thread.name: (thread.state, thread.waiting_on) for thread in analysis.threads}
    assert states == {
        "MainThread": ("idle", "select"),  # socketserver's serve_forever
        "heartbeat": ("idle", "sleep"),
        "pool_0": ("idle", "work"),  # a ThreadPoolExecutor worker waiting for work
    }
    assert analysis.summary == "no blocked or busy threads (3 idle) across 3 dumps"


def test_all_workers_blocked_with_one_on_a_lock_is_a_suspected_deadlock(
    start_service, py_spy, interpreter
) -> None:
    service = start_service("waiters", interpreter)

    _, analysis = settled(service.pid, py_spy, lambda analysis: analysis.deadlock_suspected)

    found = {t.name: (t.state, t.waiting_on, t.where.line if t.where else None) for t in analysis.threads}
    assert found == {
        "consumer": ("blocked", "queue", marker_line("consumer")),
        "waiter": ("blocked", "event", marker_line("waiter")),
        "locker": ("blocked", "lock", marker_line("locker")),
        "MainThread": ("idle", "sleep", found["MainThread"][2]),
    }
    assert analysis.deadlock_suspected
    assert analysis.summary.startswith("all worker threads blocked: consumer on a queue at ")
    locker = next(thread for thread in analysis.threads if thread.name == "locker")
    assert f"locker on a lock at {locker.where.location}" in analysis.summary
    assert analysis.summary.endswith("(possible deadlock)")


def test_requests_waiting_behind_a_deadlock_are_named_after_the_two_threads_that_hold_it(
    start_service, py_spy, interpreter
) -> None:
    service = start_service("deadlocked_server", interpreter)
    port = int(service.ready.rsplit("port=", 1)[1])
    url = f"http://127.0.0.1:{port}/inference"
    assert httpx.post(url, json={}, timeout=5).status_code == 200
    service.trigger("triggered", "stuck")
    requests = 3
    for _ in range(requests):  # each hangs in its own handler thread, on the lock worker-a holds
        threading.Thread(target=_ask_and_give_up, args=(url,), daemon=True).start()

    def all_requests_blocked(analysis: Analysis) -> bool:
        return len(analysis.in_state("blocked")) == 2 + requests

    _, analysis = settled(service.pid, py_spy, all_requests_blocked)

    assert analysis.deadlock_suspected
    blocked = analysis.in_state("blocked")
    assert all(thread.waiting_on == "lock" for thread in blocked)
    # The two threads of the cycle come first, each at its own line; the requests pile up at one.
    assert [(t.name, t.where.line if t.where else None) for t in blocked[:2]] == [
        ("worker-a", marker_line("worker-a")),
        ("worker-b", marker_line("worker-b")),
    ]
    handlers = blocked[2:]
    assert {(t.where.function, t.where.line) for t in handlers if t.where} == {
        ("LockedHandler.do_POST", marker_line("handler"))
    }
    short = blocked[0].where.location.rsplit(":", 1)[0] if blocked[0].where else "?"
    lines = ", ".join(f"{short}:{marker_line(name)}" for name in ("worker-a", "worker-b", "handler"))
    assert analysis.summary == (
        f"threads worker-a, worker-b, {handlers[0].name} and {requests - 1} more blocked on locks at "
        f"{lines} (possible deadlock)"
    )


def _ask_and_give_up(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, json={}, timeout=60)


# Native frames (function, module) above an application line, innermost first, as builds this
# machine does not have show them; the real captures above cover the 3.11 builds it has.
@pytest.mark.parametrize(
    ("native", "wait"),
    [
        ([("_PySemaphore_Wait", "python3.13"), ("_PyMutex_LockTimed", "python3.13")], "lock"),  # 3.13
        ([("0x7f0e77da6f16", "libc.so.6"), ("pthread_cond_timedwait", "libc.so.6")], "gil"),  # stripped
        ([("___pthread_cond_timedwait64", "libc.so.6"), ("time_sleep", "libpython3.12.so")], "gil"),
        ([("pthread_cond_wait", "libc.so.6"), ("gpr_cv_wait", "cygrpc.cpython-311.so")], "unknown"),
        ([("pthread_cond_wait", "libc.so.6"), ("0x7f3a2b1c", "cygrpc.cpython-311.so")], "unknown"),
        ([("__new_sem_wait_slow64", "libc.so.6"), ("0x55d0c0ffee", "python3.12")], "lock"),
        (
            [("PyThread_acquire_lock_timed", "libpython3.11.so"), ("_queue_SimpleQueue_get_impl", "x")],
            "queue",
        ),
        ([("__GI___poll", "libc.so.6")], "select"),
        ([("__libc_recv", "libc.so.6"), ("0x55d0c0ffee", "python3.11")], "io"),
    ],
    ids=[
        "pymutex",
        "gil-stripped",
        "gil-after-sleep",
        "extension-condvar",
        "stripped-extension-condvar",
        "sem",
        "simplequeue",
        "poll",
        "recv",
    ],
)
def test_native_wait_markers_of_other_builds(native: list[tuple[str, str]], wait: str) -> None:
    frames = [Frame(function, f"/usr/lib/{module}", 0, native=True) for function, module in native]
    app = Frame("handle", "/srv/app/handler.py", 42, "app/handler.py")
    thread = ThreadStack(1, 2, "worker", False, False, (*frames, app))
    assert waiting_on(thread) == (wait, app)


# --- failures: clear kinds, never a crash ---------------------------------------------------------


def test_a_process_that_does_not_exist_is_gone(child_processes, py_spy) -> None:
    child = child_processes("pass")
    child.wait(10)  # exited and reaped: the pid names nothing

    with pytest.raises(CaptureError) as caught:
        capture(child.pid, py_spy=py_spy)

    assert caught.value.kind == "gone"
    assert f"process {child.pid} does not exist" in str(caught.value)


def test_a_process_without_python_is_not_python(child_processes, py_spy) -> None:
    child = child_processes("import os; os.execvp('sleep', ['sleep', '30'])")
    wait_until(lambda: Path(f"/proc/{child.pid}/comm").read_text().strip() == "sleep", timeout=10)

    with pytest.raises(CaptureError) as caught:
        capture(child.pid, py_spy=py_spy)

    assert caught.value.kind == "not_python"
    assert "Failed to find python version" in str(caught.value)


def test_a_missing_py_spy_is_py_spy_missing(start_service) -> None:
    service = start_service("healthy")
    for missing in ("/nonexistent/bin/py-spy", "py-spy-not-installed-anywhere"):
        with pytest.raises(CaptureError) as caught:
            capture(service.pid, py_spy=missing)
        assert caught.value.kind == "py_spy_missing"
        assert "install the py-spy package" in str(caught.value)


def _wrapper(tmp_path: Path, name: str, body: str) -> str:
    """A shell script standing where py-spy is configured (to run the real one differently)."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


@pytest.mark.parametrize(
    "drop",
    [
        pytest.param("--reuid=65534 --regid=65534 --clear-groups", id="another-user"),
        pytest.param("--bounding-set=-sys_ptrace --inh-caps=-sys_ptrace", id="root-without-CAP_SYS_PTRACE"),
    ],
)
def test_without_ptrace_permission_the_error_says_add_sys_ptrace(
    start_service, py_spy, tmp_path: Path, drop: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping privileges needs root")
    tmp_path.chmod(0o755)  # the unprivileged user must reach the wrapper's interpreter only
    unprivileged = _wrapper(tmp_path, "py-spy", f'exec {require_binary("setpriv")} {drop} {py_spy} "$@"\n')
    service = start_service("healthy")

    with pytest.raises(CaptureError) as caught:
        capture(service.pid, count=2, interval=INTERVAL, py_spy=unprivileged)

    assert caught.value.kind == "permission"
    assert caught.value.hint == PTRACE_HINT == "add SYS_PTRACE"
    assert str(caught.value).endswith("(add SYS_PTRACE)")
    assert f"not permitted to read process {service.pid}" in str(caught.value)
    assert service.process.poll() is None  # the service never noticed


def test_a_stopped_process_is_read_as_it_stands_and_left_stopped(start_service, py_spy) -> None:
    """py-spy cannot suspend a stopped process (a SIGSTOPped engine core): it is read without
    suspending it, which changes nothing, since a stopped process does not move."""
    service = start_service("healthy")
    service.process.send_signal(signal.SIGSTOP)
    state = lambda: Path(f"/proc/{service.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]  # noqa: E731
    wait_until(lambda: state() == "T")
    try:
        dumps = capture(service.pid, count=2, interval=0.1, py_spy=py_spy, native=True)
        assert len(dumps) == 2 and all(d.pid == service.pid and d.threads for d in dumps)
        assert not any(d.native for d in dumps)  # native frames need the process suspended
        assert state() == "T"
    finally:
        service.process.send_signal(signal.SIGCONT)


def test_a_py_spy_that_hangs_is_killed_at_its_deadline(start_service, tmp_path: Path) -> None:
    # Stand-in for a py-spy stuck on a process in D state: it never answers.
    hung = _wrapper(tmp_path, "py-spy", "exec sleep 30\n")
    service = start_service("healthy")

    started = time.monotonic()
    with pytest.raises(CaptureError) as caught:
        capture(service.pid, count=3, timeout=0.5, py_spy=hung)  # native, then without: 2 deadlines
    elapsed = time.monotonic() - started

    assert caught.value.kind == "timeout" and elapsed < 3.0
    assert "within 0.5s and was killed" in str(caught.value)
    assert unreaped_count() == 0


def test_where_native_frames_cannot_be_had_the_capture_does_without(start_service, py_spy, tmp_path) -> None:
    # py-spy's own refusal on platforms without native unwinding; every call is logged, then the
    # real py-spy runs.
    calls = tmp_path / "calls"
    no_native = _wrapper(
        tmp_path,
        "py-spy",
        f'echo "$@" >> {calls}\n'
        'for arg in "$@"; do if [ "$arg" = "--native" ]; then\n'
        "  echo 'Collecting stack traces from native extensions (`--native`) is not supported on your platform.' >&2\n"
        "  exit 1\n"
        "fi; done\n"
        f'exec {py_spy} "$@"\n',
    )
    service = start_service("healthy")

    dumps = capture(service.pid, count=3, interval=INTERVAL, py_spy=no_native)

    assert len(dumps) == 3 and not any(one.native for one in dumps)
    argvs = calls.read_text().splitlines()
    assert argvs[0] == f"dump --json --pid {service.pid} --native"
    assert argvs[1:] == [f"dump --json --pid {service.pid}"] * 3
    assert not any("-l" in argv.split() or "--locals" in argv for argv in argvs)


def test_capture_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        capture(0)
    with pytest.raises(ValueError):
        capture(os.getpid(), count=0)
    with pytest.raises(ValueError):
        CaptureError("sideways", "not a kind")
    assert "permission" in CAPTURE_ERROR_KINDS


# --- profile ----------------------------------------------------------------------------------------


def test_profile_writes_a_flame_graph_of_the_spinner(start_service, py_spy, tmp_path: Path) -> None:
    service = start_service("spinner")
    service.trigger("triggered")
    output = tmp_path / "flames" / "spinner.svg"

    written = profile(service.pid, 1, output, py_spy=py_spy)

    assert written == output
    svg = output.read_text()
    assert svg.startswith("<?xml") and "<svg" in svg and svg.rstrip().endswith("</svg>")
    assert "spin (" in svg  # the hot function, as py-spy names it
    assert os.listdir(output.parent) == ["spinner.svg"]  # no partial file left behind


def test_profile_of_a_process_where_nothing_runs_has_no_samples(start_service, py_spy, tmp_path) -> None:
    service = start_service("waiters")
    settled(service.pid, py_spy, lambda analysis: analysis.deadlock_suspected)  # every thread now waits
    output = tmp_path / "idle.svg"

    with pytest.raises(CaptureError) as caught:
        profile(service.pid, 1, output, py_spy=py_spy)

    assert caught.value.kind == "no_samples"
    assert not output.exists() and os.listdir(tmp_path) == []


# --- the store ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_capture(py_spy: str) -> Iterator[tuple[list[Dump], Analysis]]:
    """One capture of the real deadlocked service, shared by the store tests."""
    process = subprocess.Popen([sys.executable, str(SERVICES), "deadlock"], stdout=subprocess.PIPE)
    try:
        lines = Lines(process)
        assert lines.read().startswith("ready pid=")
        process.send_signal(signal.SIGUSR1)
        assert (lines.read(), lines.read()) == ("triggered", "stuck")
        yield settled(process.pid, py_spy, lambda analysis: analysis.deadlock_suspected, count=2)
    finally:
        process.kill()
        process.wait(5)
        assert process.stdout is not None
        process.stdout.close()


def _at(dumps: list[Dump], when: float) -> list[Dump]:
    """The same dumps as if taken at `when` (one capture saved as many)."""
    return [dataclasses.replace(one, time=when + index * INTERVAL) for index, one in enumerate(dumps)]


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def test_a_saved_capture_lists_loads_back_and_holds_no_locals(real_capture, tmp_path: Path) -> None:
    dumps, analysis = real_capture
    store = CaptureStore(tmp_path / "captures", max_count=5, max_bytes=10_000_000)

    saved = store.save("inference", "probe_failing", dumps, analysis)

    assert store.list() == [saved]
    assert saved.path == tmp_path / "captures" / saved.name and saved.size == saved.path.stat().st_size
    assert (saved.service, saved.reason, saved.pid, saved.time) == (
        "inference",
        "probe_failing",
        analysis.pid,
        dumps[0].time,
    )
    assert saved.summary == analysis.summary and saved.deadlock_suspected
    assert saved.name.endswith("Z-inference-probe_failing.json")
    loaded = store.load(saved.name)
    assert (list(loaded.dumps), loaded.analysis, loaded.info) == (dumps, analysis, saved)
    document = json.loads(store.read_bytes(saved.name))
    assert "locals" not in _keys(document)
    assert document["analysis"]["counts"] == {"blocked": 3, "busy": 0, "running": 0, "idle": 0}
    assert [entry for entry in os.listdir(tmp_path / "captures")] == [saved.name]  # no temporary file


def test_retention_by_count_keeps_the_newest(real_capture, tmp_path: Path) -> None:
    dumps, analysis = real_capture
    store = CaptureStore(tmp_path, max_count=3, max_bytes=10_000_000)
    start = time.time() - 100

    for number in range(5):
        store.save("inference", f"reason{number}", _at(dumps, start + number), analysis)

    listed = store.list()
    assert [capture.reason for capture in listed] == ["reason4", "reason3", "reason2"]
    assert sorted(os.listdir(tmp_path), reverse=True) == [capture.name for capture in listed]
    assert [capture.time for capture in listed] == sorted((c.time for c in listed), reverse=True)


def test_retention_by_bytes_deletes_the_oldest(real_capture, tmp_path: Path) -> None:
    dumps, analysis = real_capture
    probe = CaptureStore(tmp_path / "probe", max_count=10, max_bytes=10_000_000)
    size = probe.save("inference", "size", dumps, analysis).size
    store = CaptureStore(tmp_path / "store", max_count=10, max_bytes=2 * size + size // 2)
    start = time.time() - 100

    for number in range(4):
        store.save("inference", f"reason{number}", _at(dumps, start + number), analysis)

    assert [capture.reason for capture in store.list()] == ["reason3", "reason2"]
    assert store.total_bytes() <= store.max_bytes
    assert len(os.listdir(tmp_path / "store")) == 2


def test_the_newest_capture_is_kept_even_alone_over_the_byte_limit(real_capture, tmp_path: Path) -> None:
    dumps, analysis = real_capture
    store = CaptureStore(tmp_path, max_count=10, max_bytes=10)
    start = time.time() - 100

    store.save("inference", "first", _at(dumps, start), analysis)
    newest = store.save("inference", "second", _at(dumps, start + 1), analysis)

    assert store.list() == [newest]


def test_captures_of_the_same_instant_keep_their_order(real_capture, tmp_path: Path) -> None:
    dumps, analysis = real_capture
    store = CaptureStore(tmp_path, max_count=10, max_bytes=10_000_000)

    names = [store.save("inference", f"same{number}", dumps, analysis).name for number in range(3)]

    assert [capture.name for capture in store.list()] == names[::-1]
    assert len(set(names)) == 3


def test_capture_names_cannot_leave_the_directory(real_capture, tmp_path: Path) -> None:
    dumps, analysis = real_capture
    directory = tmp_path / "captures"
    store = CaptureStore(directory, max_count=5, max_bytes=10_000_000)
    saved = store.save("inference", "api", dumps, analysis)
    outside = tmp_path / "secret.json"
    outside.write_text(saved.path.read_text())
    symlink = "20200101T000000.000000Z-inference-api.json"
    (directory / symlink).symlink_to(outside)
    (directory / ".capture-partial.tmp").write_text("{")
    (directory / "20200101T000000.000001Z-garbage.json").write_text("not json")

    for name in (
        "../secret.json",
        str(outside),
        "..",
        "",
        ".capture-partial.tmp",
        f"20200101T000000.000000Z-x/../../{outside.name}",
        "20200101T000000.000000Z-missing.json",
        symlink,
        "20200101T000000.000001Z-garbage.json",
    ):
        with pytest.raises(CaptureNotFound):
            store.load(name)
        if name != "20200101T000000.000001Z-garbage.json":
            with pytest.raises(CaptureNotFound):
                store.read_bytes(name)
    assert [capture.name for capture in store.list()] == [saved.name]  # junk is not listed


def test_a_capture_saved_before_the_store_used_pydantic_loads_and_saves_the_same(tmp_path: Path) -> None:
    # Written by the hand-written to_dict of 0.x from a real capture of the deadlocked service.
    old = FIXTURES / "20261206T154504.260344Z-inference-probe_failing.json"
    store = CaptureStore(tmp_path / "old", max_count=5, max_bytes=10_000_000)
    store.directory.mkdir()
    (store.directory / old.name).write_bytes(old.read_bytes())

    [listed] = store.list()
    loaded = store.load(old.name)

    assert (listed.service, listed.reason, listed.pid, listed.deadlock_suspected) == (
        "inference",
        "probe_failing",
        30820,
        True,
    )
    assert loaded.analysis.deadlock_suspected and len(loaded.dumps) == 2
    assert {thread.name: thread.state for thread in loaded.analysis.threads} == {
        "MainThread": "blocked",
        "worker-a": "blocked",
        "worker-b": "blocked",
    }
    assert loaded.analysis.threads[1].where is not None
    assert loaded.analysis.threads[1].where.location == "tests/stuck_services.py:48"
    again = CaptureStore(tmp_path / "again").save("inference", "probe_failing", loaded.dumps, loaded.analysis)
    assert json.loads(again.path.read_bytes()) == json.loads(old.read_bytes())  # the format did not change


def test_a_capture_file_that_is_not_a_capture_is_not_found(tmp_path: Path) -> None:
    store = CaptureStore(tmp_path, max_count=5, max_bytes=10_000_000)
    name = "20200101T000000.000000Z-inference-api.json"
    (tmp_path / name).write_text(json.dumps({"service": "inference", "reason": "api", "time": "soon"}))

    assert store.list() == []
    with pytest.raises(CaptureNotFound, match="cannot be read"):
        store.load(name)


def test_store_limits_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        CaptureStore(tmp_path, max_count=0, max_bytes=1)
    with pytest.raises(ValueError):
        CaptureStore(tmp_path, max_count=1, max_bytes=0)
    assert CaptureStore(tmp_path / "absent").list() == []
