"""A service's worker child stuck or dead while its parent answers: vLLM's engine core, a server's worker.

vLLM serves from an API server and computes in a child process (renamed `VLLM::EngineCore`, which
no command-line rule of the API server matches). Stop, block or kill that child and the parent
goes on answering `/health` with 200 for a while, so a failure of the service is judged against
its child processes too (the process collector reads them from the service's process tree), and
the one at fault is named with its pid:

- `service/worker_died`: the worker (seen alive at WORKER_SEEN_READINGS readings or after
  WORKER_SEEN_SECONDS of life: not a passing child) is gone or a zombie while its parent lives, and
  the service is broken since: its port is closed while the parent lives, or the parent exited
  after it (vLLM's API server closes its port seconds after its engine core dies and exits a minute
  later), or a probe of it failed or hangs. The death is what broke first, so it stays the verdict
  through the parent's exit, until a new main process or a new worker takes over;
- `stall/worker_stuck`: a child stopped by a signal (T: SIGSTOP) is stuck at once; one held by a
  tracer (t) or blocked in the kernel (D) at WORKER_STUCK_READINGS readings in a row (py-spy holds
  a process for a moment, I/O blocks one for a moment); the worker (the busiest child) that used no
  CPU and made no context switch at WORKER_IDLE_READINGS readings in a row is stuck only while its
  engine has requests waiting or running (and is awake: a sleeping engine does nothing on
  purpose); an idle worker is what a hung parent that hands it nothing looks like too. Either
  counts only while the service hangs: a probe of it connected and waited `hang_after` (a
  generation, never a `/health` 200 as proof of life), or timed out after connecting, or its engine
  has requests waiting and produced no token at its latest reading. The stack capture
  (core/hangwatch.py) asks `stuck_worker` too, so it takes the stacks of the stuck process.
"""

from __future__ import annotations

from ..base.thresholds import READING_SECONDS, WORKER_IDLE_READINGS
from ..facts.engine import EngineFacts
from ..facts.process import DeadWorker, ServiceFacts, WorkerFacts
from .client import hung_probe
from .facts import Facts
from .model import Link, clock, duration

_WHAT = {
    "stopped": "stopped (SIGSTOP or a debugger holds it)",
    "disk_sleep": "blocked in the kernel (uninterruptible sleep)",
}


def engine_busy(engine: EngineFacts | None, service: str) -> bool:
    """Whether an awake engine that runs in `service` has requests waiting or running (a sleeping
    one idles its worker on purpose)."""
    instances = engine.engines.values() if engine is not None else ()
    return any(
        e.up and not e.sleeping and ((e.waiting or 0) > 0 or (e.running or 0) > 0)
        for e in instances
        if e.service == service
    )


def stuck_worker(service: ServiceFacts, engine: EngineFacts | None) -> WorkerFacts | None:
    """The service's child process that is stuck, if one is (see the module docstring)."""
    if service.stuck_child is not None:
        return service.stuck_child
    worker = service.worker
    if (
        worker is not None
        and worker.idle_readings >= WORKER_IDLE_READINGS
        and engine_busy(engine, service.name)
    ):
        return worker
    return None


def worker_links(facts: Facts, hang_after: float, now: float) -> list[Link]:
    links = []
    for service in facts.services.values():
        dead = service.dead_worker
        broken = _broken_without(facts, service, dead, hang_after, now) if dead is not None else None
        if dead is not None and broken is not None:
            links.append(_dead_link(service, dead, broken))
            continue
        hang = _hang(facts, service.name, hang_after) if service.up else None
        worker = stuck_worker(service, facts.engine) if hang is not None else None
        if hang is not None and worker is not None:
            links.append(_link(service, worker, hang))
    return links


def _broken_without(
    facts: Facts, service: ServiceFacts, dead: DeadWorker, hang_after: float, now: float
) -> str | None:
    """How the service is seen broken since its worker died, in words; None when it is not."""
    if not service.up:
        return f"{service.name} exited after it: no process of it runs"
    port = service.expected_port
    if port is not None and not service.expected_port_listening:
        return f"its parent {service.name} (pid {service.main_pid}) lives but listens on port {port} no more"
    hang = _hang(facts, service.name, hang_after)
    if hang is not None:
        return hang
    for target in facts.probe.targets.values() if facts.probe is not None else ():
        # A failure after the death; a worker dead long ago says nothing about a failure now.
        failed_since = target.finished_at >= dead.found_at - READING_SECONDS
        if target.service == service.name and not target.outcome.success and failed_since:
            why = target.outcome.error or target.outcome.reason or "failed"
            return f"probe {target.name} fails ({why})"
    return None


def _dead_link(service: ServiceFacts, dead: DeadWorker, broken: str) -> Link:
    ended = dead.ended or "gone (its parent reaped it: how it ended is not known)"
    seen = f"last seen alive at {clock(dead.last_seen_at)}, " if dead.last_seen_at is not None else ""
    return Link(
        f"worker {service.name}",
        "service",
        False,
        f"worker process {dead.name} (pid {dead.pid}) died while its parent lived: {ended}; {broken}",
        "worker_died",
        (
            f"pid {dead.pid} {dead.name}: {seen}found {ended} at {clock(dead.found_at)}",
            f"its parent, {service.name} pid {dead.parent_pid}, outlived it: a health check of the parent "
            "is no proof of life",
        ),
        "journalctl -k --since '-10min' | grep -iE 'killed process|out of memory'; "
        f"journalctl -u {service.name} --since '-10min' | tail -n 50",
        source="process",
        subject=service.name,
        began_at=dead.found_at,
    )


def _link(service: ServiceFacts, worker: WorkerFacts, hang: str) -> Link:
    what = (
        _WHAT.get(worker.state)
        or f"idle: no CPU used and no context switch at {worker.idle_readings} readings"
    )
    threads = ", ".join(f"{n} {state}" for state, n in sorted(worker.thread_states.items())) or "unknown"
    cpu = worker.cpu_user_seconds + worker.cpu_system_seconds
    switches = worker.voluntary_ctxt_switches + worker.involuntary_ctxt_switches
    pid = worker.pid
    return Link(
        f"worker {service.name}",
        "stall",
        False,
        f"worker process {worker.name} (pid {pid}, state {worker.letter}) is {what} while {hang}",
        "worker_stuck",
        (
            f"pid {pid} {worker.name}: state {worker.letter} ({worker.state}), {worker.threads} threads "
            f"({threads}), {cpu:.1f} s CPU, {switches} context switches",
            f"its parent, {service.name} pid {service.main_pid}, is alive and may still answer /health "
            "with 200: no proof of life while generation hangs",
        ),
        f"grep -E 'State|ctxt' /proc/{pid}/status; py-spy dump --nonblocking --pid {pid}",
        source="process",
        subject=service.name,
        held=0 if worker.stuck else worker.idle_readings,  # an idle row is a window already
        began_at=None if worker.stuck else worker.idle_since,
    )


def _hang(facts: Facts, service: str, hang_after: float) -> str | None:
    """How the service is seen to hang now, in words; None when it is not."""
    for probe in facts.inflight.targets.values() if facts.inflight is not None else ():
        if (
            (probe.service or probe.target) == service
            and probe.connected
            and hung_probe(facts, probe.target, hang_after)
        ):
            return f"probe {probe.target} has waited {duration(probe.waited)} for its answer"
    for target in facts.probe.targets.values() if facts.probe is not None else ():
        if target.service == service and target.outcome.reason == "read_timeout" and target.outcome.connected:
            return f"probe {target.name} connected and timed out"
    for engine in facts.engine.engines.values() if facts.engine is not None else ():
        if engine.service == service and engine.up and engine.flat_readings and engine.waiting:
            return f"{engine.waiting:g} requests wait in engine {engine.name} and no token came"
    return None
