"""The configuration's schema: every key declared once, as a field of a frozen dataclass.

The dataclasses are shaped like the YAML file, field for field; pydantic validates a file against
them (unknown keys are errors, every value has its kind and limits from types.py), and the same
classes are what the rest of the exporter reads. A few properties give derived views (a Secret
from its *_env / *_file keys, a target's expectations) without declaring a key twice.

With no file at all the defaults watch the seed's setup: the Open-AutoGLM API on port 8080
(probed with the seed's own inference request), the vLLM engine on 127.0.0.1:8000 (probed by
generating one token, its /health and its /metrics), Redis on 127.0.0.1:6379 and the seed's error
log. A list section that is given replaces its defaults; [] means none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, model_validator
from pydantic.dataclasses import dataclass, rebuild_dataclass
from pydantic_core import InitErrorDetails, PydanticCustomError

from .collectors import (
    DAY,
    DECLARED,
    HOUR,
    CollectorDeclaration,
    CollectorSettings,
    Interval,
    Timeout,
    declared,
)
from .types import (
    Boolean,
    Choice,
    Duration,
    Name,
    Port,
    Regex,
    Simple,
    StringMap,
    Text,
    Texts,
    WholeNumber,
    check_address,
    check_url,
)

MINUTE = 60.0

DEFAULT_INTERVAL = 10.0
DEFAULT_TIMEOUT = 8.0
DEFAULT_JITTER = 1.0
PROBE_MODULES = ("inference", "openai_chat", "http", "tcp")
PROBE_LAYERS = ("client", "dependencies")
QUEUE_TYPES = ("list", "stream", "zset", "stream_pending")
ENGINE_KINDS = ("vllm", "sglang")

# The seed's synthetic request and its timeouts (connect 10 s, total 30 s).
INFERENCE_BODY = {"prompt": "Hello", "max_tokens": 50}
INFERENCE_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
DEFAULT_ERROR_LOG = "/var/log/open-autoglm/error.log"

# Strict: a key the schema does not declare is an error (a typo must not switch a check off).
STRICT = ConfigDict(extra="forbid", populate_by_name=True)

CallTimeout = Annotated[float, Duration(maximum=10 * MINUTE)]


# A check that needs several keys raises "KEY: message"; the error report files it under KEY.
def _invalid(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


Problems = Iterator[tuple[str, str]]  # (the key it is about, "" for the item; the message)


class _Bad:
    """The value of a key that is bad on its own (given, but not checked with the others)."""

    def __repr__(self) -> str:
        return "BAD"


BAD: Any = _Bad()


class CrossChecked:
    """An item whose keys are also checked together (`cross_problems`). Those checks run when some
    of its keys are bad too, on the keys that are good, so a report lists every error of the item:
    `url: ftp://x` beside `module: grpc` gives both errors, not only the module's."""

    @classmethod
    def cross_problems(cls, values: Mapping[str, Any]) -> Problems:
        """The problems of the keys together; a key that is bad on its own is BAD in `values`."""
        return iter(())

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            item = handler(data)
        except ValidationError as exc:
            if not isinstance(data, dict):
                raise
            bad = {str(error["loc"][0]): BAD for error in exc.errors() if error["loc"]}
            found = [_rebuilt(error) for error in exc.errors()] + _details(
                cls, {**_defaults(cls), **data, **bad}
            )
            raise ValidationError.from_exception_data(cls.__name__, found) from None
        found = _details(cls, {field.name: getattr(item, field.name) for field in dataclasses.fields(item)})
        if found:
            raise ValidationError.from_exception_data(cls.__name__, found)
        return item


def _defaults(cls: type) -> dict[str, Any]:
    fields = dataclasses.fields(cls)
    return {field.name: field.default for field in fields if field.default is not dataclasses.MISSING}


def _details(cls: type[CrossChecked], values: Mapping[str, Any]) -> list[InitErrorDetails]:
    return [
        InitErrorDetails(type=_invalid("cross", message), loc=(key,) if key else (), input=None)
        for key, message in cls.cross_problems(values)
    ]


def _rebuilt(error: Any) -> InitErrorDetails:
    """A reported error as it can be raised again (the report reads only its kind and message)."""
    return InitErrorDetails(
        type=PydanticCustomError(error["type"], error["msg"]), loc=error["loc"], input=None
    )


@dataclass(frozen=True)
class Secret:
    """Where a secret lives (built from a section's *_env / *_file keys); the value itself is read
    only when used (config/credentials.py) and never kept in the config."""

    env: str | None = None
    file: str | None = None

    def __bool__(self) -> bool:
        return bool(self.env or self.file)


def _one_secret(prefix: str, values: Mapping[str, Any]) -> Problems:
    if values.get(f"{prefix}_env") and values.get(f"{prefix}_file"):
        yield "", f"give {prefix}_env or {prefix}_file, not both"


@dataclass(frozen=True, config=STRICT)
class GlobalConfig:
    interval: Interval = DEFAULT_INTERVAL  # how often each collector runs
    timeout: Timeout = DEFAULT_TIMEOUT  # deadline of one run
    jitter: Annotated[float, Duration(maximum=HOUR, allow_zero=True)] = DEFAULT_JITTER


@dataclass(frozen=True, config=STRICT)
class PathsConfig:
    proc: Text = "/proc"  # the host's /proc mounted elsewhere in a container
    sys: Text = "/sys"


@dataclasses.dataclass(frozen=True)
class CollectorConfig:
    """A collector's settings resolved against `global` and its own defaults (not a file section)."""

    enabled: bool = True
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT


def _collectors_section(declared: list[CollectorDeclaration]) -> type:
    """The `collectors:` section: one key per declared collector, its section type the value."""
    fields = [(d.name, d.section, dataclasses.field(default=d.section())) for d in declared]
    section = dataclasses.make_dataclass("CollectorsConfig", fields, frozen=True)
    section.__module__ = __name__
    return dataclass(frozen=True, config=STRICT)(section)


if TYPE_CHECKING:

    class CollectorsConfig:
        """For the type checker: a CollectorSettings per declared collector, by name."""

        def __getattr__(self, name: str) -> CollectorSettings: ...

else:
    CollectorsConfig = _collectors_section(DECLARED)


@dataclass(frozen=True, config=STRICT)
class ProcessMatch(CrossChecked):
    """How to find a service's processes; a process matching ANY given rule belongs to it."""

    cmdline: Regex | None = None  # searched in the NUL-joined command line
    exe: Text | None = None  # the exact path of the executable
    pidfile: Text | None = None
    port: Port | None = None  # the TCP port it listens on

    @classmethod
    def cross_problems(cls, values: Mapping[str, Any]) -> Problems:
        if not any(values.get(key) for key in ("cmdline", "exe", "pidfile", "port")):
            yield "", _NEEDS_A_RULE


_NEEDS_A_RULE = "needs at least one of cmdline, exe, pidfile, port"


@dataclass(frozen=True, config=STRICT)
class ServiceConfig(CrossChecked):
    name: Name
    match: ProcessMatch = None  # type: ignore[assignment]  # required; None only to say what it needs
    include_children: Boolean = False  # also count the matched processes' descendants
    port: Port | None = None  # the port it must listen on; defaults to match.port
    # What the service needs to answer: names of Redis instances, engines or other services. An
    # incident in any of them is an incident of this service (alert grouping and inhibition).
    depends_on: Texts = ()

    @classmethod
    def cross_problems(cls, values: Mapping[str, Any]) -> Problems:
        if values.get("match") is None:
            yield "match", _NEEDS_A_RULE

    def __post_init__(self) -> None:
        if self.port is None and self.match is not None and self.match.port is not None:
            object.__setattr__(self, "port", self.match.port)  # frozen: set once, while building


def _status_codes(value: Any) -> tuple[int, ...]:
    codes = value if isinstance(value, list | tuple) else [value]
    if not all(isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes):
        raise _invalid("status", "must be an HTTP status code or a list of them")
    return tuple(codes)


_STATUS_SCHEMA = {"type": "integer", "minimum": 100, "maximum": 599}
StatusCodes = Annotated[
    tuple[int, ...],
    Simple(_status_codes, {"anyOf": [_STATUS_SCHEMA, {"type": "array", "items": _STATUS_SCHEMA}]}),
]


@dataclass(frozen=True, config=STRICT)
class ExpectConfig:
    status: StatusCodes = ()  # empty: any 2xx
    json_field: Text | None = None  # dotted path that must exist in the JSON answer
    body_regex: Regex | None = None


@dataclass(frozen=True, config=STRICT)
class TlsClientConfig:
    ca_file: Text | None = None
    insecure_skip_verify: Boolean = False


_TARGET_CREDENTIALS = (
    "give them with username and password_env or password_file (basic auth), "
    "or bearer_token_env or bearer_token_file"
)


def _url_problems(url: Any, module: Any) -> list[str]:
    """What is wrong with a target's url for its module; with a bad module, either form will do."""
    checks = {"tcp": [check_address], BAD: [check_url, check_address]}.get(module, [check_url])
    messages = []
    for check in checks:
        try:
            check(url, _TARGET_CREDENTIALS if check is check_url else "a tcp probe only connects")
            return []
        except PydanticCustomError as exc:
            messages.append(exc.message())
    if len(messages) > 1 and not any("credentials" in message for message in messages):
        return ["must be an http:// or https:// URL, or HOST:PORT for module tcp"]
    return messages[:1]


@dataclass(frozen=True, config=STRICT)
class ProbeTarget(CrossChecked):
    name: Name
    module: Annotated[str, Choice(*PROBE_MODULES)] = "http"
    url: str = ""  # HOST:PORT for tcp
    layer: Annotated[str, Choice(*PROBE_LAYERS)] = "client"  # client: what users call
    service: Name | None = None  # the configured service this target belongs to (for the verdict)
    timeout: CallTimeout = INFERENCE_TIMEOUT  # the whole probe, first byte to last
    connect_timeout: CallTimeout | None = None  # default: min(10 s, timeout)
    body: Any = None  # the JSON request body (inference, openai_chat); None: the module's default
    model: Text | None = None  # openai_chat: None asks GET /v1/models for the first model
    stream: Boolean = False  # openai_chat: stream and record the time to first token
    expect: ExpectConfig = ExpectConfig()
    headers: StringMap = Field(default_factory=dict)
    bearer_token_env: Text | None = None
    bearer_token_file: Text | None = None
    tls: TlsClientConfig = TlsClientConfig()
    username: Text | None = None  # basic auth, with the password from password_env or password_file
    password_env: Text | None = None
    password_file: Text | None = None

    @classmethod
    def cross_problems(cls, values: Mapping[str, Any]) -> Problems:
        url, module = values.get("url"), values.get("module")
        if not url:
            yield "url", "is required"
        elif url is not BAD:
            yield from (("url", message) for message in _url_problems(url, module))
        if values.get("body") is not None and module not in ("inference", "openai_chat", BAD):
            yield "body", "only the inference and openai_chat modules send a body"
        yield from _one_secret("bearer_token", values)
        yield from _one_secret("password", values)
        if values.get("username") and not (values.get("password_env") or values.get("password_file")):
            yield "username", "needs password_env or password_file"
        basic = values.get("password_env") or values.get("password_file")
        if basic and (values.get("bearer_token_env") or values.get("bearer_token_file")):
            yield "bearer_token_env", "give a bearer token or a password, not both"

    def __post_init__(self) -> None:
        if self.connect_timeout is None:
            object.__setattr__(self, "connect_timeout", min(CONNECT_TIMEOUT, self.timeout))

    @property
    def bearer_token(self) -> Secret:
        return Secret(self.bearer_token_env, self.bearer_token_file)

    @property
    def password(self) -> Secret:
        return Secret(self.password_env, self.password_file)

    @property
    def expect_status(self) -> tuple[int, ...]:
        return self.expect.status

    @property
    def expect_json_field(self) -> str | None:
        return self.expect.json_field

    @property
    def expect_body_regex(self) -> str | None:
        return self.expect.body_regex

    @property
    def tls_ca_file(self) -> str | None:
        return self.tls.ca_file

    @property
    def tls_insecure_skip_verify(self) -> bool:
        return self.tls.insecure_skip_verify


# Credentials written into an address or URL would be shown wherever it is (metrics, pages, the
# next command): they are refused, and the message names the keys that take them.
RedisAddress = Annotated[
    str,
    Simple(
        partial(
            check_address, credentials="give the password with password_env or password_file (and username)"
        ),
        {"type": "string", "pattern": r"^[^@/]+:\d{1,5}$"},
    ),
]
EngineUrl = Annotated[
    str,
    Simple(
        partial(check_url, credentials="the engine's metrics are read without credentials"),
        {"type": "string", "format": "uri"},
    ),
]


@dataclass(frozen=True, config=STRICT)
class RedisQueue(CrossChecked):
    key: Text
    type: Annotated[str, Choice(*QUEUE_TYPES)] = "list"
    group: Text | None = None  # stream_pending: the consumer group

    @classmethod
    def cross_problems(cls, values: Mapping[str, Any]) -> Problems:
        if values.get("type") == "stream_pending" and not values.get("group"):
            yield "group", "is required for type stream_pending"


@dataclass(frozen=True, config=STRICT)
class RedisConfig(CrossChecked):
    name: Name
    address: RedisAddress = "127.0.0.1:6379"
    db: Annotated[int, WholeNumber(0, 1_000_000)] = 0
    username: Text | None = None  # for ACL users
    password_env: Text | None = None
    password_file: Text | None = None
    timeout: CallTimeout = 2.0
    queues: tuple[RedisQueue, ...] = ()

    @classmethod
    def cross_problems(cls, values: Mapping[str, Any]) -> Problems:
        yield from _one_secret("password", values)

    @property
    def password(self) -> Secret:
        return Secret(self.password_env, self.password_file)


@dataclass(frozen=True, config=STRICT)
class EngineConfig:
    name: Name
    kind: Annotated[str, Choice(*ENGINE_KINDS)] = "vllm"
    metrics_url: EngineUrl = "http://127.0.0.1:8000/metrics"
    service: Name | None = None
    timeout: CallTimeout = 5.0


@dataclass(frozen=True, config=STRICT)
class LogPattern:
    name: Name
    regex: Regex


@dataclass(frozen=True, config=STRICT)
class LogConfig:
    name: Name
    path: Text
    service: Name | None = None
    patterns: tuple[LogPattern, ...] = ()  # in addition to the built-in ones
    trace: Boolean = False  # the file holds JSON trace points (timestamp, stage, request id)
    max_line_bytes: Annotated[int, WholeNumber(256, 1024 * 1024)] = 8192


@dataclass(frozen=True, config=STRICT)
class GpuConfig:
    nvml: Boolean = True  # read through NVML (nvidia-ml-py); False goes straight to nvidia-smi
    nvidia_smi: Text = "nvidia-smi"  # the fallback command, a name on PATH or a path
    # Deadline of one NVML cycle or one nvidia-smi run: with persistence mode on (nvidia-persistenced,
    # as GPU nodes run) nvidia-smi answers in well under a second; a hung one is looked at twice
    # before the verdict names it, so interval + 2 x this is the time to that verdict (18 s).
    call_timeout: CallTimeout = 4.0


@dataclass(frozen=True, config=STRICT)
class ForensicsConfig:
    """Python stacks of a hung service, taken with py-spy before anyone restarts it."""

    enabled: Boolean = True
    # client probes of the service failed this many times in a row
    trigger_after_failures: Annotated[int, WholeNumber(1, 1000)] = 3
    hang_after: CallTimeout = 5.0  # a client probe of a live process unanswered this long is a hang
    dumps: Annotated[int, WholeNumber(1, 20)] = 3  # py-spy dumps per capture
    dump_interval: Annotated[float, Duration(maximum=10.0)] = 0.5
    timeout: CallTimeout = 20.0  # the whole capture
    cooldown: Annotated[float, Duration(maximum=7 * DAY)] = 600.0  # one automatic capture per service
    directory: Text = "/var/lib/autoglm-exporter/captures"
    max_captures: Annotated[int, WholeNumber(1, 10_000)] = 20
    max_bytes: Annotated[int, WholeNumber(1024, 2**40)] = 50 * 1024 * 1024
    py_spy: Text = "py-spy"


@dataclass(frozen=True, config=STRICT)
class EnvironmentConfig:
    # service -> a snapshot file (autoglm-exporter snapshot -o) to compare with; by default the
    # first snapshot the exporter takes of the service is its baseline.
    baselines: StringMap = Field(default_factory=dict)
    model_dirs: Texts = ()  # hashed (cached by size and mtime) to notice changed weights


@dataclass(frozen=True, config=STRICT)
class DiagnosisConfig:
    # A new verdict must hold for this many readings before it replaces the current one (unless it
    # only says more about the same symptom): one noisy reading never flips the verdict.
    confirm_readings: Annotated[int, WholeNumber(1, 100)] = 2
    # A crash loop: the service's process died younger than `restart_loop_young`, twice within
    # `restart_loop_window` (the defaults of base/thresholds.py). A service that restarts slowly
    # by design, or a test that runs time faster, sets its own.
    restart_loop_young: Annotated[float, Duration(maximum=DAY)] = 60.0
    restart_loop_window: Annotated[float, Duration(maximum=DAY)] = 120.0


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


@dataclass(frozen=True, config=STRICT)
class Config:
    global_: Annotated[GlobalConfig, Field(alias="global")] = GlobalConfig()
    paths: PathsConfig = PathsConfig()
    services: tuple[ServiceConfig, ...] = DEFAULT_SERVICES
    targets: tuple[ProbeTarget, ...] = DEFAULT_TARGETS
    redis: tuple[RedisConfig, ...] = DEFAULT_REDIS
    engines: tuple[EngineConfig, ...] = DEFAULT_ENGINES
    logs: tuple[LogConfig, ...] = DEFAULT_LOGS
    gpu: GpuConfig = GpuConfig()
    forensics: ForensicsConfig = ForensicsConfig()
    environment: EnvironmentConfig = EnvironmentConfig()
    diagnosis: DiagnosisConfig = DiagnosisConfig()
    collectors: CollectorsConfig = CollectorsConfig()
    # Where it was read from; not a key of the file.
    source: str = dataclasses.field(default="<defaults>", init=False, compare=False)

    @property
    def interval(self) -> float:
        return self.global_.interval

    @property
    def timeout(self) -> float:
        return self.global_.timeout

    @property
    def jitter(self) -> float:
        return self.global_.jitter

    @property
    def proc_root(self) -> str:
        return self.paths.proc

    @property
    def sys_root(self) -> str:
        return self.paths.sys

    def collector(self, name: str) -> CollectorConfig:
        """A collector's settings, resolved: what the file says, else its own default, else `global`."""
        declaration = declared(name)
        given = getattr(self.collectors, name, None) or declaration.section()
        return CollectorConfig(
            enabled=given.enabled,
            interval=given.interval or declaration.interval(self),
            timeout=given.timeout or declaration.timeout(self),
        )


def declare(declaration: CollectorDeclaration) -> None:
    """Add a collector declared outside config/collectors.py (a test's, a plugin's), before the
    config is read: its section joins `collectors:` of every config parsed from now on, and the
    registry builds it like the others."""
    if any(d.name == declaration.name for d in DECLARED):
        raise ValueError(f"a collector named {declaration.name!r} is already declared")
    DECLARED.append(declaration)
    section = _collectors_section(DECLARED)
    globals()["CollectorsConfig"] = section  # what Config's annotation names, resolved again below
    field = Config.__dataclass_fields__["collectors"]
    field.default, field.type = section(), section
    rebuild_dataclass(Config, force=True)  # type: ignore[arg-type]  # pydantic types its own dataclasses apart
