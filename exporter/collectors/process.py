"""The service's processes: alive, listening, restarted, and what their threads are doing.

Which processes are the service's comes from the shared ServiceMatcher (linux/processes.py: any
of command-line regex, executable, pidfile or listening port claims a process, optionally with
its children); their counters are read fresh here. Every service has all of its series from the
first scrape on: a service with no process reports up 0 and zeros. A process that exits while we
read it is simply not counted: that race is normal.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import replace

from ..base.thresholds import (
    DEAD_WORKER_RECENT_SECONDS,
    WORKER_SEEN_READINGS,
    WORKER_SEEN_SECONDS,
    WORKER_STUCK_READINGS,
)
from ..config import ServiceConfig
from ..facts.process import DeadWorker, ProcessFacts, ServiceFacts, WorkerFacts
from ..linux import procfs
from ..linux.processes import Membership, ProcfsUnreadable, ServiceMatcher
from ..logs.redact import redact
from ..metrics.spec import Families, Family, counter, gauge, info
from .base import Collector, CollectorError, Result

UP = gauge("autoglm_process_up", "1 when at least one process of the service is running, else 0.", "service")
PROCESSES = gauge("autoglm_process_processes", "Number of processes matched for the service.", "service")
RESTARTS = counter(
    "autoglm_process_restarts",
    "Times the service's oldest process was replaced by another since the exporter started.",
    "service",
)
START_TIME = gauge(
    "autoglm_process_start_time_seconds",
    "Start time of the service's oldest process in seconds since the epoch, 0 when none runs.",
    "service",
)
CPU_SECONDS = counter(
    "autoglm_process_cpu_seconds", "CPU time used by the service's processes, by mode.", "service", "mode"
)
RSS = gauge("autoglm_process_resident_memory_bytes", "Resident memory of the service's processes.", "service")
THREADS = gauge("autoglm_process_threads", "Threads in the service's processes.", "service")
OPEN_FDS = gauge("autoglm_process_open_fds", "Open file descriptors of the service's processes.", "service")
THREAD_STATES = gauge(
    "autoglm_process_thread_states", "Threads of the service in each scheduler state.", "service", "state"
)
CONTEXT_SWITCHES = counter(
    "autoglm_process_context_switches",
    "Context switches of ALL threads of the service's processes (voluntary: waited; involuntary: preempted).",
    "service",
    "type",
)
LISTENING = gauge(
    "autoglm_process_listening",
    "1 for each TCP port a process of the service listens on (at most 32 ports a service).",
    "service",
    "port",
)
EXPECTED_PORT = gauge(
    "autoglm_process_expected_port_listening",
    "1 when a process of the service listens on the port it is configured to serve, else 0.",
    "service",
    "port",
)

PORT_TAKEN = gauge(
    "autoglm_process_expected_port_taken",
    "1 when a process that is not part of the service listens on the service's expected port, else 0.",
    "service",
    "port",
)

CHILD_PROCESSES = gauge(
    "autoglm_process_child_processes",
    "Processes below the service's processes in the process tree (its workers, such as vLLM's engine core).",
    "service",
)
WORKER = info(
    "autoglm_process_worker",
    "The service's worker, its child process whose subtree used the most CPU (vLLM's engine core), by "
    "the name it gives itself (setproctitle); absent when the service has no child process.",
    "service",
)
WORKER_PID = gauge(
    "autoglm_process_worker_pid",
    "Process id of the service's worker (its child doing the most work, vLLM's engine core), 0 when none.",
    "service",
)
WORKER_STATE = gauge(
    "autoglm_process_worker_state",
    "1 for the scheduler state of the service's worker process (stopped: SIGSTOP; disk_sleep: blocked in "
    "the kernel; zombie: dead, not reaped), else 0; all 0 when it has no worker.",
    "service",
    "state",
)
WORKER_CPU_SECONDS = counter(
    "autoglm_process_worker_cpu_seconds",
    "CPU time of the service's worker process, by mode (restarts when another process becomes the worker).",
    "service",
    "mode",
)
WORKER_CONTEXT_SWITCHES = counter(
    "autoglm_process_worker_context_switches",
    "Context switches of all threads of the service's worker process, by type (restarts with a new worker).",
    "service",
    "type",
)
WORKER_IDLE_READINGS = gauge(
    "autoglm_process_worker_idle_readings",
    "Readings in a row at which the service's worker process used no CPU and made no context switch.",
    "service",
)

MAX_PORTS_PER_SERVICE = 32
MAX_WORKERS_READ = 16  # child processes of a service read each cycle (the rest are only counted)
MAX_COMMAND_CHARS = 256  # of a process's command line quoted in the verdict
_DEAD_STATES = ("zombie", "dead")  # a worker in one of these has ended, reaped or not


class ProcessCollector(Collector[ProcessFacts]):
    name = "process"
    metrics = (
        UP,
        PROCESSES,
        RESTARTS,
        START_TIME,
        CPU_SECONDS,
        RSS,
        THREADS,
        OPEN_FDS,
        THREAD_STATES,
        CONTEXT_SWITCHES,
        LISTENING,
        EXPECTED_PORT,
        PORT_TAKEN,
        CHILD_PROCESSES,
        WORKER,
        WORKER_PID,
        WORKER_STATE,
        WORKER_CPU_SECONDS,
        WORKER_CONTEXT_SWITCHES,
        WORKER_IDLE_READINGS,
    )
    items_attribute = "services"
    state_per_item = ("_main_process", "_restarts", "_last_worker", "_child_states", "_worker_seen", "_dead")

    def __init__(
        self,
        services: tuple[ServiceConfig, ...],
        proc_root: str = "/proc",
        matcher: ServiceMatcher | None = None,
    ) -> None:
        self.services = services
        self.proc_root = proc_root
        self.settings = (services, proc_root)
        self.matcher = matcher or ServiceMatcher(services, proc_root)
        self._main_process: dict[str, tuple[int, int]] = {}  # service -> (pid, start ticks) of oldest process
        self._restarts: dict[str, int] = {s.name: 0 for s in services}
        self._boot_time: float | None = None
        self._last_look: float | None = None  # when the membership of its previous reading was taken
        self._last_worker: dict[str, WorkerFacts] = {}  # service -> its worker at the previous reading
        self._child_states: dict[str, dict[int, tuple[int, str, int]]] = {}  # pid -> (start, state, readings)
        # service -> its worker alive: (pid, start ticks), readings in a row, the main process then, when
        self._worker_seen: dict[str, tuple[tuple[int, int], int, tuple[int, int] | None, float]] = {}
        self._dead: dict[str, DeadWorker] = {}  # service -> its worker that died while the parent lived

    def collect(self) -> Result[ProcessFacts]:
        try:
            # Never the same look twice: a reading taken again seconds later (to confirm a process
            # gone) must see /proc as it is now, even while the cycle's look is still handed out.
            membership = self.matcher.current(newer_than=self._last_look)
            self._last_look = membership.taken_at
        except ProcfsUnreadable as exc:
            raise CollectorError("os_error", str(exc)) from exc
        facts = {service.name: self._service_facts(service, membership) for service in self.services}
        return Result(self._families(facts), ProcessFacts(facts))

    # --- reading them -----------------------------------------------------------------------

    def _service_facts(self, service: ServiceConfig, membership: Membership) -> ServiceFacts:
        facts = ServiceFacts(service.name, expected_port=service.port)
        ports: set[int] = set()
        for pid in membership.services[service.name]:
            try:
                stat = procfs.parse_pid_stat(procfs.read_text(f"{self.proc_root}/{pid}/stat"))
                threads = procfs.summarize_threads(self.proc_root, pid)
                fds = procfs.count_fds(self.proc_root, pid)
                ports |= membership.cycle.listening_ports(pid)
            except (FileNotFoundError, ProcessLookupError, procfs.ProcParseError):
                continue  # exited while we read it
            except PermissionError:
                threads, fds = procfs.ThreadSummary(), 0
            facts.pids.append(pid)
            facts.cpu_user_seconds += stat.utime_seconds
            facts.cpu_system_seconds += stat.stime_seconds
            facts.rss_bytes += stat.rss_bytes
            facts.threads += stat.num_threads
            facts.open_fds += fds
            facts.voluntary_ctxt_switches += threads.voluntary_ctxt_switches
            facts.involuntary_ctxt_switches += threads.nonvoluntary_ctxt_switches
            for state, count in threads.states.items():
                facts.thread_states[state] = facts.thread_states.get(state, 0) + count
        facts.listening_ports = sorted(ports)
        facts.expected_port_listening = service.port is not None and service.port in ports
        if service.port is not None and not facts.expected_port_listening:
            facts.port_taken_by = self._others_on(service.port, facts.pids, membership)
        self._note_main_process(facts, membership.main.get(service.name))
        self._read_children(facts, membership.children.get(service.name, ()))
        return facts

    def _read_children(self, facts: ServiceFacts, pids: tuple[int, ...]) -> None:
        """The service's child processes, and its worker with how long its counters stood still."""
        facts.child_processes = len(pids)
        children = self._note_states(
            facts.name, [c for pid in pids[:MAX_WORKERS_READ] if (c := self._child(pid))]
        )
        busiest = _busiest_subtree(children)
        facts.dead_worker = self._note_dead_worker(facts, busiest)
        worker = self._note_worker(facts.name, busiest) if busiest is not None else None
        if worker is None:
            self._last_worker.pop(facts.name, None)
        facts.worker = worker
        children = [worker if worker is not None and c.pid == worker.pid else c for c in children]
        facts.children = sorted(
            children, key=lambda c: (not c.stuck, -(c.cpu_user_seconds + c.cpu_system_seconds))
        )

    def _note_states(self, service: str, children: list[WorkerFacts]) -> list[WorkerFacts]:
        """How many readings in a row each child has been in its state (a tracer stops a process for a
        moment; a stuck one stays)."""
        before = self._child_states.get(service, {})
        states: dict[int, tuple[int, str, int]] = {}
        for child in children:
            start, state, count = before.get(child.pid, (-1, "", 0))
            same = (start, state) == (child.start_ticks, child.state)
            states[child.pid] = (child.start_ticks, child.state, count + 1 if same else 1)
        self._child_states[service] = states
        return [replace(child, state_readings=states[child.pid][2]) for child in children]

    def _child(self, pid: int) -> WorkerFacts | None:
        try:
            stat = procfs.parse_pid_stat(procfs.read_text(f"{self.proc_root}/{pid}/stat"))
            name = procfs.read_process_name(self.proc_root, pid) or stat.comm
        except (FileNotFoundError, ProcessLookupError, procfs.ProcParseError):
            return None  # exited while we read it
        try:
            threads = procfs.summarize_threads(self.proc_root, pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            threads = procfs.ThreadSummary()
        return WorkerFacts(
            pid,
            stat.ppid,
            name,
            procfs.THREAD_STATES.get(stat.state, "sleeping"),
            stat.start_ticks,
            stat.utime_seconds,
            stat.stime_seconds,
            stat.num_threads,
            threads.states,
            threads.voluntary_ctxt_switches,
            threads.nonvoluntary_ctxt_switches,
            letter=stat.state,
            exit_code=stat.exit_code if stat.state == "Z" else None,
        )

    def _note_dead_worker(self, facts: ServiceFacts, worker: WorkerFacts | None) -> DeadWorker | None:
        """The worker that died while the service's main process lived (ServiceFacts.dead_worker)."""
        name, now = facts.name, time.time()
        main = self._main_process.get(name) if facts.up else None
        seen = self._worker_seen.pop(name, None)
        if worker is not None and worker.state not in _DEAD_STATES:
            key = (worker.pid, worker.start_ticks)
            count = seen[1] + 1 if seen is not None and seen[0] == key else 1
            self._worker_seen[name] = (key, count, main, now)
        dead = self._dead.get(name)
        if dead is not None and self._past(dead, facts, worker, main, now):
            del self._dead[name]
            dead = None
        if dead is not None or main is None:
            return dead
        if (
            worker is not None
            and worker.state in _DEAD_STATES
            and worker.state_readings >= WORKER_STUCK_READINGS
        ):
            # A zombie its parent has not reaped for a while, whether or not we saw it alive.
            found = DeadWorker(
                worker.pid, worker.name, main[0], None, now, exit_status(worker.exit_code) or None
            )
            self._dead[name] = found
            return found
        if seen is None:
            return None
        (pid, start), readings, parent, last_seen = seen
        started = self._boot() + start / procfs.CLOCK_TICKS
        known = readings >= WORKER_SEEN_READINGS or last_seen - started >= WORKER_SEEN_SECONDS
        if not known or parent != main:
            return None  # a passing child, or its parent is another process now (a restart)
        ended = _ended(self.proc_root, pid, start)
        if ended is None:
            return None  # alive still (another child is the busiest now)
        before = self._last_worker.get(name)
        what = before.name if before is not None and before.pid == pid else f"pid {pid}"
        self._dead[name] = DeadWorker(pid, what, main[0], last_seen, now, ended or None)
        return self._dead[name]

    def _past(
        self,
        dead: DeadWorker,
        facts: ServiceFacts,
        worker: WorkerFacts | None,
        main: tuple[int, int] | None,
        now: float,
    ) -> bool:
        """Whether the service is past its dead worker: another main process runs, a worker started
        since took its place (a server replaced it), or it has served on without it for
        DEAD_WORKER_RECENT_SECONDS. Never while no process runs: its parent exited after it."""
        if main is None:
            return False
        if main[0] != dead.parent_pid:
            return True
        if worker is not None and worker.pid != dead.pid and worker.state not in _DEAD_STATES:
            started = self._boot() + worker.start_ticks / procfs.CLOCK_TICKS
            if started >= (dead.last_seen_at or dead.found_at) - 1.0:  # started after it was last seen alive
                return True
        serving = facts.expected_port is None or facts.expected_port_listening
        return serving and now - dead.found_at > DEAD_WORKER_RECENT_SECONDS

    def _note_worker(self, service: str, worker: WorkerFacts) -> WorkerFacts:
        """Readings in a row at which the same worker used no CPU and made no context switch."""
        before = self._last_worker.get(service)
        idle = (
            before is not None
            and (before.pid, before.start_ticks) == (worker.pid, worker.start_ticks)
            and _counters(before) == _counters(worker)
        )
        if idle and before is not None:
            worker = replace(
                worker, idle_readings=before.idle_readings + 1, idle_since=before.idle_since or time.time()
            )
        self._last_worker[service] = worker
        return worker

    def _others_on(self, port: int, mine: list[int], membership: Membership) -> list[tuple[int, str]]:
        """(pid, command) of the processes outside the service that listen on its port."""
        others = []
        for pid in membership.port_owners.get(port, ()):
            stat = membership.cycle.stat(pid)
            if stat is not None and pid not in mine:
                others.append((pid, self._command(pid, stat.comm)))
        return others

    def _command(self, pid: int, comm: str) -> str:
        """The command line as a person reads it, secrets masked and cut short; its name if unreadable."""
        try:
            command = procfs.read_cmdline(self.proc_root, pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            command = ""
        command = redact(command or comm)
        return command if len(command) <= MAX_COMMAND_CHARS else command[: MAX_COMMAND_CHARS - 3] + "..."

    def _note_main_process(self, facts: ServiceFacts, main: tuple[int, int] | None) -> None:
        """The main (oldest) process, its start time, and a restart when it is another one."""
        if main is not None and main[0] in facts.pids:
            facts.main_pid = main[0]
            facts.start_time = self._boot() + main[1] / procfs.CLOCK_TICKS
            previous = self._main_process.get(facts.name)
            if previous is not None and previous != main:
                self._restarts[facts.name] += 1
            self._main_process[facts.name] = main
        facts.restarts = self._restarts[facts.name]

    def _boot(self) -> float:
        if self._boot_time is None:
            self._boot_time = procfs.parse_stat(procfs.read_text(f"{self.proc_root}/stat")).boot_time
        return self._boot_time

    # --- metrics ------------------------------------------------------------------------------

    def _families(self, services: dict[str, ServiceFacts]) -> list[Family]:
        families = Families(self.metrics)
        add = families.add

        for name, facts in services.items():
            add(UP, [name], 1 if facts.up else 0)
            add(PROCESSES, [name], len(facts.pids))
            add(RESTARTS, [name], facts.restarts)
            add(START_TIME, [name], facts.start_time)
            add(CPU_SECONDS, [name, "user"], facts.cpu_user_seconds)
            add(CPU_SECONDS, [name, "system"], facts.cpu_system_seconds)
            add(RSS, [name], facts.rss_bytes)
            add(THREADS, [name], facts.threads)
            add(OPEN_FDS, [name], facts.open_fds)
            for state in procfs.THREAD_STATE_NAMES:
                add(THREAD_STATES, [name, state], facts.thread_states.get(state, 0))
            add(CONTEXT_SWITCHES, [name, "voluntary"], facts.voluntary_ctxt_switches)
            add(CONTEXT_SWITCHES, [name, "involuntary"], facts.involuntary_ctxt_switches)
            for port in facts.listening_ports[:MAX_PORTS_PER_SERVICE]:
                add(LISTENING, [name, str(port)], 1)
            if facts.expected_port is not None:
                port_label = [name, str(facts.expected_port)]
                add(EXPECTED_PORT, port_label, 1 if facts.expected_port_listening else 0)
                add(PORT_TAKEN, port_label, 1 if facts.port_taken_by else 0)
            self._worker_families(add, name, facts)
        return families.list()

    @staticmethod
    def _worker_families(add: Callable[..., None], name: str, facts: ServiceFacts) -> None:
        worker = facts.worker
        add(CHILD_PROCESSES, [name], facts.child_processes)
        add(WORKER_PID, [name], worker.pid if worker is not None else 0)
        for state in procfs.THREAD_STATE_NAMES:
            add(WORKER_STATE, [name, state], 1 if worker is not None and worker.state == state else 0)
        if worker is None:
            return
        add(WORKER, [name], {"name": worker.name})
        add(WORKER_CPU_SECONDS, [name, "user"], worker.cpu_user_seconds)
        add(WORKER_CPU_SECONDS, [name, "system"], worker.cpu_system_seconds)
        add(WORKER_CONTEXT_SWITCHES, [name, "voluntary"], worker.voluntary_ctxt_switches)
        add(WORKER_CONTEXT_SWITCHES, [name, "involuntary"], worker.involuntary_ctxt_switches)
        add(WORKER_IDLE_READINGS, [name], worker.idle_readings)


def _busiest_subtree(children: list[WorkerFacts]) -> WorkerFacts | None:
    """The direct child of the service whose subtree used the most CPU: vLLM's engine core (whose own
    worker process computes), a server's worker; the oldest of equals."""
    ppid = {c.pid: c.ppid for c in children}
    used: dict[int, float] = {}
    for child in children:
        top = child.pid
        while ppid[top] in ppid:  # climb to the child of the service's own processes
            top = ppid[top]
        used[top] = used.get(top, 0.0) + child.cpu_user_seconds + child.cpu_system_seconds
    tops = [c for c in children if c.pid in used]
    return max(tops, key=lambda c: (used[c.pid], -c.start_ticks), default=None)


def _counters(worker: WorkerFacts) -> tuple[float, float, int, int]:
    return (
        worker.cpu_user_seconds,
        worker.cpu_system_seconds,
        worker.voluntary_ctxt_switches,
        worker.involuntary_ctxt_switches,
    )


def _ended(proc_root: str, pid: int, start_ticks: int) -> str | None:
    """How the process `pid` (started at `start_ticks`) ended: None while it lives, "" when it is
    gone (reaped: how is not known), its exit status while it is a zombie."""
    try:
        stat = procfs.parse_pid_stat(procfs.read_text(f"{proc_root}/{pid}/stat"))
    except (FileNotFoundError, ProcessLookupError, procfs.ProcParseError):
        return ""
    except PermissionError:
        return None
    if stat.start_ticks != start_ticks:
        return ""  # its pid was taken by another process since
    if procfs.THREAD_STATES.get(stat.state) not in _DEAD_STATES:
        return None
    return exit_status(stat.exit_code)


def exit_status(code: int | None) -> str:
    """A waitpid(2) status in words: "killed by SIGKILL", "exited with status 1"."""
    if code is None:
        return ""
    if code & 0x7F:
        number = code & 0x7F
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name}" + (" (core dumped)" if code & 0x80 else "")
    return f"exited with status {(code >> 8) & 0xFF}"
