"""Stall links: stuck threads (py-spy), an engine not generating, idle GPUs with a backlog, queue growth."""

from __future__ import annotations

from typing import Any

from .model import Link, number
from .thresholds import FORENSICS_RECENT_SECONDS, QUEUE_GROWTH_STALL


def gpu_idle_links(engine: Any, gpu: Any) -> list[Link]:
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
                    f"engine {instance.name} on gpu {', '.join(str(d.index) for d in devices)}",
                    "stall",
                    False,
                    f"{number(instance.waiting)} requests wait while its GPUs are idle",
                    "gpu_idle_with_backlog",
                    ("GPU utilization 0% on every GPU of the engine",),
                    "nvidia-smi; py-spy dump --pid $(pgrep -f vllm | head -1)",
                )
            )
    return links


def stall_links(engine: Any, redis: Any, gpu: Any) -> list[Link]:
    links = gpu_idle_links(engine, gpu)
    for instance in engine.engines.values() if engine is not None else []:
        if instance.up and instance.stalled:
            links.append(
                Link(
                    f"engine {instance.name}",
                    "stall",
                    False,
                    f"{number(instance.waiting)} requests wait, no token generated since the last reading",
                    "engine_stalled",
                    (f"generation tokens flat at {number(instance.generation_tokens)}",),
                    "py-spy dump --pid $(pgrep -f 'vllm' | head -1); nvidia-smi",
                )
            )
    for instance in redis.instances.values() if redis is not None else []:
        for key, growth in instance.queue_growth.items():
            depth = instance.queues.get(key)
            if depth and growth >= QUEUE_GROWTH_STALL:
                host, _, port = instance.address.rpartition(":")
                links.append(
                    Link(
                        f"queue {key}",
                        "stall",
                        False,
                        f"queue {key} grows: {depth} waiting (+{growth} since the last reading)",
                        "queue_backlog_growing",
                        (f"{instance.name} {key}: depth {depth}",),
                        f"redis-cli -h {host.strip('[]')} -p {port} type '{key}'",
                    )
                )
    return links


def forensics_links(forensics: Any, now: float) -> list[Link]:
    links = []
    for evidence in forensics.services.values() if forensics is not None else []:
        if now - evidence.at > FORENSICS_RECENT_SECONDS:
            continue
        name = f"stacks {evidence.service}"
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
                )
            )
            continue
        analysis = evidence.analysis
        if analysis is None:
            continue
        where = f"py-spy dump --pid {analysis.pid}"
        blocked = [t for t in analysis.threads if t.state == "blocked"]
        busy = [t for t in analysis.threads if t.state == "busy"]
        if analysis.deadlock_suspected:
            evidence_lines = tuple(t.description for t in blocked[:4])
            link = Link(name, "stall", False, analysis.summary, "threads_blocked", evidence_lines, where)
        elif busy and evidence.capture is not None and evidence.capture.reason == "probe_failing":
            # A thread busy in one function is normal work unless the service stopped answering.
            evidence_lines = tuple(t.description for t in busy[:4])
            link = Link(name, "stall", False, analysis.summary, "cpu_bound_loop", evidence_lines, where)
        else:
            link = Link(name, "stall", True, analysis.summary)
        links.append(link)
    return links
