"""What only several readings can tell: a queue that keeps growing, how much CPU a service itself
uses, its restarts. (An engine's flat tokens are counted by the engine collector itself, whose
autoglm_engine_stalled is judged over the same window.)

The verdict never judges a trend on one reading (one LPUSH of 5 items onto an idle queue is not
a backlog). Trends are updated once per new reading of the collector they come from, so a
publish of an unrelated collector adds nothing. A one-shot reading (doctor) has no trends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..base.thresholds import QUEUE_GROWTH_STALL, RESTART_LOOP_WINDOW_SECONDS, RESTART_LOOP_YOUNG_SECONDS
from .facts import Facts


@dataclass(frozen=True)
class _Queue:
    depth: int
    rises: int  # readings in a row at which the depth rose
    began_at: float | None  # the reading at which the current rise began


@dataclass(frozen=True)
class Restart:
    at: float  # the reading that saw the service's main process gone (dead, or replaced)
    young: bool  # that process had lived less than Trends.restart_young (or its age is unknown)


@dataclass(frozen=True)
class _Cpu:
    seconds: float  # user + system of all the service's processes
    start_time: float
    at: float


class Trends:
    def __init__(self) -> None:
        self._seen: dict[str, int] = {}  # collector -> the reading last taken into account
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._cpu: dict[str, _Cpu] = {}
        self._cores: dict[str, float] = {}
        # service -> its main pid (None: down) and that process's start time, at the last reading
        self._main: dict[str, tuple[int | None, float]] = {}
        self._restarts: dict[str, list[Restart]] = {}  # service -> the restarts readings saw
        # a process that died younger than this is part of a crash loop, counted over the window
        self.restart_young = RESTART_LOOP_YOUNG_SECONDS
        self.restart_window = RESTART_LOOP_WINDOW_SECONDS

    # --- readers ------------------------------------------------------------------------------

    def queue_rises(self, redis: str, key: str) -> tuple[int, float | None]:
        """How many readings in a row the queue grew, and since when."""
        queue = self._queues.get((redis, key))
        return (queue.rises, queue.began_at) if queue is not None else (0, None)

    def cores(self, service: str) -> float | None:
        """CPUs the service's processes used between its last two readings."""
        return self._cores.get(service)

    def restarts(self, service: str, now: float) -> list[Restart]:
        """The restarts readings of the last `restart_window` seconds saw."""
        return [r for r in self._restarts.get(service, []) if now - r.at <= self.restart_window]

    # --- one new reading --------------------------------------------------------------------------

    def update(self, facts: Facts, readings: Mapping[str, int], observed_at: Mapping[str, float]) -> None:
        if self._new("redis", readings):
            self._update_queues(facts, observed_at.get("redis"))
        if self._new("process", readings):
            self._update_cpu(facts, observed_at.get("process"))
            self._update_restarts(facts, observed_at.get("process"))

    def _new(self, collector: str, readings: Mapping[str, int]) -> bool:
        reading = readings.get(collector)
        if reading is None or reading == self._seen.get(collector):
            return False
        self._seen[collector] = reading
        return True

    def _update_queues(self, facts: Facts, at: float | None) -> None:
        queues: dict[tuple[str, str], _Queue] = {}
        for instance in facts.redis.instances.values() if facts.redis is not None else []:
            for key, depth in instance.queues.items():
                if not instance.up or depth is None:
                    continue  # unknown is not a trend: start again when it can be read
                previous = self._queues.get((instance.name, key))
                if previous is not None and depth - previous.depth >= QUEUE_GROWTH_STALL:
                    began = previous.began_at if previous.rises else at
                    queues[(instance.name, key)] = _Queue(depth, previous.rises + 1, began)
                else:
                    queues[(instance.name, key)] = _Queue(depth, 0, None)
        self._queues = queues

    def _update_cpu(self, facts: Facts, at: float | None) -> None:
        if at is None:
            return
        cpu: dict[str, _Cpu] = {}
        cores: dict[str, float] = {}
        for service in facts.services.values():
            if not service.up:
                continue
            now = _Cpu(service.cpu_user_seconds + service.cpu_system_seconds, service.start_time, at)
            before = self._cpu.get(service.name)
            # Another process (a restart) or a child that exited makes the difference meaningless.
            if before is not None and before.start_time == now.start_time and now.at > before.at:
                used = now.seconds - before.seconds
                if used >= 0:
                    cores[service.name] = used / (now.at - before.at)
            cpu[service.name] = now
        self._cpu, self._cores = cpu, cores

    def _update_restarts(self, facts: Facts, at: float | None) -> None:
        """A restart is the main process of the previous reading gone: dead, or replaced."""
        if at is None:
            return
        for service in facts.services.values():
            before = self._main.get(service.name)
            now = (service.main_pid, service.start_time) if service.up else (None, 0.0)
            if before is not None and before[0] is not None and now[0] != before[0]:
                started = before[1]
                young = started <= 0 or at - started < self.restart_young
                recent = self.restarts(service.name, at)
                self._restarts[service.name] = [*recent, Restart(at, young)][-32:]
            self._main[service.name] = now
