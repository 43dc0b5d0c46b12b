"""The configuration file: strict YAML, validated once, every error reported with its path.

With no file at all the defaults watch the seed's setup: the Open-AutoGLM API on port 8080
(probed with the seed's own inference request), the vLLM engine on 127.0.0.1:8000 (probed by
generating one token, its /health and its /metrics), Redis on 127.0.0.1:6379 and the seed's error
log. Unknown keys are errors (a typo must not silently turn a check off), and all problems are
collected so a user fixes the file in one pass. Secrets are named (an environment variable or a
file), never written in the config, and read only when used.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from .check import Checker

DEFAULT_INTERVAL = 10.0
DEFAULT_TIMEOUT = 8.0
DEFAULT_JITTER = 1.0

KNOWN_COLLECTORS = (
    "system",
    "process",
    "probe",
    "inflight",
    "redis",
    "engine",
    "logs",
    "gpu",
    "container",
    "environment",
)
ENVIRONMENT_INTERVAL = 300.0  # running each service's interpreter to list packages is not a 10 s job
INFLIGHT_INTERVAL = 1.0  # how long the probes now waiting have waited: cheap, and a hang is news at once
PROBE_MODULES = ("inference", "openai_chat", "http", "tcp")
PROBE_LAYERS = ("client", "dependencies")
QUEUE_TYPES = ("list", "stream", "zset", "stream_pending")
ENGINE_KINDS = ("vllm", "sglang")

# The seed's synthetic request and its timeouts (connect 10 s, total 30 s).
INFERENCE_BODY = {"prompt": "Hello", "max_tokens": 50}
INFERENCE_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
DEFAULT_ERROR_LOG = "/var/log/open-autoglm/error.log"


class ConfigError(Exception):
    """The file is unusable; `errors` lists every problem, each prefixed by its path."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"bad config {source}:\n  " + "\n  ".join(errors))


@dataclass(frozen=True)
class CollectorConfig:
    enabled: bool = True
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class ProcessMatch:
    """How to find a service's processes; a process matching ANY given rule belongs to it."""

    cmdline: str | None = None  # a regular expression searched in the NUL-joined command line
    exe: str | None = None  # the exact path of the executable
    pidfile: str | None = None
    port: int | None = None  # the TCP port it listens on


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    match: ProcessMatch
    include_children: bool = False
    port: int | None = None  # the port it is expected to listen on
    # What the service needs to answer: names of Redis instances, engines or other services. An
    # incident in any of them is an incident of this service (alert grouping and inhibition).
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Secret:
    """Where a secret lives; the value itself is read only when needed and never kept in config."""

    env: str | None = None
    file: str | None = None

    def __bool__(self) -> bool:
        return bool(self.env or self.file)


@dataclass(frozen=True)
class ProbeTarget:
    name: str
    module: str  # inference | openai_chat | http | tcp
    url: str  # for tcp: HOST:PORT
    layer: str = "client"  # client: what users call; dependencies: what the service calls
    service: str | None = None  # the configured service this target belongs to (for the verdict)
    timeout: float = INFERENCE_TIMEOUT  # the whole probe, first byte to last
    connect_timeout: float = CONNECT_TIMEOUT
    body: Any = None  # the JSON request body (inference, openai_chat); None: the module's default
    model: str | None = None  # openai_chat: None asks GET /v1/models for the first model
    stream: bool = False  # openai_chat: stream and record the time to first token
    expect_status: tuple[int, ...] = ()  # empty: any 2xx
    expect_json_field: str | None = None  # dotted path that must exist in the JSON answer
    expect_body_regex: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    bearer_token: Secret = Secret()
    tls_ca_file: str | None = None
    tls_insecure_skip_verify: bool = False


@dataclass(frozen=True)
class RedisQueue:
    key: str
    type: str  # list | stream | zset | stream_pending
    group: str | None = None  # stream_pending: the consumer group


@dataclass(frozen=True)
class RedisConfig:
    name: str
    address: str = "127.0.0.1:6379"
    db: int = 0
    username: str | None = None
    password: Secret = Secret()
    timeout: float = 2.0
    queues: tuple[RedisQueue, ...] = ()


@dataclass(frozen=True)
class EngineConfig:
    name: str
    kind: str = "vllm"
    metrics_url: str = "http://127.0.0.1:8000/metrics"
    service: str | None = None
    timeout: float = 5.0


@dataclass(frozen=True)
class LogPattern:
    name: str
    regex: str


@dataclass(frozen=True)
class LogConfig:
    name: str
    path: str
    service: str | None = None
    patterns: tuple[LogPattern, ...] = ()  # in addition to the built-in ones
    trace: bool = False  # the file holds JSON trace points (timestamp, stage, request id)
    max_line_bytes: int = 8192


@dataclass(frozen=True)
class GpuConfig:
    nvml: bool = True  # read through NVML (nvidia-ml-py); False goes straight to nvidia-smi
    nvidia_smi: str = "nvidia-smi"  # the fallback command, a name on PATH or a path
    call_timeout: float = 5.0  # deadline of one NVML cycle or one nvidia-smi run


@dataclass(frozen=True)
class ForensicsConfig:
    """Python stacks of a hung service, taken with py-spy before anyone restarts it."""

    enabled: bool = True
    trigger_after_failures: int = 3  # client probes of the service failed this many times in a row
    hang_after: float = 5.0  # a client probe of a live process still unanswered after this is a hang
    dumps: int = 3  # py-spy dumps per capture, a short interval apart
    dump_interval: float = 0.5
    timeout: float = 20.0  # the whole capture
    cooldown: float = 600.0  # at most one automatic capture per service in this time
    directory: str = "/var/lib/autoglm-exporter/captures"
    max_captures: int = 20
    max_bytes: int = 50 * 1024 * 1024
    py_spy: str = "py-spy"


@dataclass(frozen=True)
class DiagnosisConfig:
    # A new verdict must hold for this many readings before it replaces the current one (unless it
    # only says more about the same symptom): one noisy reading never flips the verdict.
    confirm_readings: int = 2


@dataclass(frozen=True)
class EnvironmentConfig:
    # service -> a snapshot file (autoglm-exporter snapshot -o) to compare with; by default the
    # first snapshot the exporter takes of the service is its baseline.
    baselines: dict[str, str] = field(default_factory=dict)
    model_dirs: tuple[str, ...] = ()  # hashed (cached by size and mtime) to notice changed weights


@dataclass(frozen=True)
class Config:
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    jitter: float = DEFAULT_JITTER
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    collectors: dict[str, CollectorConfig] = field(default_factory=dict)
    services: tuple[ServiceConfig, ...] = ()
    targets: tuple[ProbeTarget, ...] = ()
    redis: tuple[RedisConfig, ...] = ()
    engines: tuple[EngineConfig, ...] = ()
    logs: tuple[LogConfig, ...] = ()
    gpu: GpuConfig = GpuConfig()
    forensics: ForensicsConfig = ForensicsConfig()
    environment: EnvironmentConfig = EnvironmentConfig()
    diagnosis: DiagnosisConfig = DiagnosisConfig()
    source: str = "<defaults>"

    def collector(self, name: str) -> CollectorConfig:
        return self.collectors.get(name) or CollectorConfig(interval=self.interval, timeout=self.timeout)


DEFAULT_SERVICES = (
    ServiceConfig(
        "open-autoglm",
        ProcessMatch(cmdline=r"(?i)open[-_]?autoglm", port=8080),
        port=8080,
        depends_on=("redis", "vllm"),
    ),
    ServiceConfig("vllm", ProcessMatch(cmdline=r"vllm\.entrypoints|(^|/)vllm serve", port=8000), port=8000),
)
DEFAULT_TARGETS = (
    ProbeTarget("inference", "inference", "http://localhost:8080/inference", service="open-autoglm"),
    ProbeTarget(
        "vllm-generate", "openai_chat", "http://127.0.0.1:8000/v1/chat/completions", "dependencies", "vllm"
    ),
    ProbeTarget("vllm-health", "http", "http://127.0.0.1:8000/health", "dependencies", "vllm", timeout=5.0),
)
DEFAULT_REDIS = (RedisConfig("redis"),)
DEFAULT_ENGINES = (EngineConfig("vllm", service="vllm"),)
DEFAULT_LOGS = (LogConfig("error", DEFAULT_ERROR_LOG, service="open-autoglm"),)


def default_config() -> Config:
    return _build({}, "<defaults>")


def load_config(path: str | None) -> Config:
    """Read and validate a config file; None means the built-in defaults."""
    if path is None:
        return default_config()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(path, [f"cannot read file: {exc.strerror}"]) from None
    return parse_config(text, path)


def parse_config(text: str, source: str = "<string>") -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}invalid YAML: {problem}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, ["top level must be a mapping"])
    return _build(raw, source)


TOP_LEVEL_KEYS = (
    "global", "paths", "collectors", "services", "targets", "redis", "engines", "logs", "gpu", "forensics",
    "environment", "diagnosis",
)  # fmt: skip


def _build(raw: dict[str, Any], source: str) -> Config:
    check = Checker()
    top = check.mapping(raw, "", TOP_LEVEL_KEYS)

    glob = check.mapping(top.get("global"), "global", ("interval", "timeout", "jitter"))
    interval = check.duration(glob, "interval", "global", DEFAULT_INTERVAL)
    timeout = check.duration(glob, "timeout", "global", DEFAULT_TIMEOUT)
    jitter = DEFAULT_JITTER
    if "jitter" in glob:
        jitter = 0.0 if glob["jitter"] in (0, "0", "0s") else check.duration(glob, "jitter", "global", jitter)

    paths = check.mapping(top.get("paths"), "paths", ("proc", "sys"))
    proc_root = check.string(paths, "proc", "paths", "/proc") or "/proc"
    sys_root = check.string(paths, "sys", "paths", "/sys") or "/sys"

    # A section that is given replaces its defaults; an empty list means "none".
    services = _services(check, top["services"]) if "services" in top else DEFAULT_SERVICES
    targets = _targets(check, top["targets"]) if "targets" in top else DEFAULT_TARGETS
    redis = _redis(check, top["redis"]) if "redis" in top else DEFAULT_REDIS
    engines = _engines(check, top["engines"]) if "engines" in top else DEFAULT_ENGINES
    logs = _logs(check, top["logs"]) if "logs" in top else DEFAULT_LOGS
    known = {service.name for service in services}
    _check_service_references(check, known, top)
    services = _dependencies(check, services, top, {r.name for r in redis} | {e.name for e in engines})
    # Defaults point at the default services; with other services they point at nothing.
    targets, engines, logs = (_drop_unknown_services(items, known) for items in (targets, engines, logs))

    gpu_section = check.mapping(top.get("gpu"), "gpu", ("nvml", "nvidia_smi", "call_timeout"))
    gpu = GpuConfig(
        nvml=check.boolean(gpu_section, "nvml", "gpu", True),
        nvidia_smi=check.string(gpu_section, "nvidia_smi", "gpu", "nvidia-smi") or "nvidia-smi",
        call_timeout=check.duration(gpu_section, "call_timeout", "gpu", 5.0),
    )

    forensics = _forensics(check, top.get("forensics"))
    diagnosis_section = check.mapping(top.get("diagnosis"), "diagnosis", ("confirm_readings",))
    diagnosis = DiagnosisConfig(
        confirm_readings=check.integer(diagnosis_section, "confirm_readings", "diagnosis", 2, minimum=1)
    )
    environment = _environment(check, top.get("environment"))

    # Probes wait up to their own timeouts; their collector's deadline must leave room for that.
    probe_timeout = max([timeout] + [t.timeout + 2.0 for t in targets])
    collectors = _collectors(
        check,
        top.get("collectors"),
        interval,
        timeout,
        timeouts={"probe": probe_timeout, "environment": 120.0, "gpu": max(timeout, gpu.call_timeout + 2.0)},
        intervals={
            "environment": max(interval, ENVIRONMENT_INTERVAL),
            "inflight": min(interval, INFLIGHT_INTERVAL),
        },
    )

    if check.errors:
        raise ConfigError(source, check.errors)
    return Config(
        interval=interval,
        timeout=timeout,
        jitter=jitter,
        proc_root=proc_root,
        sys_root=sys_root,
        collectors=collectors,
        services=services,
        targets=targets,
        redis=redis,
        engines=engines,
        logs=logs,
        gpu=gpu,
        forensics=forensics,
        environment=environment,
        diagnosis=diagnosis,
        source=source,
    )


def _forensics(check: Checker, raw: Any) -> ForensicsConfig:
    keys = (
        "enabled", "trigger_after_failures", "hang_after", "dumps", "dump_interval", "timeout", "cooldown",
        "directory", "max_captures", "max_bytes", "py_spy",
    )  # fmt: skip
    entry = check.mapping(raw, "forensics", keys)
    default = ForensicsConfig()
    return ForensicsConfig(
        enabled=check.boolean(entry, "enabled", "forensics", default.enabled),
        trigger_after_failures=check.integer(entry, "trigger_after_failures", "forensics", 3, minimum=1),
        hang_after=check.duration(entry, "hang_after", "forensics", default.hang_after),
        dumps=check.integer(entry, "dumps", "forensics", default.dumps, minimum=1),
        dump_interval=check.duration(entry, "dump_interval", "forensics", default.dump_interval),
        timeout=check.duration(entry, "timeout", "forensics", default.timeout),
        cooldown=check.duration(entry, "cooldown", "forensics", default.cooldown),
        directory=check.string(entry, "directory", "forensics", default.directory) or default.directory,
        max_captures=check.integer(entry, "max_captures", "forensics", default.max_captures, minimum=1),
        max_bytes=check.integer(entry, "max_bytes", "forensics", default.max_bytes, minimum=1024),
        py_spy=check.string(entry, "py_spy", "forensics", default.py_spy) or default.py_spy,
    )


def _environment(check: Checker, raw: Any) -> EnvironmentConfig:
    entry = check.mapping(raw, "environment", ("baselines", "model_dirs"))
    dirs = entry.get("model_dirs") or []
    if not isinstance(dirs, list) or not all(isinstance(d, str) and d for d in dirs):
        check.fail("environment.model_dirs", "must be a list of directories")
        dirs = []
    return EnvironmentConfig(check.string_map(entry, "baselines", "environment"), tuple(dirs))


def _collectors(
    check: Checker,
    raw: Any,
    interval: float,
    timeout: float,
    timeouts: dict[str, float],
    intervals: dict[str, float],
) -> dict[str, CollectorConfig]:
    section = check.mapping(raw, "collectors", KNOWN_COLLECTORS)
    result = {}
    for name in KNOWN_COLLECTORS:
        path = f"collectors.{name}"
        entry = check.mapping(section.get(name), path, ("enabled", "interval", "timeout"))
        result[name] = CollectorConfig(
            enabled=check.boolean(entry, "enabled", path, True),
            interval=check.duration(entry, "interval", path, intervals.get(name, interval)),
            timeout=check.duration(entry, "timeout", path, timeouts.get(name, timeout)),
        )
    return result


def _services(check: Checker, raw: Any) -> tuple[ServiceConfig, ...]:
    services = []
    for path, entry, name in check.named_list(raw, "services"):
        check.mapping(entry, path, ("name", "match", "include_children", "port", "depends_on"))
        match = _process_match(check, entry.get("match"), f"{path}.match")
        children = check.boolean(entry, "include_children", path, False)
        port = check.port(entry, "port", path)
        depends_on = entry.get("depends_on") or []
        if not isinstance(depends_on, list) or not all(isinstance(d, str) and d for d in depends_on):
            check.fail(
                f"{path}.depends_on", "must be a list of names of redis instances, engines or services"
            )
            depends_on = []
        if name and match:
            port = port if port is not None else match.port
            services.append(ServiceConfig(name, match, children, port, tuple(depends_on)))
    return tuple(services)


def _process_match(check: Checker, raw: Any, path: str) -> ProcessMatch | None:
    entry = check.mapping(raw, path, ("cmdline", "exe", "pidfile", "port"))
    before = len(check.errors)
    match = ProcessMatch(
        cmdline=check.regex(entry, "cmdline", path),
        exe=check.string(entry, "exe", path),
        pidfile=check.string(entry, "pidfile", path),
        port=check.port(entry, "port", path),
    )
    if not any((match.cmdline, match.exe, match.pidfile, match.port)):
        if len(check.errors) == before:
            check.fail(path, "needs at least one of cmdline, exe, pidfile, port")
        return None
    return match


PROBE_KEYS = (
    "name", "module", "url", "layer", "service", "timeout", "connect_timeout", "body", "model", "stream",
    "expect", "headers", "bearer_token_env", "bearer_token_file", "tls",
)  # fmt: skip


def _targets(check: Checker, raw: Any) -> tuple[ProbeTarget, ...]:
    targets = []
    for path, entry, name in check.named_list(raw, "targets"):
        check.mapping(entry, path, PROBE_KEYS)
        module = check.choice(entry, "module", path, "http", PROBE_MODULES)
        if "url" not in entry:
            check.fail(f"{path}.url", "is required")
        url = (check.address if module == "tcp" else check.url)(entry, "url", path) or ""
        total = check.duration(entry, "timeout", path, INFERENCE_TIMEOUT)
        connect = check.duration(entry, "connect_timeout", path, min(CONNECT_TIMEOUT, total))
        expect = check.mapping(entry.get("expect"), f"{path}.expect", ("status", "json_field", "body_regex"))
        tls = check.mapping(entry.get("tls"), f"{path}.tls", ("ca_file", "insecure_skip_verify"))
        body = entry.get("body")
        if body is not None and module not in ("inference", "openai_chat"):
            check.fail(f"{path}.body", "only the inference and openai_chat modules send a body")
        if not name:
            continue
        targets.append(
            ProbeTarget(
                name=name,
                module=module,
                url=url,
                layer=check.choice(entry, "layer", path, "client", PROBE_LAYERS),
                service=check.string(entry, "service", path),
                timeout=total,
                connect_timeout=connect,
                body=body,
                model=check.string(entry, "model", path),
                stream=check.boolean(entry, "stream", path, False),
                expect_status=_status_codes(check, expect.get("status"), f"{path}.expect.status"),
                expect_json_field=check.string(expect, "json_field", f"{path}.expect"),
                expect_body_regex=check.regex(expect, "body_regex", f"{path}.expect"),
                headers=check.string_map(entry, "headers", path),
                bearer_token=_secret(check, entry, "bearer_token", path),
                tls_ca_file=check.string(tls, "ca_file", f"{path}.tls"),
                tls_insecure_skip_verify=check.boolean(tls, "insecure_skip_verify", f"{path}.tls", False),
            )
        )
    return tuple(targets)


def _status_codes(check: Checker, raw: Any, path: str) -> tuple[int, ...]:
    if raw is None:
        return ()
    codes = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes):
        check.fail(path, f"must be an HTTP status code or a list of them, got {raw!r}")
        return ()
    return tuple(codes)


def _secret(check: Checker, entry: dict[str, Any], prefix: str, path: str) -> Secret:
    secret = Secret(check.string(entry, f"{prefix}_env", path), check.string(entry, f"{prefix}_file", path))
    if secret.env and secret.file:
        check.fail(path, f"give {prefix}_env or {prefix}_file, not both")
    return secret


def _redis(check: Checker, raw: Any) -> tuple[RedisConfig, ...]:
    keys = ("name", "address", "db", "username", "password_env", "password_file", "timeout", "queues")
    result = []
    for path, entry, name in check.named_list(raw, "redis"):
        check.mapping(entry, path, keys)
        config = RedisConfig(
            name=name,
            address=check.address(entry, "address", path, "127.0.0.1:6379") or "127.0.0.1:6379",
            db=check.integer(entry, "db", path, 0),
            username=check.string(entry, "username", path),
            password=_secret(check, entry, "password", path),
            timeout=check.duration(entry, "timeout", path, 2.0),
            queues=_queues(check, entry.get("queues"), f"{path}.queues"),
        )
        if name:
            result.append(config)
    return tuple(result)


def _queues(check: Checker, raw: Any, path: str) -> tuple[RedisQueue, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        check.fail(path, "must be a list")
        return ()
    queues = []
    for index, item in enumerate(raw):
        where = f"{path}[{index}]"
        entry = check.mapping(item, where, ("key", "type", "group"))
        key = check.string(entry, "key", where)
        if key is None and "key" not in entry:
            check.fail(f"{where}.key", "is required")
        kind = check.choice(entry, "type", where, "list", QUEUE_TYPES)
        group = check.string(entry, "group", where)
        if kind == "stream_pending" and not group:
            check.fail(f"{where}.group", "is required for type stream_pending")
        if key:
            queues.append(RedisQueue(key, kind, group))
    return tuple(queues)


def _engines(check: Checker, raw: Any) -> tuple[EngineConfig, ...]:
    result = []
    for path, entry, name in check.named_list(raw, "engines"):
        check.mapping(entry, path, ("name", "kind", "metrics_url", "service", "timeout"))
        engine = EngineConfig(
            name=name,
            kind=check.choice(entry, "kind", path, "vllm", ENGINE_KINDS),
            metrics_url=check.url(entry, "metrics_url", path, "http://127.0.0.1:8000/metrics") or "",
            service=check.string(entry, "service", path),
            timeout=check.duration(entry, "timeout", path, 5.0),
        )
        if name:
            result.append(engine)
    return tuple(result)


def _logs(check: Checker, raw: Any) -> tuple[LogConfig, ...]:
    result = []
    for path, entry, name in check.named_list(raw, "logs"):
        check.mapping(entry, path, ("name", "path", "service", "patterns", "trace", "max_line_bytes"))
        file_path = check.string(entry, "path", path)
        if file_path is None and "path" not in entry:
            check.fail(f"{path}.path", "is required")
        patterns = []
        for pattern_path, pattern, pattern_name in check.named_list(
            entry.get("patterns"), f"{path}.patterns"
        ):
            check.mapping(pattern, pattern_path, ("name", "regex"))
            regex = check.regex(pattern, "regex", pattern_path)
            if regex is None and "regex" not in pattern:
                check.fail(f"{pattern_path}.regex", "is required")
            if regex and pattern_name:
                patterns.append(LogPattern(pattern_name, regex))
        log = LogConfig(
            name=name,
            path=file_path or "",
            service=check.string(entry, "service", path),
            patterns=tuple(patterns),
            trace=check.boolean(entry, "trace", path, False),
            max_line_bytes=check.integer(entry, "max_line_bytes", path, 8192, minimum=256),
        )
        if name:
            result.append(log)
    return tuple(result)


def _check_service_references(check: Checker, known: set[str], top: dict[str, Any]) -> None:
    for section in ("targets", "engines", "logs"):
        items = top.get(section)
        for index, item in enumerate(items if isinstance(items, list) else []):
            service = item.get("service") if isinstance(item, dict) else None
            if isinstance(service, str) and service not in known:
                check.fail(f"{section}[{index}].service", f"no service named {service!r} in services")


def _dependencies(
    check: Checker, services: tuple[ServiceConfig, ...], top: dict[str, Any], others: set[str]
) -> tuple[ServiceConfig, ...]:
    """Check what each service depends on; the defaults' dependencies that are not configured go."""
    known = others | {service.name for service in services}
    given = "services" in top
    checked = []
    for index, service in enumerate(services):
        for name in service.depends_on:
            if given and name not in known:
                check.fail(f"services[{index}].depends_on", f"no redis, engine or service named {name!r}")
            elif name == service.name:
                check.fail(f"services[{index}].depends_on", "a service cannot depend on itself")
        checked.append(replace(service, depends_on=tuple(n for n in service.depends_on if n in known)))
    return tuple(checked)


def _drop_unknown_services(items: tuple[Any, ...], known: set[str]) -> Any:
    return tuple(
        item if item.service in known or item.service is None else replace(item, service=None)
        for item in items
    )
