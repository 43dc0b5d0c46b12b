"""What several stack dumps of one process say: which threads are blocked, busy, running or idle.

Pure functions over Dumps (no I/O), so recorded captures can be re-read and tested.

Per thread, over the dumps it appears in:
- blocked: the stack (Python frames, lines included) is the same in every dump, py-spy saw the
  thread idle every time, and it waits on a synchronisation primitive: a lock or semaphore
  acquire, Condition.wait, Event.wait, Queue.get/put, Thread.join, Future.result, Barrier.wait.
  `where` is the innermost frame in the application's own code (not the standard library), the
  line that asked for the lock.
- busy: the stack is the same down to the function (the innermost line may move, as a loop's
  does), and the thread was on a CPU in most dumps: a CPU-bound loop, "spinning at file:line".
- idle: off CPU in every dump and not blocked: the normal waits of a server (select/poll, accept,
  sleep, socket reads, a pool worker waiting for work), or a blocking wait whose stack moved.
- running: anything else (the stack changed while the thread was working).

What a thread waits on comes from its frames: first the standard library's Python frames at the
top of the stack (threading.py Condition.wait, queue.py get, ...), then the native frames above
the innermost Python frame when the dump has them: `with lock:` shows no Python frame for the
acquire, only the C functions under it. Interpreter builds name those differently, so every name
a build may show counts (see _native_wait): a self-built CPython shows its static functions
(`lock_PyThread_acquire_lock`, `time_sleep`, `sock_recv`); a distribution's stripped one
(Debian's /usr/bin/python3.11) only its exported API (`PyThread_acquire_lock_timed`) and libc's
(`clock_nanosleep`, `recv`, `accept4`, `select`); 3.13 and later park lock waits in `PyMutex`
and the parking lot. A stripped build cannot tell a C SimpleQueue.get() from a lock: both are
`PyThread_acquire_lock_timed` under the application's line, read as a lock.
Without native frames, a wait inside a C call made from application code is "unknown" and the
thread is reported idle, never blocked: a `time.sleep()` must not read as a deadlock.

A thread waiting on a queue, condition or event with only standard-library frames on its stack
(a ThreadPoolExecutor worker, a multiprocessing pool's handler) is waiting for work: idle.

A deadlock is suspected when two or more threads are blocked on locks, or when every thread but
the main one is blocked and at least one of them on a lock.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .pyspy import Dump, Frame, ThreadStack

STATES = ("blocked", "busy", "running", "idle")

# What a thread waits on. The first group makes a thread that does not move "blocked".
BLOCKING_WAITS = ("lock", "semaphore", "condition", "event", "queue", "join", "future", "barrier")
LOCK_WAITS = ("lock", "semaphore")
_WAIT_WORDS = {
    "lock": "a lock",
    "semaphore": "a semaphore",
    "condition": "a condition",
    "event": "an event",
    "queue": "a queue",
    "join": "a thread join",
    "future": "a future",
    "barrier": "a barrier",
    "select": "select/poll",
    "accept": "accept",
    "sleep": "sleep",
    "io": "I/O",
    "work": "work",
    "gil": "the GIL",
    "unknown": "a call into C",
}

# Standard-library Python frames that wait: (file path suffix, function name or qualname) -> wait.
# py-spy gives qualnames ("Condition.wait") from Python 3.11 on, plain names before.
_STDLIB_WAITS: dict[tuple[str, str], str] = {}
for _suffix, _functions, _wait in (
    ("threading.py", ("Event.wait",), "event"),
    ("threading.py", ("Barrier.wait", "Barrier._wait", "Barrier._enter"), "barrier"),
    ("threading.py", ("Condition.wait", "Condition.wait_for", "wait", "wait_for"), "condition"),
    (
        "threading.py",
        ("Thread.join", "Thread._wait_for_tstate_lock", "join", "_wait_for_tstate_lock", "_shutdown"),
        "join",
    ),
    ("threading.py", ("Semaphore.acquire", "BoundedSemaphore.acquire"), "semaphore"),
    ("threading.py", ("_RLock.acquire", "_PyRLock.acquire"), "lock"),
    ("queue.py", ("Queue.get", "Queue.put", "_PySimpleQueue.get", "get", "put"), "queue"),
    ("concurrent/futures/_base.py", ("Future.result", "Future.exception", "result", "exception"), "future"),
    ("concurrent/futures/_base.py", ("wait", "as_completed"), "future"),
    ("concurrent/futures/thread.py", ("_worker",), "work"),
    ("multiprocessing/pool.py", ("worker", "_handle_workers", "_handle_tasks", "_handle_results"), "work"),
    ("multiprocessing/queues.py", ("Queue.get", "get"), "queue"),
    ("multiprocessing/synchronize.py", ("SemLock.__enter__", "__enter__"), "lock"),
    ("multiprocessing/connection.py", ("wait", "Connection._recv", "_recv", "recv", "poll"), "io"),
    ("selectors.py", ("select",), "select"),
    ("selectors.py", tuple(f"{cls}.select" for cls in ("SelectSelector", "_PollLikeSelector")), "select"),
    ("selectors.py", tuple(f"{cls}.select" for cls in ("EpollSelector", "KqueueSelector")), "select"),
    ("socketserver.py", ("BaseServer.serve_forever", "serve_forever"), "select"),
    ("asyncio/base_events.py", ("BaseEventLoop.run_forever", "BaseEventLoop._run_once"), "select"),
    ("asyncio/base_events.py", ("run_forever", "_run_once"), "select"),
    ("socket.py", ("socket.accept", "accept"), "accept"),
    ("socket.py", ("SocketIO.readinto", "readinto"), "io"),
    (
        "ssl.py",
        ("SSLSocket.read", "SSLSocket.recv", "SSLSocket.recv_into", "read", "recv", "recv_into"),
        "io",
    ),
    ("subprocess.py", ("Popen.wait", "Popen._wait", "Popen._try_wait", "Popen.communicate"), "io"),
):
    for _function in _functions:
        _STDLIB_WAITS[(_suffix, _function)] = _wait
del _suffix, _functions, _wait, _function

# Native (C) frames above the innermost Python frame, in three groups tried in turn (see
# _native_wait). Interpreter functions match as substrings (`select_poll` is select_poll_poll_impl).
# Waiting to take the GIL back (after a sleep or a read returned, or to run at all).
_GIL_WAITS = ("take_gil", "PyEval_RestoreThread", "PyEval_AcquireThread", "PyGILState_Ensure")
# What the Python code called: the C function behind a method, where the build names it.
_CALLED_WAITS = (
    ("lock_PyThread_acquire_lock", "lock"),  # _thread.lock.acquire up to 3.13
    ("_thread_lock_acquire", "lock"),  # 3.14
    ("rlock_acquire", "lock"),
    ("_thread_RLock_acquire", "lock"),
    ("semlock_acquire", "lock"),  # multiprocessing's locks and semaphores
    ("_multiprocessing_SemLock_acquire", "lock"),
    ("_queue_SimpleQueue_get", "queue"),
    ("ThreadHandle_join", "join"),  # 3.13: Thread.join in C
    ("time_sleep", "sleep"),
    ("pysleep", "sleep"),
    ("select_poll", "select"),
    ("select_epoll", "select"),
    ("select_select", "select"),
    ("select_devpoll", "select"),
    ("select_kqueue", "select"),
    ("sock_accept", "accept"),
    ("sock_recv", "io"),
    ("sock_send", "io"),
    ("sock_connect", "io"),
    ("_ssl__SSLSocket_read", "io"),
    ("_io_FileIO_read", "io"),
    ("os_read", "io"),
    ("os_waitpid", "io"),
)
# How it waits, where nothing names the call (a stripped build): the interpreter's lock
# primitives, then libc's exported functions by exact name (normalised: `__GI___poll` is poll).
_PRIMITIVE_WAITS = (
    ("PyThread_acquire_lock", "lock"),  # also _timed: every lock and RLock, a C SimpleQueue
    ("_PyMutex_Lock", "lock"),  # 3.13+: _PyMutex_LockTimed, _PyMutex_LockSlow
    ("PyMutex_Lock", "lock"),
    ("_PyRecursiveMutex_Lock", "lock"),
    ("_PyParkingLot_Park", "lock"),
    ("_PySemaphore_Wait", "lock"),
)
_LIBC_WAITS = {
    name: wait
    for wait, names in (
        ("lock", ("sem_wait", "sem_timedwait", "sem_clockwait", "new_sem_wait_slow", "do_futex_wait")),
        ("lock", ("pthread_mutex_lock", "pthread_mutex_timedlock", "pthread_mutex_clocklock")),
        ("lock", ("lll_lock_wait", "pthread_rwlock_rdlock", "pthread_rwlock_wrlock")),
        ("sleep", ("clock_nanosleep", "nanosleep", "usleep")),
        ("select", ("select", "pselect", "poll", "ppoll", "epoll_wait", "epoll_pwait", "epoll_pwait2")),
        ("accept", ("accept", "accept4")),
        ("io", ("recv", "recvfrom", "recvmsg", "read", "readv", "pread")),
        ("io", ("send", "sendto", "sendmsg", "write", "writev", "connect")),
        ("io", ("waitpid", "wait4", "waitid")),
    )
    for name in names
}
# A condition variable the interpreter itself waits on is the GIL: its locks are semaphores on
# Linux, and a stripped build does not name take_gil (nor does an optimised one inline it away).
_CONDITION_WAITS = ("pthread_cond_wait", "pthread_cond_timedwait", "pthread_cond_clockwait")
_LIBC_DECORATION = re.compile(r"^_+(?:GI_+|libc_+)?|(?:_time64|64|_nocancel)$")
_INTERPRETER_MODULE = re.compile(r"^(?:lib)?python\d")

_STDLIB_PATH = re.compile(r"/lib/(?:pypy|python)\d+(?:\.\d+)?t?/(?!(?:site|dist)-packages/)")


@dataclass(frozen=True)
class ThreadReport:
    thread_id: int
    os_thread_id: int | None
    name: str  # the thread's name, or "thread TID" when it has none
    state: str  # one of STATES
    waiting_on: str | None  # a key of _WAIT_WORDS, None when it is not waiting
    where: Frame | None  # blocked: the application line that waits; busy: where it spins; else the top frame
    samples: int  # dumps the thread appears in
    active_samples: int  # of those, dumps where py-spy saw it on a CPU
    description: str  # one sentence


@dataclass(frozen=True)
class Analysis:
    pid: int
    dumps: int  # how many dumps were compared
    span_seconds: float  # from the first dump to the last
    native: bool  # whether every dump had native frames
    threads: tuple[ThreadReport, ...]
    deadlock_suspected: bool
    summary: str  # one sentence: the deadlock with its lines, else blocked/busy threads, else all is well

    def counts(self) -> dict[str, int]:
        """Threads by state; every state is present (0 when none)."""
        counted = Counter(thread.state for thread in self.threads)
        return {state: counted.get(state, 0) for state in STATES}

    def in_state(self, state: str) -> tuple[ThreadReport, ...]:
        return tuple(thread for thread in self.threads if thread.state == state)


def is_stdlib(filename: str) -> bool:
    """Whether a frame's file is Python's standard library (site-packages are not: they are code
    the service runs, and name its lines better than threading.py does)."""
    return filename.startswith("<frozen ") or bool(_STDLIB_PATH.search(filename))


def analyse(dumps: Sequence[Dump]) -> Analysis:
    """Classify every thread seen in the dumps (see the module's docstring for the rules)."""
    ordered = sorted(dumps, key=lambda d: d.time)
    samples: dict[tuple[int, int | None], list[ThreadStack]] = {}
    for one in ordered:
        for thread in one.threads:
            samples.setdefault((thread.thread_id, thread.os_thread_id), []).append(thread)
    pid = ordered[0].pid if ordered else 0
    reports = tuple(_classify(stacks, len(ordered)) for stacks in samples.values())
    # Within a state, threads alone at their line first: the two threads of a deadlock, before the
    # request threads that then pile up waiting on one of their locks.
    crowd = Counter((r.state, _location(r)) for r in reports)
    reports = tuple(
        sorted(reports, key=lambda r: (STATES.index(r.state), crowd[r.state, _location(r)], r.name))
    )
    deadlock, sentence = _deadlock(reports, pid)
    return Analysis(
        pid=pid,
        dumps=len(ordered),
        span_seconds=round(ordered[-1].time - ordered[0].time, 3) if ordered else 0.0,
        native=bool(ordered) and all(d.native for d in ordered),
        threads=reports,
        deadlock_suspected=deadlock,
        summary=sentence or _summary(reports, len(ordered)),
    )


def waiting_on(thread: ThreadStack) -> tuple[str | None, Frame | None]:
    """What one thread's stack waits on, and the frame that asked (see the module docstring)."""
    python = thread.python_frames
    app = next((frame for frame in python if not is_stdlib(frame.filename)), None)
    wait = _stdlib_wait(python)
    if wait is None:
        wait = _native_wait(thread.frames)
    if wait is None and thread.frames and python and not thread.active:
        wait = "unknown"  # off CPU inside a C call we cannot name
    if wait in ("queue", "condition", "event") and app is None:
        wait = "work"  # a standard-library worker (thread pool, multiprocessing pool) waiting for work
    return wait, (app or (python[0] if python else None))


def _stdlib_wait(python: tuple[Frame, ...]) -> str | None:
    """The outermost recognised wait among the standard-library frames at the top of the stack
    (Queue.get calls Condition.wait: the queue is what the application waits on)."""
    found = None
    for frame in python:
        if not is_stdlib(frame.filename):
            break
        wait = _stdlib_frame_wait(frame)
        if wait is not None:
            found = wait
    return found


def _stdlib_frame_wait(frame: Frame) -> str | None:
    path = frame.filename.replace("\\", "/")
    for (suffix, name), wait in _STDLIB_WAITS.items():
        if frame.function == name and (path.endswith("/" + suffix) or path == suffix):
            return wait
    return None


def _native_wait(frames: tuple[Frame, ...]) -> str | None:
    """What the native frames above the innermost Python frame wait on: the GIL (innermost first:
    a sleep that returned and waits to run again waits for the GIL, not in the sleep); else what
    the Python code called, where the build names it; else the primitive it waits in."""
    innermost_python = next((i for i, frame in enumerate(frames) if not frame.native), None)
    if innermost_python is None:
        return None  # no Python frame: nothing the service's code waits on
    above = frames[:innermost_python]  # innermost first
    for index, frame in enumerate(above):
        if any(marker in frame.function for marker in _GIL_WAITS):
            return "gil"
        if _libc_name(frame.function) in _CONDITION_WAITS and all(
            _in_interpreter(between) for between in above[index + 1 :]
        ):
            return "gil"
    for table in (_CALLED_WAITS, _PRIMITIVE_WAITS):
        for frame in above:
            for marker, wait in table:
                if marker in frame.function:
                    return wait
    for frame in above:
        found = _LIBC_WAITS.get(_libc_name(frame.function))
        if found is not None:
            return found
    return None


def _libc_name(function: str) -> str:
    """A libc function's public name: `__GI___poll` -> poll, `___pthread_cond_timedwait64` ->
    pthread_cond_timedwait, `__new_sem_wait_slow64` -> new_sem_wait_slow."""
    return _LIBC_DECORATION.sub("", function)


def _in_interpreter(frame: Frame) -> bool:
    """A native frame of the Python interpreter itself (its binary or libpython, named or not),
    not a C extension's code."""
    return bool(_INTERPRETER_MODULE.match(os.path.basename(frame.filename)))


def _classify(stacks: list[ThreadStack], total: int) -> ThreadReport:
    last = stacks[-1]
    name = last.name or f"thread {last.os_thread_id or last.thread_id}"
    active = sum(1 for s in stacks if s.active)
    python = [tuple((f.function, f.filename, f.line) for f in s.python_frames) for s in stacks]
    compared = len(stacks) >= 2 and len(stacks) == total  # seen in every dump, and more than one
    same = compared and all(p == python[0] for p in python)
    same_function = (
        compared and bool(python[0]) and all(_function_stack(p) == _function_stack(python[0]) for p in python)
    )
    wait, app_frame = waiting_on(last)
    top = last.python_frames[0] if last.python_frames else (last.frames[0] if last.frames else None)

    if same and active == 0 and wait in BLOCKING_WAITS:
        where = app_frame
        state = "blocked"
        description = f"{name} blocked on {_WAIT_WORDS[wait]} at {_at(where)}"
    elif same_function and active * 2 > len(stacks):
        where = _most_common_line(stacks)
        state = "busy"
        description = f"{name} busy, spinning in {where.function} at {where.location}"
        wait = None
    elif active == 0 and wait != "gil":
        where = app_frame or top
        state = "idle"
        wait = wait or "unknown"
        description = f"{name} idle ({_WAIT_WORDS[wait]}) at {_at(where)}"
    else:
        where = top
        state = "running"
        description = f"{name} running, at {_at(where)}" + (" (waiting for the GIL)" if wait == "gil" else "")
        wait = "gil" if wait == "gil" else None
    return ThreadReport(
        thread_id=last.thread_id,
        os_thread_id=last.os_thread_id,
        name=name,
        state=state,
        waiting_on=wait,
        where=where,
        samples=len(stacks),
        active_samples=active,
        description=description,
    )


def _function_stack(frames: tuple[tuple[str, str, int], ...]) -> tuple[tuple[str, str, int], ...]:
    """The stack with the innermost frame's line dropped: a loop moves between its lines."""
    if not frames:
        return frames
    function, filename, _line = frames[0]
    return ((function, filename, 0), *frames[1:])


def _most_common_line(stacks: list[ThreadStack]) -> Frame:
    tops = [s.python_frames[0] for s in stacks if s.python_frames]
    counted = Counter(f.line for f in tops)
    line = counted.most_common(1)[0][0]
    return next(f for f in reversed(tops) if f.line == line)


def _at(frame: Frame | None) -> str:
    if frame is None:
        return "an unknown place (no Python frames)"
    return f"{frame.location} in {frame.function}"


def _is_main(report: ThreadReport, pid: int) -> bool:
    return report.name == "MainThread" or (report.os_thread_id is not None and report.os_thread_id == pid)


def _deadlock(reports: tuple[ThreadReport, ...], pid: int) -> tuple[bool, str]:
    on_locks = [r for r in reports if r.state == "blocked" and r.waiting_on in LOCK_WAITS]
    workers = [r for r in reports if not _is_main(r, pid)]
    if len(on_locks) >= 2:
        # One name per line: the threads waiting at a line another one already waits at are counted.
        at: dict[str, list[ThreadReport]] = {}
        for report in on_locks:
            at.setdefault(_location(report), []).append(report)
        names = [r.name for r in on_locks if at[_location(r)][0] is r]
        more = len(on_locks) - len(at)
        listed = _names(names + ([f"{more} more"] if more else []))
        return True, f"threads {listed} blocked on locks at {', '.join(at)} (possible deadlock)"
    if on_locks and workers and all(r.state == "blocked" for r in workers):
        parts = ", ".join(
            f"{r.name} on {_WAIT_WORDS[r.waiting_on or 'unknown']} at {_location(r)}" for r in workers
        )
        return True, f"all worker threads blocked: {parts} (possible deadlock)"
    return False, ""


def _summary(reports: tuple[ThreadReport, ...], dumps: int) -> str:
    if dumps == 0:
        return "no stack dumps to compare"
    parts = []
    for state, what in _SUMMARY_DETAILS:
        threads = [r for r in reports if r.state == state]
        if threads:
            listed = ", ".join(f"{r.name} {what(r)} at {_location(r)}" for r in threads[:3])
            more = f" and {len(threads) - 3} more" if len(threads) > 3 else ""
            parts.append(f"{len(threads)} thread{'s' if len(threads) > 1 else ''} {state}: {listed}{more}")
    if parts:
        return "; ".join(parts)
    counted = Counter(r.state for r in reports)
    states = ", ".join(f"{counted[s]} {s}" for s in STATES if counted[s])
    return (
        f"no blocked or busy threads ({states or 'no threads'}) across {dumps} dump{'s' if dumps > 1 else ''}"
    )


# What the summary says of each blocked or busy thread, before its line.
_SUMMARY_DETAILS: tuple[tuple[str, Callable[[ThreadReport], str]], ...] = (
    ("blocked", lambda r: f"on {_WAIT_WORDS[r.waiting_on or 'unknown']}"),
    ("busy", lambda r: f"in {r.where.function if r.where else '?'}"),
)


def _location(report: ThreadReport) -> str:
    return report.where.location if report.where else "?"


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
