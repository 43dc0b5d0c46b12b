"""Stall links: stuck threads (py-spy), an engine not generating, idle GPUs with a backlog, queue growth.

Trends are judged over several readings, never one: a stalled engine's tokens stayed flat at
ENGINE_FLAT_READINGS readings in a row spanning ENGINE_STALL_WINDOW_SECONDS while requests waited
(the engine collector's `stalled`), or at one while a probe of the engine's service has waited
`forensics.hang_after` for its answer (a second, independent observation of the same stall); a
queue rose at each of
QUEUE_GROWTH_READINGS readings and holds at least QUEUE_MIN_DEPTH. Such a link says how many
readings it already held, so the verdict does not wait for as many again.
"""

from __future__ import annotations

from ..base.thresholds import FORENSICS_RECENT_SECONDS, QUEUE_GROWTH_READINGS, QUEUE_MIN_DEPTH
from ..facts.engine import EngineFacts, EngineInstanceFacts
from ..facts.forensics import ForensicsFacts
from ..facts.gpu import GpuFacts
from .client import hung_probe
from .facts import Facts
from .model import Link, engine_subject, number, redis_cli
from .trends import Trends


def _engine_probe_hangs(facts: Facts, instance: EngineInstanceFacts, hang_after: float) -> bool:
    """Whether a probe of the engine's service (a generation, its health) has waited hang_after."""
    owner = engine_subject(instance)
    waiting = facts.inflight.targets.values() if facts.inflight is not None else ()
    return any((p.service or p.target) == owner and hung_probe(facts, p.target, hang_after) for p in waiting)


# Captures a human asked for: a busy thread there is not a sign that the service stopped answering.
_ASKED_FOR = ("api", "cli")


def gpu_idle_links(engine: EngineFacts | None, gpu: GpuFacts | None) -> list[Link]:
    """Requests wait while the engine's GPUs do nothing: the engine is stuck before the GPU (seed 4.3)."""
    if engine is None or gpu is None or not gpu.available or not gpu.gpus:
        return []
    links = []
    for instance in engine.engines.values():
        if not instance.up or not instance.waiting:
            continue
        service = gpu.services.get(instance.service or "")
        indexes = set(service.gpus) if service is not None and service.gpus else {d.index for d in gpu.gpus}
        devices = [d for d in gpu.gpus if d.index in indexes]
        if devices and all(d.utilization == 0 for d in devices):
            links.append(
                Link(
                    f"engine {instance.name} gpus",
                    "stall",
                    False,
                    f"{number(instance.waiting)} requests wait while its GPUs "
                    f"({', '.join(str(d.index) for d in devices)}) are idle",
                    "gpu_idle_with_backlog",
                    ("GPU utilization 0% on every GPU of the engine",),
                    "nvidia-smi; py-spy dump --pid $(pgrep -f vllm | head -1)",
                    source="engine",
                    subject=engine_subject(instance),
                )
            )
    return links


def stall_links(facts: Facts, trends: Trends, hang_after: float) -> list[Link]:
    engine, redis = facts.engine, facts.redis
    links = gpu_idle_links(engine, facts.gpu)
    for instance in engine.engines.values() if engine is not None else []:
        if instance.up and instance.sleeping:
            links += _sleeping(facts, instance, hang_after)
            continue
        flat = instance.flat_readings
        corroborated = flat >= 1 and _engine_probe_hangs(facts, instance, hang_after)
        if instance.up and (instance.stalled or corroborated):
            links.append(
                Link(
                    f"engine {instance.name} generation",
                    "stall",
                    False,
                    f"{number(instance.waiting)} requests wait, no token generated for {flat} readings",
                    "engine_stalled",
                    (f"generation tokens flat at {number(instance.generation_tokens)}",),
                    "py-spy dump --pid $(pgrep -f 'vllm' | head -1); nvidia-smi",
                    source="engine",
                    subject=engine_subject(instance),
                    held=flat + corroborated,  # the hung probe is a second observation
                    began_at=instance.stalled_since,
                )
            )
    for redis_instance in redis.instances.values() if redis is not None else []:
        for key, depth in redis_instance.queues.items():
            rises, began = trends.queue_rises(redis_instance.name, key)
            if depth is None or depth < QUEUE_MIN_DEPTH or rises < QUEUE_GROWTH_READINGS - 1:
                continue
            links.append(
                Link(
                    f"queue {key} on redis {redis_instance.name}",
                    "stall",
                    False,
                    f"queue {key} keeps growing: {depth} waiting, deeper at each of {rises + 1} readings",
                    "queue_backlog_growing",
                    (f"{redis_instance.name} {key}: depth {depth}",),
                    f"{redis_cli(redis_instance.address)} type '{key}'",
                    source="redis",
                    subject=redis_instance.name,
                    held=rises,
                    began_at=began,
                )
            )
    return links


_SLEEP_LEVELS = {0: "scheduling paused", 1: "weights offloaded", 2: "weights discarded"}


def _sleeping(facts: Facts, instance: EngineInstanceFacts, hang_after: float) -> list[Link]:
    """An engine put to sleep on purpose (vLLM's sleep mode) generates nothing, by design: never a
    stall. It is named only while requests wait on it, or a probe of its service hangs or failed
    (a probe that timed out took its request away: the queue is empty until the next one)."""
    waiting = instance.waiting or 0
    owner = engine_subject(instance)
    finished = facts.probe.targets.values() if facts.probe is not None else ()
    failed = any((t.service or t.name) == owner and not t.outcome.success for t in finished)
    if not waiting and not failed and not _engine_probe_hangs(facts, instance, hang_after):
        return []
    level = instance.sleep_level
    how = f"level {level}: {_SLEEP_LEVELS[level]}" if level in _SLEEP_LEVELS else "asleep"
    host = instance.url.split("/metrics", 1)[0]
    return [
        Link(
            f"engine {instance.name} sleep",
            "dependencies",
            False,
            f"engine {instance.name} was put to sleep ({how}): {number(waiting)} requests wait on it",
            "engine_sleeping",
            (
                f"vllm:engine_sleep_state says no engine core is awake ({how})",
                "sleep mode is deliberate (POST /sleep): nothing is stuck; requests wait for POST /wake_up",
            ),
            f"curl -s {host}/is_sleeping; curl -s -X POST {host}/wake_up",
            source="engine",
            subject=engine_subject(instance),
        )
    ]


def forensics_links(forensics: ForensicsFacts | None, now: float) -> list[Link]:
    links = []
    for evidence in forensics.services.values() if forensics is not None else []:
        if now - evidence.at > FORENSICS_RECENT_SECONDS:
            continue
        name = f"stacks {evidence.service}"
        # The stacks stop speaking for the service when its probe answers again: the probe's
        # readings decide when this link clears.
        if evidence.error_kind == "permission":
            links.append(
                Link(
                    name,
                    "exporter",
                    False,
                    "py-spy may not read the service's stacks: add SYS_PTRACE to the exporter",
                    "capture_not_permitted",
                    (evidence.error or "",),
                    "docker inspect --format '{{.HostConfig.CapAdd}}' <exporter container>",
                    source="probe",
                    subject=evidence.service,
                )
            )
            continue
        analysis = evidence.analysis
        if analysis is None:
            continue
        where = f"py-spy dump --pid {analysis.pid}"
        # The stacks of a stuck child (vLLM's engine core), not of the service's main process.
        child = (
            (f"stacks of {evidence.process}, the service's stuck child process",) if evidence.process else ()
        )
        blocked = [t for t in analysis.threads if t.state == "blocked"]
        busy = [t for t in analysis.threads if t.state == "busy"]
        # Several dumps compared a short interval apart: the capture is already a judgement
        # over several readings.
        held = analysis.dumps
        if analysis.deadlock_suspected:
            evidence_lines = child + tuple(t.description for t in blocked[:4])
            reason = "threads_blocked"
        elif busy and evidence.capture is not None and evidence.capture.reason not in _ASKED_FOR:
            # A thread busy in one function is normal work unless the service stopped answering.
            evidence_lines = child + tuple(t.description for t in busy[:4])
            reason = "cpu_bound_loop"
        else:
            links.append(
                Link(
                    name,
                    "stall",
                    True,
                    analysis.summary,
                    evidence=child,
                    source="probe",
                    subject=evidence.service,
                )
            )
            continue
        links.append(
            Link(
                name,
                "stall",
                False,
                analysis.summary,
                reason,
                evidence_lines,
                where,
                source="probe",
                subject=evidence.service,
                held=held,
                began_at=evidence.capture.time if evidence.capture is not None else evidence.at,
            )
        )
    return links
