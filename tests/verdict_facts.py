"""Typed facts for verdict tests, built with the collectors' own dataclasses, and a feed that
publishes them to the real Diagnoser one collector reading at a time, as the store does."""

from __future__ import annotations

from dataclasses import replace

from autoglm_exporter.base.health import CollectorHealth
from autoglm_exporter.base.published import Published
from autoglm_exporter.config import (
    Config,
    EngineConfig,
    ProbeTarget,
    ProcessMatch,
    RedisConfig,
    ServiceConfig,
)
from autoglm_exporter.diagnosis import Diagnoser, Diagnosis
from autoglm_exporter.facts.container import ContainerFacts, ContainerServiceFacts
from autoglm_exporter.facts.engine import EngineFacts, EngineInstanceFacts
from autoglm_exporter.facts.forensics import ForensicsFacts, ServiceEvidence
from autoglm_exporter.facts.inflight import InFlightFacts, InFlightProbe
from autoglm_exporter.facts.logs import LogFacts, LogMatch, LogsFacts
from autoglm_exporter.facts.probe import ProbeFacts, ProbeOutcome, TargetFacts
from autoglm_exporter.facts.process import ProcessFacts, ServiceFacts
from autoglm_exporter.facts.redis import RedisFacts, RedisInstanceFacts
from autoglm_exporter.facts.system import SystemFacts
from autoglm_exporter.forensics.analysis import Analysis, ThreadReport
from autoglm_exporter.linux.procfs import SystemStat

T0 = 1_800_000_000.0
URL = "http://127.0.0.1:8080/inference"

CONFIG = Config(
    services=(ServiceConfig("api", ProcessMatch(port=8080), port=8080, depends_on=("queue", "vllm")),),
    targets=(ProbeTarget("inference", "inference", URL, service="api"),),
    redis=(RedisConfig("queue"),),
    engines=(EngineConfig("vllm", service="vllm"),),
    logs=(),
)


def service(
    up: bool = True, ports: tuple[int, ...] = (8080,), name: str = "api", pid: int = 4242, **fields
) -> ServiceFacts:
    facts = ServiceFacts(name, expected_port=8080, **fields)
    if up:
        facts.pids = [pid]
        facts.main_pid = pid
        facts.threads = 12
        facts.listening_ports = list(ports)
        facts.expected_port_listening = 8080 in ports
    return facts


def processes(*services: ServiceFacts) -> ProcessFacts:
    return ProcessFacts({s.name: s for s in services or (service(),)})


def target(
    name: str = "inference", ok: bool = True, reason: str | None = None, at: float = T0, **kwargs
) -> TargetFacts:
    module = kwargs.pop("module", "inference")
    layer = kwargs.pop("layer", "client")
    url = kwargs.pop("url", URL)
    owner = kwargs.pop("service", "api")
    outcome = ProbeOutcome(ok, reason=reason, error=None if ok else f"failed: {reason}", **kwargs)
    return TargetFacts(name, module, layer, owner, url, outcome, 0 if ok else 2, at)


def probes(*targets: TargetFacts) -> ProbeFacts:
    return ProbeFacts({t.name: t for t in targets})


def failing(reason: str = "read_timeout", at: float = T0) -> ProbeFacts:
    return probes(target(ok=False, reason=reason, connected=reason not in ("connect_refused",), at=at))


def waiting(
    waited: float, connected: bool = True, name: str = "inference", stalled: float = 0.0, **kwargs
) -> InFlightFacts:
    """A probe in flight that has waited `waited` s, `stalled` s of them with the exporter itself stalled."""
    url = f"http://127.0.0.1:8080/{name}"
    service, layer = kwargs.get("service", "api"), kwargs.get("layer", "client")
    probe = InFlightProbe(name, service, layer, url, T0, waited, connected, stalled)
    return InFlightFacts({name: probe})


NOT_WAITING = InFlightFacts({})


def system(busy: float = 0.1, cpus: int = 2) -> SystemFacts:
    stat = SystemStat({}, cpus, 0, 0, 1, 0, T0 - 1e5)
    gib = 2**30
    return SystemFacts(stat, {"MemTotal": 16 * gib, "MemAvailable": 8 * gib}, (0.5, 0.5, 0.5), 1000.0, busy)


def redis(up: bool = True, depth: int | None = 0) -> RedisFacts:
    instance = RedisInstanceFacts(
        "queue",
        "127.0.0.1:6379",
        up,
        None if up else "connect_refused",
        None if up else "connection refused",
        0.001 if up else None,
        3 if up else None,
        0,
        None,
        None,
        {"requests": depth} if up else {},
        {},
    )
    return RedisFacts({"queue": instance})


def engine(waiting: float = 0.0, tokens: float = 100.0, stalled: bool = False, flat: int = 0) -> EngineFacts:
    """`flat`: readings in a row with requests waiting and no new token; `stalled`: over the window."""
    instance = EngineInstanceFacts(
        "vllm", "vllm", "vllm", True, None, None, waiting, 1.0, 0.3, tokens, 0.0 if flat else 5.0, stalled,
        T0 if flat else None, flat_readings=flat,
    )  # fmt: skip
    return EngineFacts({"vllm": instance})


def cuda_oom_log(at: float) -> LogsFacts:
    line = LogMatch(at, "cuda_oom", "torch.OutOfMemoryError: CUDA out of memory")
    facts = LogFacts("error", "/var/log/api/error.log", "api", True, None, {"cuda_oom": 1}, {}, (line,))
    return LogsFacts({"error": facts})


def throttled_cgroup() -> ContainerFacts:
    facts = ContainerServiceFacts(
        "api", pid=4242, cgroup_version=2, cgroup_path="/svc", cpu_quota_cores=0.5, cpu_throttled_fraction=0.6
    )
    return ContainerFacts({"api": facts})


def deadlock(at: float) -> ForensicsFacts:
    threads = tuple(
        ThreadReport(
            n, None, f"worker-{n}", "blocked", "lock", None, 3, 0, f"worker-{n} waits on a lock at app.py:{n}"
        )
        for n in (1, 2)
    )
    analysis = Analysis(
        4242, 3, 1.0, False, threads, True, "2 threads wait on locks that never move (possible deadlock)"
    )
    return ForensicsFacts({"api": ServiceEvidence("api", at, None, analysis, pid=4242)})


class Feed:
    """Publishes facts one collector reading at a time to a real Diagnoser, as the store does."""

    def __init__(self, config: Config = CONFIG, confirm: int = 2) -> None:
        self.now = T0
        config = replace(config, diagnosis=replace(config.diagnosis, confirm_readings=confirm))
        self.diagnoser = Diagnoser(config, clock=lambda: self.now)
        self.facts: dict[str, object] = {}
        self.observed: dict[str, float] = {}
        self.health: dict[str, CollectorHealth] = {}
        self.diagnosis: Diagnosis | None = None
        self.families: list = []
        self.read_again: set[str] = set()  # what the diagnoser asked to read again soon, last derive
        self.diagnoser.when_unconfirmed(self._asked)

    def _asked(self, sources: set[str]) -> None:
        self.read_again = set(sources)

    def publish(self, name: str, facts: object, after: float = 1.0) -> Diagnosis:
        """One reading of collector `name` (None: its run failed), `after` seconds after the last."""
        self.now += after
        health = self.health.setdefault(name, CollectorHealth())
        health.runs += 1
        health.success = facts is not None
        if facts is None:
            self.facts.pop(name, None)
        else:
            self.facts[name] = facts
        self.observed[name] = self.now
        return self._derive(name)

    def touch(self, forensics: ForensicsFacts, after: float = 0.5) -> Diagnosis:
        """A stack capture finished: not a reading of any collector."""
        self.now += after
        self.facts["forensics"] = forensics
        return self._derive(None)

    def _derive(self, publisher: str | None) -> Diagnosis:
        health = {name: replace(h, errors=dict(h.errors)) for name, h in self.health.items()}
        published = Published(dict(self.facts), dict(self.observed), health, publisher)
        self.families, self.diagnosis = self.diagnoser.derive(published)
        return self.diagnosis

    def verdict(self) -> tuple[str, str] | None:
        assert self.diagnosis is not None
        verdict = self.diagnosis.verdict
        return (verdict.layer, verdict.reason) if verdict else None

    def verdict_changes(self) -> list[tuple[str | None, str | None]]:
        assert self.diagnosis is not None
        return [(c.layer, c.reason) for c in self.diagnosis.history if c.kind == "verdict"]

    def healthy_start(self) -> None:
        """Every collector of the chain reads healthy once."""
        self.publish("process", processes())
        self.publish("probe", probes(target(at=self.now + 1)))
        self.publish("redis", redis())
        self.publish("engine", engine())
        self.publish("system", system())
        self.publish("inflight", NOT_WAITING)
