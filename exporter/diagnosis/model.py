"""What a diagnosis is made of: the layers, the bounded reasons, links, verdicts, history."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..base.hostport import HostPort, HostPortError, parse_host_port, url_host_port
from ..config.collectors import declared
from ..facts.engine import EngineInstanceFacts
from ..facts.process import ServiceFacts
from ..logs.redact import redact

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
    "service": (
        "process_missing",
        "port_not_listening",
        "port_taken",
        "restarting",
        "log_errors",
        "worker_died",
    ),
    "dependencies": (
        "redis_down",
        "engine_down",
        "engine_not_generating",
        "engine_sleeping",
        "dependency_probe_failed",
    ),
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
        "worker_stuck",
    ),
    "exporter": ("collector_failed", "collector_stuck", "capture_not_permitted"),
}

# One fault seen from the service's side (its process reading) and from the user's (the refusal
# its probe meets): the user's side names it.
SAME_FAULT: dict[str, frozenset[str]] = {
    "process_missing": frozenset({"process_dead"}),
    "port_not_listening": frozenset({"not_listening", "wrong_port"}),
}


@dataclass(frozen=True)
class Link:
    name: str  # unique among the links: the verdict remembers each link's state by it
    layer: str
    ok: bool | None  # None: not known (its collector failed, is disabled, or has not run)
    summary: str
    reason: str = "ok"
    evidence: tuple[str, ...] = ()
    next_command: str | None = None
    # The collector whose readings decide this link: a new state must hold for that many of ITS
    # readings (config diagnosis.confirm_readings) before the verdict believes it.
    source: str = ""
    # What the link is about: a service, Redis instance or engine by its configured name, so it
    # belongs to the chains of the services that depend on it. None: the machine or the exporter.
    subject: str | None = None
    # Readings the state already held when the link judged a window itself (queue growth over
    # several readings, stacks compared over several dumps): no need to wait for more.
    held: int = 0
    # When the condition began, when the link knows better than its first reading (the first
    # error line in the log, the first flat token reading). Seconds since the epoch.
    began_at: float | None = None
    # The collector whose next reading may explain this state otherwise (the process reading that
    # says why a port refuses; the user's probe, which names a vanished process as a refusal):
    # the state waits for that reading, at most one reading of its own longer.
    awaits: str | None = None

    def __post_init__(self) -> None:
        # A misspelt reason would publish healthy=0 with every verdict series at 0: refuse it here.
        if self.layer not in REASONS:
            raise ValueError(f"link {self.name!r}: unknown layer {self.layer!r}")
        if self.reason != "ok" and self.reason not in REASONS[self.layer]:
            raise ValueError(
                f"link {self.name!r}: {self.layer}/{self.reason} is not a known reason (REASONS)"
            )
        if self.ok is False and self.reason == "ok":
            raise ValueError(f"link {self.name!r}: a broken link needs a reason")
        # The readings a link counts and waits for are a declared collector's, as declared.
        if self.source:
            try:
                source = declared(self.source)
            except KeyError:
                raise ValueError(f"link {self.name!r}: {self.source!r} is not a declared collector") from None
            if self.awaits is not None and self.awaits not in source.awaits:
                raise ValueError(
                    f"link {self.name!r}: {self.source} does not declare that it awaits {self.awaits}"
                )
        # Every surface (metrics, /api/diagnosis, the page, doctor, the history) shows links, so a
        # link never holds a secret: what the world wrote into it (an address with user:password@,
        # an error message, a command line) is redacted when it is made, replace() included.
        object.__setattr__(self, "summary", redact(self.summary))
        object.__setattr__(self, "evidence", tuple(redact(line) for line in self.evidence))
        if self.next_command is not None:
            object.__setattr__(self, "next_command", redact(self.next_command))


@dataclass(frozen=True)
class ChainVerdict:
    """The verdict of one user-facing service: the cause the chain names, and since when."""

    service: str
    verdict: Link | None  # None: healthy
    since: float | None  # when this verdict (or health) began; None: before the exporter started
    users_hurt: bool  # its client probe fails, or the cause is in the client/network/service/stall layer

    @property
    def healthy(self) -> bool:
        return self.verdict is None


@dataclass(frozen=True)
class Change:
    """One entry of the incident timeline: a link or a verdict changed state."""

    at: float | None  # when it was observed; None: already so when the exporter started
    kind: str  # "link" (one link broke or cleared) or "verdict" (what a chain names changed)
    name: str  # the link's name, or the service of the chain
    layer: str | None  # None when it cleared / the chain became healthy
    reason: str | None
    summary: str


@dataclass(frozen=True)
class Diagnosis:
    links: tuple[Link, ...]
    chains: tuple[ChainVerdict, ...] = ()
    recent_errors: tuple[str, ...] = ()  # the last matching log lines, redacted, newest last
    history: tuple[Change, ...] = ()  # oldest first, bounded
    link_since: tuple[tuple[str, float | None], ...] = ()  # broken link name -> since when
    one_shot: bool = True  # a single reading (doctor): no since, no history
    started_at: float = 0.0  # when the exporter started watching

    @property
    def verdict(self) -> Link | None:
        """The verdict of the first chain that is broken (there is usually one chain)."""
        return next((chain.verdict for chain in self.chains if chain.verdict is not None), None)

    @property
    def healthy(self) -> bool:
        return self.verdict is None


def engine_subject(instance: EngineInstanceFacts) -> str:
    """What an engine's links are about: the service it runs in, when it has one, so that the
    engine's metrics and the probes of that service speak of the same thing."""
    return instance.service or instance.name


def pid_list(service: ServiceFacts) -> str:
    return ", ".join(str(pid) for pid in service.pids[:5])


def redis_cli(address: str) -> str:
    """The redis-cli command line that reaches a Redis at a configured HOST:PORT."""
    try:
        where = parse_host_port(address)
    except HostPortError:
        return "redis-cli"  # the config refuses such an address: no -h/-p to suggest
    return f"redis-cli -h {where.host} -p {where.port}"


def address_of(url: str) -> HostPort | None:
    """Where a probe URL (or a tcp target's HOST:PORT) connects; None when unreadable (the config
    refuses such targets, so only facts built by hand can hold one)."""
    try:
        return url_host_port(url)
    except HostPortError:
        return None


def number(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def used_of(used: int | None, total: int | None) -> str:
    return f"{gib(used or 0)} used of {gib(total or 0)}"


def gib(value: int) -> str:
    return f"{value / 2**30:.1f} GiB"


def clock(at: float | None) -> str:
    """A moment as people read it on this host: 14:05:12 today, with the date otherwise."""
    if at is None:
        return "before start"
    moment = time.localtime(at)
    today = time.localtime().tm_yday == moment.tm_yday and time.localtime().tm_year == moment.tm_year
    return time.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S", moment)


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        hours, minutes = divmod(int(seconds // 60), 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{seconds / 86400:.0f} d"


def since_text(healthy: bool, since: float | None, now: float) -> str:
    """ "broken since 14:05:12 (4 min)"; "... since before the exporter started" when it was so then."""
    if since is None:
        return "healthy since the exporter started" if healthy else "broken since before the exporter started"
    return f"{'healthy' if healthy else 'broken'} since {clock(since)} ({duration(now - since)})"
