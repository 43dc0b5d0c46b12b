"""The verdict: a pure function from the latest facts to the first broken link of the chain.

It knows nothing of how facts were gathered. It walks the seed's flowchart:

- a client probe cannot connect → the network: refused because the process is dead, because
  nothing listens on the port, or because the service listens elsewhere; a connect timeout
  points at a firewall, routing or an overloaded accept queue;
- it connects but fails (no answer, reset, HTTP error, bad body) → look for the cause deeper in
  the chain, in order: the service's error log, its dependencies, the machine's resources, a
  stall; when none explains it, the client failure itself is the verdict;
- every probe answers → the first broken link elsewhere (a dependency down, a stall) or healthy.

Each link carries evidence lines and the next command a human would run to confirm it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .metricspec import Family, gauge
from .store import CollectorHealth

LAYERS = ("client", "network", "service", "dependencies", "resources", "stall", "exporter")

# Every (layer, reason) a verdict can name: bounded, so each is a series from the first scrape.
REASONS: dict[str, tuple[str, ...]] = {
    "client": ("not_answering", "reset", "http_error", "bad_answer", "probe_misconfigured"),
    "network": (
        "process_dead",
        "not_listening",
        "wrong_port",
        "connect_refused",
        "connect_timeout",
        "unreachable",
        "dns",
        "tls",
    ),
    "service": ("process_missing", "port_not_listening", "port_taken", "log_errors"),
    "dependencies": ("redis_down", "engine_down", "engine_not_generating", "dependency_probe_failed"),
    "resources": (
        "memory_low",
        "cpu_saturated",
        "context_switch_storm",
        "io_blocked",
        "cpu_throttled",
        "memory_limit_pressure",
        "oom_killed",
        "gpu_lost",
        "gpu_xid_errors",
        "gpu_memory_full",
        "gpu_throttled",
        "cuda_incompatible",
    ),
    "stall": (
        "threads_blocked",
        "cpu_bound_loop",
        "engine_stalled",
        "gpu_idle_with_backlog",
        "queue_backlog_growing",
    ),
    "exporter": ("collector_failed", "collector_stuck", "capture_not_permitted"),
}

MEMORY_LOW_RATIO = 0.05  # available memory under 5% of total
CPU_SATURATED_RATIO = 0.95
CONTEXT_SWITCHES_PER_CPU_STORM = 100_000.0  # per second per CPU; a quiet server sits near 1-10k
RECENT_LOG_SECONDS = 300.0
SEVERE_LOG_PATTERNS = ("cuda_oom", "model_load_failure", "config_not_found", "nccl_error", "oom_killed")
QUEUE_GROWTH_STALL = 1  # the queue grew by at least this much since the previous reading

VERDICT = gauge(
    "autoglm_diagnosis_verdict",
    "1 for the layer and reason of the current verdict (the first broken link of the chain), else 0.",
    "layer",
    "reason",
)
HEALTHY = gauge("autoglm_diagnosis_healthy", "1 when every link of the chain answers, else 0.")
DIAGNOSIS_METRICS = (VERDICT, HEALTHY)


@dataclass(frozen=True)
class Link:
    name: str
    layer: str
    ok: bool | None  # None: not known (its collector failed, is disabled, or has not run)
    summary: str
    reason: str = "ok"
    evidence: tuple[str, ...] = ()
    next_command: str | None = None


@dataclass(frozen=True)
class Diagnosis:
    links: tuple[Link, ...]
    verdict: Link | None = field(default=None)
    recent_errors: tuple[str, ...] = ()  # the last matching log lines, redacted, newest last

    @property
    def healthy(self) -> bool:
        return self.verdict is None


def diagnose(
    facts: Mapping[str, Any], health: Mapping[str, CollectorHealth], now: float | None = None
) -> Diagnosis:
    now = time.time() if now is None else now
    services = _services(facts.get("process"))
    links = (
        _client_links(facts.get("probe"), services)
        + _service_links(facts.get("process"), health.get("process"))
        + _log_links(facts.get("logs"), now)
        + _dependency_links(facts.get("redis"), facts.get("engine"), facts.get("probe"))
        + _resource_links(facts.get("system"), health.get("system"))
        + _container_links(facts.get("container"))
        + _gpu_links(facts.get("gpu"))
        + _forensics_links(facts.get("forensics"), now)
        + _stall_links(facts.get("engine"), facts.get("redis"), facts.get("gpu"))
        + _environment_links(facts.get("environment"))
        + _exporter_links(health)
    )
    ordered = tuple(sorted(links, key=lambda link: LAYERS.index(link.layer)))
    verdict = _with_drift(_verdict(ordered), facts.get("environment"))
    return Diagnosis(ordered, verdict, _recent_errors(facts.get("logs")))


def _verdict(links: tuple[Link, ...]) -> Link | None:
    broken = [link for link in links if link.ok is False]
    if not broken:
        return None
    first = broken[0]
    if first.layer != "client":
        return first
    # It connects but fails: a deeper broken link is the cause, the client failure its symptom.
    cause = next((link for link in broken[1:] if link.layer not in ("client", "exporter")), None)
    if cause is None:
        return first
    return Link(
        cause.name,
        cause.layer,
        False,
        cause.summary,
        cause.reason,
        cause.evidence + (f"symptom: {first.name}: {first.summary}",),
        cause.next_command,
    )


def to_dict(diagnosis: Diagnosis) -> dict[str, Any]:
    """The diagnosis as plain data for JSON (/api/diagnosis, doctor --json)."""
    return {
        "healthy": diagnosis.healthy,
        "verdict": asdict(diagnosis.verdict) if diagnosis.verdict else None,
        "links": [asdict(link) for link in diagnosis.links],
        "recent_errors": list(diagnosis.recent_errors),
    }


def verdict_families(diagnosis: Diagnosis) -> list[Family]:
    verdict = VERDICT.family()
    current = (diagnosis.verdict.layer, diagnosis.verdict.reason) if diagnosis.verdict else None
    for layer, reasons in REASONS.items():
        for reason in reasons:
            verdict.add_metric([layer, reason], 1 if (layer, reason) == current else 0)
    return [verdict, HEALTHY.single(1 if diagnosis.healthy else 0)]


# --- client and network ---------------------------------------------------------------------

_CONNECT_FAILURES = {"connect_refused", "connect_timeout", "unreachable", "dns", "tls"}
_CLIENT_REASONS = {
    "read_timeout": "not_answering",
    "reset": "reset",
    "http_status": "http_error",
    "bad_body": "bad_answer",
    "config": "probe_misconfigured",
}


def _client_links(probe: Any, services: Mapping[str, Any]) -> list[Link]:
    if probe is None:
        return []
    return [_client_link(t, services) for t in probe.targets.values() if t.layer == "client"]


def _client_link(target: Any, services: Mapping[str, Any]) -> Link:
    outcome = target.outcome
    name = f"probe {target.name}"
    if outcome.success:
        return Link(name, "client", True, f"{target.module} {target.url} answered in {outcome.duration:.2f}s")
    evidence = (
        f"{target.module} {target.url}: {outcome.error} (failed {target.consecutive_failures}x in a row)",
    )
    if outcome.reason in _CONNECT_FAILURES:
        return _network_link(target, services.get(target.service or ""), evidence)
    reason = _CLIENT_REASONS.get(outcome.reason or "", "bad_answer")
    summaries = {
        "not_answering": "connects, but no answer in time: the service is hung or overloaded",
        "reset": "connects, but the connection is reset mid-answer: the service crashed or was killed",
        "http_error": f"answers HTTP {outcome.status}",
        "bad_answer": "answers, but not what a client expects",
        "probe_misconfigured": "the probe itself cannot run",
    }
    return Link(name, "client", False, summaries[reason], reason, evidence, f"curl -sv -m 30 {target.url}")


def _network_link(target: Any, service: Any, evidence: tuple[str, ...]) -> Link:
    name = f"probe {target.name}"
    reason = target.outcome.reason
    host_port = _host_port(target.url)
    port = host_port.rsplit(":", 1)[-1]
    if reason == "connect_refused" and service is not None:
        if not service.up:
            return Link(
                name,
                "network",
                False,
                f"connection refused: the {service.name} process is not running",
                "process_dead",
                evidence + (f"no process matches service {service.name}",),
                f"ps aux | grep -i {service.name}",
            )
        listening = ", ".join(str(p) for p in service.listening_ports) or "no port"
        if service.listening_ports:
            return Link(
                name,
                "network",
                False,
                f"connection refused on {port}: {service.name} listens on {listening} instead",
                "wrong_port",
                evidence + (f"pid {_pids(service)} listens on {listening}",),
                "ss -tlnp",
            )
        return Link(
            name,
            "network",
            False,
            f"connection refused: {service.name} runs (pid {_pids(service)}) but listens on no port",
            "not_listening",
            evidence + ("the process may still be loading the model, or its listener died",),
            f"ss -tlnp; tail -n 50 /proc/{service.pids[0]}/fd/2" if service.pids else "ss -tlnp",
        )
    summaries = {
        "connect_refused": f"connection refused: nothing listens on {host_port}",
        "connect_timeout": f"connect to {host_port} timed out: firewall, routing or a full accept queue",
        "unreachable": f"{host_port} is unreachable: no route to the host",
        "dns": "the host name does not resolve",
        "tls": "the TLS handshake fails",
    }
    commands = {
        "connect_refused": f"ss -tlnp | grep :{port}",
        "connect_timeout": f"nc -vz -w 5 {host_port.replace(':', ' ')}; ss -ltn 'sport = :{port}'",
        "unreachable": "ip route",
        "dns": f"getent hosts {host_port.rsplit(':', 1)[0]}",
        "tls": f"openssl s_client -connect {host_port} </dev/null",
    }
    return Link(name, "network", False, summaries[reason], reason, evidence, commands[reason])


# --- service ---------------------------------------------------------------------------------


def _services(process: Any) -> Mapping[str, Any]:
    return process.services if process is not None else {}


def _service_links(process: Any, health: CollectorHealth | None) -> list[Link]:
    if health is None:
        return []
    if process is None:
        return [
            Link("processes", "service", None, f"cannot read processes: {health.last_error or 'no run yet'}")
        ]
    return [_service_link(service) for service in process.services.values()]


def _service_link(service: Any) -> Link:
    name = f"service {service.name}"
    port = service.expected_port
    if not service.up:
        return Link(
            name,
            "service",
            False,
            "no process found",
            reason="process_missing",
            evidence=(f"no running process matches the rules of service {service.name}",),
            next_command=f"ps aux | grep -i {service.name}"
            + (f"; ss -tlnp 'sport = :{port}'" if port else ""),
        )
    pids = _pids(service)
    listening = ", ".join(str(p) for p in service.listening_ports[:8]) or "none"
    if port is not None and service.port_taken_by:
        holders = ", ".join(f"pid {pid} ({comm})" for pid, comm in service.port_taken_by[:3])
        return Link(
            name,
            "service",
            False,
            f"running (pid {pids}) but port {port} is held by another process: {holders}",
            reason="port_taken",
            evidence=(f"{holders} listens on {port}; clients reach it instead of {service.name}",),
            next_command=f"ss -tlnp 'sport = :{port}'",
        )
    if port is not None and not service.expected_port_listening:
        return Link(
            name,
            "service",
            False,
            f"running (pid {pids}) but not listening on port {port}",
            reason="port_not_listening",
            evidence=(
                f"pid {pids} listens on: {listening}",
                f"expected port {port} has no listener of this service",
            ),
            next_command=f"ss -tlnp 'sport = :{port}'",
        )
    restarted = f", restarted {service.restarts}x" if service.restarts else ""
    return Link(
        name,
        "service",
        True,
        f"running (pid {pids}), {service.threads} threads, listening on {listening}{restarted}",
    )


def _log_links(logs: Any, now: float) -> list[Link]:
    if logs is None:
        return []
    links = []
    for log in logs.logs.values():
        name = f"log {log.name}"
        if log.error:
            links.append(Link(name, "service", None, f"cannot read {log.path}: {log.error}"))
            continue
        if not log.present:
            links.append(Link(name, "service", None, f"{log.path} does not exist (yet)"))
            continue
        recent = [m for m in log.recent if now - m.timestamp <= RECENT_LOG_SECONDS]
        severe = [m for m in recent if m.pattern in SEVERE_LOG_PATTERNS]
        if not severe:
            summary = f"{len(recent)} matching lines in the last 5 minutes" if recent else "no recent errors"
            links.append(Link(name, "service", True, summary))
            continue
        patterns = sorted({m.pattern for m in severe})
        links.append(
            Link(
                name,
                "service",
                False,
                f"{', '.join(patterns)} in {log.path} in the last 5 minutes",
                "log_errors",
                tuple(f"{m.pattern}: {m.line}" for m in severe[-3:]),
                f"tail -n 50 {log.path}",
            )
        )
    return links


def _recent_errors(logs: Any, keep: int = 10) -> tuple[str, ...]:
    if logs is None:
        return ()
    matches = sorted((m for log in logs.logs.values() for m in log.recent), key=lambda m: m.timestamp)
    return tuple(
        f"{time.strftime('%H:%M:%S', time.localtime(m.timestamp))} {m.pattern}: {m.line}"
        for m in matches[-keep:]
    )


def _environment_links(environment: Any) -> list[Link]:
    links = []
    for env in environment.services.values() if environment is not None else []:
        if env.baseline_taken_at is None:
            continue
        conflicts = f", {env.conflicts} dependency conflicts" if env.conflicts else ""
        if env.drifted:
            summary = f"changed since the baseline ({', '.join(env.drifted)}){conflicts}"
        else:
            summary = f"as in the baseline{conflicts}"
        links.append(Link(f"environment {env.name}", "service", True, summary, evidence=env.changes))
    return links


def _with_drift(verdict: Link | None, environment: Any) -> Link | None:
    """A broken chain after an upgrade: say what changed beside the verdict."""
    if verdict is None or environment is None:
        return verdict
    changes = [
        f"changed since the baseline: {line}" for env in environment.services.values() for line in env.changes
    ]
    if not changes:
        return verdict
    return Link(
        verdict.name,
        verdict.layer,
        verdict.ok,
        verdict.summary,
        verdict.reason,
        verdict.evidence + tuple(changes[:5]),
        verdict.next_command,
    )


# --- dependencies ------------------------------------------------------------------------------


def _dependency_links(redis: Any, engine: Any, probe: Any) -> list[Link]:
    links: list[Link] = []
    if redis is not None:
        links += [_redis_link(instance) for instance in redis.instances.values()]
    if engine is not None:
        links += [_engine_link(instance) for instance in engine.engines.values()]
    if probe is not None:
        targets = [t for t in probe.targets.values() if t.layer == "dependencies"]
        links += [_dependency_probe_link(t, targets) for t in targets]
    return links


def _redis_link(instance: Any) -> Link:
    name = f"redis {instance.name}"
    if instance.up:
        ping = f"{instance.ping_seconds * 1000:.1f} ms" if instance.ping_seconds is not None else "?"
        clients = f", {instance.connected_clients} clients" if instance.connected_clients is not None else ""
        return Link(name, "dependencies", True, f"PING {ping}{clients}")
    host, _, port = instance.address.rpartition(":")
    return Link(
        name,
        "dependencies",
        False,
        f"Redis at {instance.address} is down ({instance.failure})",
        "redis_down",
        (f"{instance.address}: {instance.error}",),
        f"redis-cli -h {host.strip('[]')} -p {port} ping",
    )


def _engine_link(instance: Any) -> Link:
    name = f"engine {instance.name}"
    if instance.up:
        waiting = _number(instance.waiting)
        running = _number(instance.running)
        return Link(name, "dependencies", True, f"{running} requests running, {waiting} waiting")
    return Link(
        name,
        "dependencies",
        False,
        f"the {instance.kind} engine's metrics do not answer ({instance.failure})",
        "engine_down",
        (f"{instance.error}",),
        f"curl -sv -m 10 {instance.url or 'http://127.0.0.1:8000/metrics'} | head",
    )


def _dependency_probe_link(target: Any, siblings: Iterable[Any]) -> Link:
    name = f"probe {target.name}"
    outcome = target.outcome
    if outcome.success:
        return Link(
            name, "dependencies", True, f"{target.module} {target.url} answered in {outcome.duration:.2f}s"
        )
    evidence = [f"{target.module} {target.url}: {outcome.error}"]
    # vLLM's /health stays 200 while its engine is dead: generation failing beside a healthy
    # health check is the signature of exactly that.
    healthy_sibling = next(
        (
            s
            for s in siblings
            if s is not target and s.service == target.service and s.module == "http" and s.outcome.success
        ),
        None,
    )
    if target.module == "openai_chat" and healthy_sibling is not None:
        evidence.append(f"{healthy_sibling.url} still answers 200: a health check is not proof of life")
        return Link(
            name,
            "dependencies",
            False,
            "the engine answers its health check but cannot generate a token",
            "engine_not_generating",
            tuple(evidence),
            f"curl -s -m 30 {target.url} -H 'Content-Type: application/json' -d "
            '\'{"model": "...", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}\'',
        )
    return Link(
        name,
        "dependencies",
        False,
        f"{target.url} fails: {outcome.reason}",
        "dependency_probe_failed",
        tuple(evidence),
        f"curl -sv -m 30 {target.url}",
    )


# --- resources -----------------------------------------------------------------------------------


def _resource_links(system: Any, health: CollectorHealth | None) -> list[Link]:
    if health is None:
        return []
    if system is None:
        return [Link("system", "resources", None, f"cannot read /proc: {health.last_error or 'no run yet'}")]
    stat = system.stat
    total = system.memory.get("MemTotal", 0)
    available = system.memory.get("MemAvailable", total)
    summary = (
        f"{stat.cpus} CPUs, load {system.load[0]:.2f}, memory available {_gib(available)} of {_gib(total)}, "
        f"{stat.procs_blocked} blocked on I/O"
    )
    checks: list[tuple[bool, str, str, str]] = [
        (
            bool(total) and available / total < MEMORY_LOW_RATIO,
            "memory_low",
            f"only {_gib(available)} of {_gib(total)} memory available",
            "free -h; ps aux --sort=-rss | head",
        ),
        (
            system.cpu_busy_ratio is not None and system.cpu_busy_ratio > CPU_SATURATED_RATIO,
            "cpu_saturated",
            f"CPUs busy {(system.cpu_busy_ratio or 0):.0%} of the time since the last reading",
            "top -b -n 1 | head -20",
        ),
        (
            system.context_switches_per_second is not None
            and system.context_switches_per_second > CONTEXT_SWITCHES_PER_CPU_STORM * max(stat.cpus, 1),
            "context_switch_storm",
            f"{(system.context_switches_per_second or 0):,.0f} context switches/s on {stat.cpus} CPUs",
            "pidstat -w 1 5",
        ),
        (
            stat.procs_blocked > max(stat.cpus, 1),
            "io_blocked",
            f"{stat.procs_blocked} threads blocked on I/O",
            "ps -eLo state,pid,comm | awk '$1==\"D\"'",
        ),
    ]
    for broken, reason, evidence, command in checks:
        if broken:
            return [Link(f"system {reason}", "resources", False, summary, reason, (evidence,), command)]
    return [Link("system", "resources", True, summary)]


CPU_THROTTLED_FRACTION = 0.25  # a quarter of the CFS periods throttled since the last reading
MEMORY_LIMIT_PRESSURE = 0.90  # working set at 90% of the cgroup's limit


def _container_links(container: Any) -> list[Link]:
    links = []
    for c in container.services.values() if container is not None else []:
        if not c.found or c.cgroup_version in (None, 0):
            continue
        name = f"cgroup {c.name}"
        where = f"cat /sys/fs/cgroup{c.cgroup_path}/cpu.stat /sys/fs/cgroup{c.cgroup_path}/memory.events"
        if c.oom_kills_delta:
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    f"{c.oom_kills_delta} processes of {c.name} were OOM-killed at its memory limit",
                    "oom_killed",
                    (f"memory limit {_gib(c.memory_limit_bytes or 0)}, {c.oom_kills} OOM kills in all",),
                    where,
                )
            )
        elif c.memory_working_set_ratio is not None and c.memory_working_set_ratio > MEMORY_LIMIT_PRESSURE:
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    f"{c.name} uses {c.memory_working_set_ratio:.0%} of its memory limit",
                    "memory_limit_pressure",
                    (f"working set {_gib(c.memory_working_set_bytes or 0)} of the limit",),
                    where,
                )
            )
        elif c.cpu_throttled_fraction is not None and c.cpu_throttled_fraction > CPU_THROTTLED_FRACTION:
            quota = f"{c.cpu_quota_cores:g} CPUs" if c.cpu_quota_cores else "its quota"
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    f"{c.name} is CPU-throttled in {c.cpu_throttled_fraction:.0%} of periods (limit {quota})",
                    "cpu_throttled",
                    ("CPU throttling makes a service alive but slow to answer",),
                    where,
                )
            )
        else:
            links.append(Link(name, "resources", True, f"cgroup v{c.cgroup_version}: within its limits"))
    return links


GPU_MEMORY_FULL_RATIO = 0.95


def _gpu_links(gpu: Any) -> list[Link]:
    if gpu is None:
        return []
    if not gpu.available:
        return [Link("gpu", "resources", None, gpu.message or "no NVIDIA GPU / driver found")]
    links = []
    for device in gpu.gpus:
        name = f"gpu {device.index} ({device.name})"
        if device.lost or 79 in device.xid_recent:
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    "the GPU is lost (fell off the bus): only a reset or a reboot brings it back",
                    "gpu_lost",
                    (f"uuid {device.uuid}, recent XIDs {list(device.xid_recent)}",),
                    "nvidia-smi -q | head -40; dmesg | grep -i xid | tail",
                )
            )
        elif device.xid_recent:
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    f"XID errors in the last 10 minutes: {', '.join(str(x) for x in device.xid_recent)}",
                    "gpu_xid_errors",
                    (f"last XID {device.last_xid}",),
                    "dmesg | grep -i xid | tail",
                )
            )
        elif (device.memory_used_ratio or 0) >= GPU_MEMORY_FULL_RATIO:
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    f"GPU memory {device.memory_used_ratio:.0%} full",
                    "gpu_memory_full",
                    (_used_of(device.memory_used_bytes, device.memory_total_bytes),),
                    "nvidia-smi --query-compute-apps=pid,used_memory --format=csv",
                )
            )
        elif device.throttle_reasons:
            links.append(
                Link(
                    name,
                    "resources",
                    False,
                    f"clocks held down: {', '.join(device.throttle_reasons)}",
                    "gpu_throttled",
                    (f"temperature {device.temperature_celsius} C, power {device.power_draw_watts} W",),
                    "nvidia-smi -q -d PERFORMANCE,TEMPERATURE,POWER",
                )
            )
        else:
            used = f"{device.memory_used_ratio:.0%}" if device.memory_used_ratio is not None else "?"
            util = f"{device.utilization:.0%}" if device.utilization is not None else "?"
            links.append(
                Link(
                    name, "resources", True, f"memory {used} used, {util} busy, {device.processes} processes"
                )
            )
    if gpu.compatibility_problems:
        links.append(
            Link(
                "cuda",
                "resources",
                False,
                gpu.compatibility_problems[0],
                "cuda_incompatible",
                tuple(gpu.compatibility_problems[:4]),
                "nvidia-smi; python -c 'import torch; print(torch.version.cuda)'",
            )
        )
    return links


def _gpu_idle_links(engine: Any, gpu: Any) -> list[Link]:
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
                    f"{_number(instance.waiting)} requests wait while its GPUs are idle",
                    "gpu_idle_with_backlog",
                    ("GPU utilization 0% on every GPU of the engine",),
                    "nvidia-smi; py-spy dump --pid $(pgrep -f vllm | head -1)",
                )
            )
    return links


# --- stalls ----------------------------------------------------------------------------------------


def _stall_links(engine: Any, redis: Any, gpu: Any) -> list[Link]:
    links = _gpu_idle_links(engine, gpu)
    for instance in engine.engines.values() if engine is not None else []:
        if instance.up and instance.stalled:
            links.append(
                Link(
                    f"engine {instance.name}",
                    "stall",
                    False,
                    f"{_number(instance.waiting)} requests wait, no token generated since the last reading",
                    "engine_stalled",
                    (f"generation tokens flat at {_number(instance.generation_tokens)}",),
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


FORENSICS_RECENT_SECONDS = 900.0  # stacks older than this say nothing about the service now


def _forensics_links(forensics: Any, now: float) -> list[Link]:
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


# --- the exporter itself -------------------------------------------------------------------------


def _exporter_links(health: Mapping[str, CollectorHealth]) -> list[Link]:
    links = []
    for name, h in sorted(health.items()):
        if h.runs and not h.success:
            state = "stuck" if h.stuck else "failing"
            links.append(
                Link(
                    f"collector {name}",
                    "exporter",
                    False,
                    f"{state}: {h.last_error}",
                    reason="collector_stuck" if h.stuck else "collector_failed",
                    evidence=(f"collector {name} last error: {h.last_error}",),
                    next_command="autoglm-exporter doctor --log.level=debug",
                )
            )
    return links


# --- small helpers ---------------------------------------------------------------------------------


def _pids(service: Any) -> str:
    return ", ".join(str(pid) for pid in service.pids[:5])


def _host_port(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0]


def _number(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _used_of(used: int | None, total: int | None) -> str:
    return f"{_gib(used or 0)} used of {_gib(total or 0)}"


def _gib(value: int) -> str:
    return f"{value / 2**30:.1f} GiB"


Deriver = Callable[[Mapping[str, Any], Mapping[str, CollectorHealth]], tuple[list[Family], Diagnosis]]


def derive(facts: Mapping[str, Any], health: Mapping[str, CollectorHealth]) -> tuple[list[Family], Diagnosis]:
    """What the store adds to every page: the verdict as metrics, and the diagnosis itself."""
    diagnosis = diagnose(facts, health)
    return verdict_families(diagnosis), diagnosis
