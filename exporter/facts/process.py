"""What the process collector hands to the verdict: each service's process tree, one membership per cycle."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..base.thresholds import WORKER_STUCK_READINGS

# A child in one of these states is stuck whatever its counters say (WorkerFacts.stuck says when):
# stopped (SIGSTOP, a debugger) or blocked in the kernel. A zombie is dead, not stuck (DeadWorker).
STUCK_STATES = ("stopped", "disk_sleep")


@dataclass(frozen=True)
class WorkerFacts:
    """One child process of the service (vLLM's engine core, a server's worker)."""

    pid: int
    ppid: int
    name: str  # what it calls itself: argv[0] or its setproctitle title
    state: str  # one of procfs.THREAD_STATE_NAMES (of its main thread)
    start_ticks: int
    cpu_user_seconds: float
    cpu_system_seconds: float
    threads: int
    thread_states: dict[str, int]
    voluntary_ctxt_switches: int
    involuntary_ctxt_switches: int
    state_readings: int = 1  # readings in a row it has been in this state
    idle_readings: int = 0  # readings in a row it used no CPU and made no context switch (the worker only)
    idle_since: float | None = None  # time.time() of the first of them
    letter: str = "?"  # the state as /proc and ps show it: R, S, D, T (a signal), t (a tracer), Z, I, X
    exit_code: int | None = None  # a zombie's exit status, as waitpid(2) reports it

    @property
    def stuck(self) -> bool:
        """Stopped by a signal (T: SIGSTOP stays until SIGCONT) at once; held by a tracer (t) or blocked
        in the kernel (D) at WORKER_STUCK_READINGS readings in a row (a debugger or py-spy holds a
        process for a moment, I/O blocks one for a moment). A zombie is not stuck but dead
        (ServiceFacts.dead_worker)."""
        if self.state not in STUCK_STATES:
            return False
        return self.letter == "T" or self.state_readings >= WORKER_STUCK_READINGS


@dataclass(frozen=True)
class DeadWorker:
    """The service's worker that died while its parent lived on (vLLM's engine core killed: its API
    server answers 500, closes its port a few seconds later and exits a minute after that)."""

    pid: int
    name: str
    parent_pid: int  # the service's main process when it died
    last_seen_at: float | None  # time.time() of the last reading that saw it alive; None: never seen so
    found_at: float  # time.time() of the reading that found it gone or a zombie
    ended: str | None = None  # how it ended, when its parent had not reaped it yet: "killed by SIGKILL"


@dataclass
class ServiceFacts:
    name: str
    pids: list[int] = field(default_factory=list)
    main_pid: int | None = None  # the oldest process: where stacks and the environment are read
    start_time: float = 0.0
    restarts: int = 0
    cpu_user_seconds: float = 0.0
    cpu_system_seconds: float = 0.0
    rss_bytes: int = 0
    threads: int = 0
    open_fds: int = 0
    thread_states: dict[str, int] = field(default_factory=dict)
    voluntary_ctxt_switches: int = 0
    involuntary_ctxt_switches: int = 0
    listening_ports: list[int] = field(default_factory=list)
    expected_port: int | None = None
    expected_port_listening: bool = False
    # Processes outside the service that listen on its expected port: (pid, command line, redacted).
    port_taken_by: list[tuple[int, str]] = field(default_factory=list)
    child_processes: int = 0
    # The children read this cycle (at most MAX_WORKERS_READ), stuck ones first, then by CPU used.
    children: list[WorkerFacts] = field(default_factory=list)
    worker: WorkerFacts | None = None  # the direct child whose subtree works most: vLLM's engine core
    # The worker seen alive at WORKER_SEEN_READINGS readings (or after WORKER_SEEN_SECONDS of life)
    # that died while the main process lived; kept while that process lives (or none does: it exited
    # after), until a new main process or a new worker takes over, or for DEAD_WORKER_RECENT_SECONDS
    # while the service serves.
    dead_worker: DeadWorker | None = None

    @property
    def up(self) -> bool:
        return bool(self.pids)

    @property
    def stuck_child(self) -> WorkerFacts | None:
        """A child stopped or blocked in the kernel: the first suspect when the service hangs."""
        return next((child for child in self.children if child.stuck), None)


@dataclass(frozen=True)
class ProcessFacts:
    services: dict[str, ServiceFacts]
