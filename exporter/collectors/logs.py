"""Error logs and trace logs: what `tail -f error.log` shows an operator, counted.

Each configured log is followed like `tail -F` (see logfollow.LogFollower): what the file held when
the exporter started is history and is not counted; new lines are read on every run, at most
4 MiB a log a run, and survive rotation, truncation and deletion.

Error logs: every new line is checked against every pattern (the built-in ones below plus the
log's own; a user pattern with a built-in's name replaces it). A line counts once for each pattern
it matches; several lines of one event can match (a kernel OOM kill prints an `oom-kill:` line and
an `Out of memory: Killed process` line), so the counters count lines, not incidents. Built-in
patterns are case-insensitive; user patterns are used as written (prefix `(?i)` to ignore case).
The last matches are kept, redacted and cut to 512 characters, for the diagnosis and the page.
Timestamps are when the exporter read the line, not what the line says.

Trace logs (`trace: true`): each line is a JSON object with `ts` (epoch seconds, or an ISO-8601
string; one without a zone is taken as UTC), `stage` and `request_id`. A trace point marks the END
of the stage it names: the stage's duration is its `ts` minus the `ts` of the previous point of the
same request. The first point of a request only starts the clock (call it "received", "start", ...).
A point whose stage is terminal (done, end, finish(ed), complete(d), error, failed, aborted,
cancelled) is observed like any other and then closes the request: the next point with that
request_id starts a new clock. At most MAX_OPEN_REQUESTS requests are remembered (the least
recently updated is forgotten first), and the first MAX_STAGES stage names get their own label,
later ones are counted as "other". Lines that are not such objects, and points earlier than the
previous point of their request, are counted as invalid. Trace logs are not matched against error
patterns.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.utils import floatToGoString

from ..config import LogConfig
from ..facts.logs import LogFacts, LogMatch, LogsFacts
from ..logs.follow import LogFollower
from ..logs.redact import redact
from ..metrics.spec import Family, counter, gauge, histogram, info
from .base import Collector, Result

# name -> case-insensitive regular expression, written against what the software really prints.
BUILTIN_PATTERNS: dict[str, str] = {
    # PyTorch: "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB ..." (older:
    # "RuntimeError: CUDA out of memory.", "torch.cuda.OutOfMemoryError"), "CUDA error: out of
    # memory" from kernels, the driver API's CUDA_ERROR_OUT_OF_MEMORY, cuBLAS failing to allocate
    # its workspace, and vLLM finding no GPU memory left for its KV cache.
    "cuda_oom": (
        r"CUDA out of memory"
        r"|\btorch\.(?:cuda\.)?OutOfMemoryError\b"
        r"|CUDA error: out of memory"
        r"|\bCUDA_ERROR_OUT_OF_MEMORY\b"
        r"|\bcudaErrorMemoryAllocation\b"
        r"|\bCUBLAS_STATUS_ALLOC_FAILED\b"
        r"|No available memory for the cache blocks"
    ),
    # transformers' from_pretrained errors, torch's load_state_dict, safetensors, and vLLM's model
    # registry and engine start-up.
    "model_load_failure": (
        r"\bcan(?:'|’|no)t load (?:the )?(?:model|tokenizer|config|weights)\b"
        r"|\berror no file named\b"
        r"|\bdoes not appear to have a file named\b"
        r"|\bis not a local folder and is not a valid model identifier"
        r"|\bunable to load weights from\b"
        r"|\berror\(s\) in loading state_dict\b"
        r"|\bmodel architectures? \[[^\]]*\] (?:are|is) not supported"
        r"|\bmodel architectures? \[[^\]]*\] failed to be inspected"
        r"|\bthe checkpoint you are trying to load has model type\b"
        r"|\bunrecognized model in\b"
        r"|\bSafetensorError\b"
        r"|\berror while deserializing header\b"
        r"|\bfailed to load (?:the )?model\b"
        r"|\berror (?:while )?loading (?:the )?model\b"
        r"|\bmodel load(?:ing)? failed\b"
        r"|\bengine core initialization failed\b"
    ),
    # "FileNotFoundError: [Errno 2] No such file or directory: '/etc/open-autoglm/config.yaml'",
    # "config file not found", "cannot open configuration file".
    "config_not_found": (
        r"(?:\bFileNotFoundError\b|No such file or directory)"
        r"(?=.*?(?:config|\bconf\b|\.conf\b|settings|\.ya?ml\b|\.toml\b|\.ini\b|\.cfg\b|\.env\b))"
        r"|\bconfig(?:uration)?[ _-]?file\b.{0,120}?"
        r"\b(?:not found|does not exist|doesn't exist|is missing|missing|could not be found|cannot be found)"
        r"|\b(?:cannot|can't|could not|couldn't|unable to|failed to) (?:find|locate|open|read) "
        r"(?:the )?config(?:uration)?(?: file)?\b"
    ),
    # torch's "NCCL error in: .../ProcessGroupNCCL.cpp:1333, unhandled system error", NCCL's own
    # result names and "host:pid:tid [0] ... NCCL WARN ..." lines, and the c10d watchdog.
    "nccl_error": (
        r"\bNCCL (?:error|WARN)\b"
        r"|\bnccl(?:UnhandledCudaError|SystemError|InternalError|InvalidArgument|InvalidUsage|RemoteError)\b"
        r"|\bWatchdog caught collective operation timeout\b"
        r"|\bNCCL communicator was aborted\b"
    ),
    "python_traceback": r"\bTraceback \(most recent call last\):",
    # Kernel: "Out of memory: Killed process 1234 (python)" (older kernels: "Kill process"; cgroups:
    # "Memory cgroup out of memory: Killed process"), "oom-kill:constraint=..."; systemd: "A process
    # of this unit has been killed by the OOM killer.", "Failed with result 'oom-kill'."; Docker /
    # Kubernetes "OOMKilled"; and the shell's "Killed" when the service died of SIGKILL.
    "oom_killed": (
        r"\bout of memory: kill(?:ed)? process\b"
        r"|\boom-kill\b"
        r"|\bkilled by the OOM killer\b"
        r"|\bOOMKilled\b"
        r"|(?:^|:)\s*(?-i:Killed)\s*$"
        r"|\bline \d+:\s+\d+ (?-i:Killed)\b"
    ),
}

# Lower-case words one of which every line matching the built-in pattern contains: a line holding
# none of them is not searched (a case-insensitive regex is slow; `in` on a string is not).
BUILTIN_KEYWORDS: dict[str, tuple[str, ...]] = {
    "cuda_oom": ("memory", "alloc_failed"),
    "model_load_failure": (
        "t load",  # can't / cannot / can’t load
        "file named",
        "model identifier",
        "weights from",
        "loading state_dict",
        "architecture",
        "model type",
        "unrecognized model",
        "safetensor",
        "deserializ",
        "to load",  # failed to load (the) model
        "loading model",
        "loading the model",
        "load failed",
        "loading failed",
        "engine core",
    ),
    "config_not_found": ("no such file", "filenotfound", "config"),
    "nccl_error": ("nccl", "watchdog"),
    "python_traceback": ("traceback",),
    "oom_killed": ("oom", "kill"),
}

TRACE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
TERMINAL_STAGES = frozenset(
    {"done", "end", "finish", "finished", "complete", "completed", "error", "failed", "aborted", "cancelled"}
)
MAX_OPEN_REQUESTS = 10_000
MAX_STAGES = 32  # named stage labels a log; later names are counted as OTHER_STAGE
OTHER_STAGE = "other"
MAX_STAGE_NAME = 64
MAX_REQUEST_ID = 256
RECENT_MATCHES = 10
MAX_MATCH_LINE = 512

ERRORS = counter(
    "autoglm_log_errors",
    "New lines of the log that matched the error pattern since the exporter started.",
    "log",
    "pattern",
)
LINES = counter(
    "autoglm_log_lines", "New complete lines read from the log since the exporter started.", "log"
)
PRESENT = gauge("autoglm_log_file_present", "1 when the log file exists as a regular file, else 0.", "log")
INFO = info("autoglm_log", "Each watched log and the service it belongs to (empty: none).", "log", "service")
LAST_MATCH = gauge(
    "autoglm_log_last_match_timestamp_seconds",
    "When a line of the log last matched the pattern (as read), in seconds since the epoch, 0 if never.",
    "log",
    "pattern",
)
TRUNCATED = counter(
    "autoglm_log_truncated_lines",
    "Lines of the log longer than its max_line_bytes, cut to that length.",
    "log",
)
TRACE_DURATION = histogram(
    "autoglm_trace_stage_duration_seconds",
    "Time from a request's previous trace point to the trace point that ends the stage.",
    "log",
    "stage",
)
TRACE_INVALID = counter(
    "autoglm_trace_invalid_lines",
    "Lines of the trace log that are not valid trace points (bad JSON, fields, or time order).",
    "log",
)


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(TRACE_BUCKETS) + 1))  # last: +Inf
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(TRACE_BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        result, running = [], 0
        for bound, count in zip((*TRACE_BUCKETS, math.inf), self.buckets, strict=True):
            running += count
            result.append((floatToGoString(bound), float(running)))
        return result


class _TraceState:
    def __init__(self) -> None:
        self.open: OrderedDict[str, float] = OrderedDict()  # request_id -> ts of its last point
        self.stages: dict[str, _Histogram] = {}
        self.invalid = 0

    def feed(self, line: str) -> None:
        if not line.strip():
            return
        point = _parse_point(line)
        if point is None:
            self.invalid += 1
            return
        request_id, stage, ts = point
        previous = self.open.get(request_id)
        if previous is not None:
            if ts < previous:
                self.invalid += 1
                return
            self._histogram(stage).observe(ts - previous)
        if stage.lower() in TERMINAL_STAGES:
            self.open.pop(request_id, None)  # closed (a lone terminal point opens nothing)
            return
        self.open[request_id] = ts
        self.open.move_to_end(request_id)
        while len(self.open) > MAX_OPEN_REQUESTS:
            self.open.popitem(last=False)

    def _histogram(self, stage: str) -> _Histogram:
        if stage not in self.stages and (
            len(stage) > MAX_STAGE_NAME or len(self.stages.keys() - {OTHER_STAGE}) >= MAX_STAGES
        ):
            stage = OTHER_STAGE
        return self.stages.setdefault(stage, _Histogram())


def _parse_point(line: str) -> tuple[str, str, float] | None:
    try:
        point = json.loads(line)
    except ValueError:
        return None
    if not isinstance(point, dict):
        return None
    stage, request_id = point.get("stage"), point.get("request_id")
    ts = _timestamp(point.get("ts", point.get("timestamp")))
    if not isinstance(stage, str) or not stage or ts is None:
        return None
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return None
    request_id = str(request_id)
    if not request_id or len(request_id) > MAX_REQUEST_ID:
        return None
    return request_id, stage, ts


def _timestamp(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return None


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    keywords: tuple[str, ...]  # empty: search every line

    def matches(self, line: str, lowered: str) -> bool:
        if self.keywords and not any(keyword in lowered for keyword in self.keywords):
            return False
        return self.regex.search(line) is not None


class _LogState:
    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self.follower = LogFollower(config.path, max_line_bytes=config.max_line_bytes)
        patterns: dict[str, _Pattern] = {
            name: _Pattern(re.compile(regex, re.IGNORECASE), BUILTIN_KEYWORDS[name])
            for name, regex in BUILTIN_PATTERNS.items()
        }
        for user in config.patterns:
            patterns[user.name] = _Pattern(re.compile(user.regex), ())
        self.patterns: tuple[tuple[str, _Pattern], ...] = () if config.trace else tuple(patterns.items())
        self.counts = {name: 0 for name, _ in self.patterns}
        self.last_match = {name: 0.0 for name, _ in self.patterns}
        self.recent: deque[LogMatch] = deque(maxlen=RECENT_MATCHES)
        self.lines = 0
        self.trace = _TraceState() if config.trace else None

    def read(self, now: float) -> LogFacts:
        lines = self.follower.read_lines()
        self.lines += len(lines)
        new = {name: 0 for name, _ in self.patterns}
        if self.trace is not None:
            for line in lines:
                self.trace.feed(line)
        else:
            for line in lines:
                lowered = line.lower()
                for name, pattern in self.patterns:
                    if pattern.matches(line, lowered):
                        new[name] += 1
                        self.last_match[name] = now
                        self.recent.append(LogMatch(now, name, _shown(line)))
            for name, count in new.items():
                self.counts[name] += count
        config = self.config
        return LogFacts(
            name=config.name,
            path=config.path,
            service=config.service,
            present=self.follower.present,
            error=self.follower.error,
            counts=dict(self.counts),
            new_matches=new,
            recent=tuple(self.recent),
        )


def _shown(line: str) -> str:
    """What may be kept and shown of a line: secrets removed first, then cut to MAX_MATCH_LINE."""
    line = redact(line)
    if len(line) > MAX_MATCH_LINE:
        line = line[: MAX_MATCH_LINE - 1] + "…"
    return line


class LogsCollector(Collector):
    name = "logs"
    metrics = (ERRORS, LINES, PRESENT, INFO, LAST_MATCH, TRUNCATED, TRACE_DURATION, TRACE_INVALID)
    items_attribute = "logs"
    state_per_item = ("_states",)  # counts, recent matches and the follower's offset of each log

    def __init__(self, logs: tuple[LogConfig, ...]) -> None:
        self.logs = logs
        self.settings = (logs,)
        self._states = {log.name: _LogState(log) for log in logs}

    def collect(self) -> Result:
        now = time.time()
        facts = {name: state.read(now) for name, state in self._states.items()}
        return Result(self._families(facts), LogsFacts(facts))

    def _families(self, facts: dict[str, LogFacts]) -> list[Family]:
        families = {spec.name: spec.family() for spec in self.metrics}
        for name, state in self._states.items():
            log = facts[name]
            families[LINES.name].add_metric([name], state.lines)
            families[PRESENT.name].add_metric([name], 1 if log.present else 0)
            families[INFO.name].add_metric([name, log.service or ""], {})
            families[TRUNCATED.name].add_metric([name], state.follower.truncated_lines)
            for pattern, _ in state.patterns:
                families[ERRORS.name].add_metric([name, pattern], state.counts[pattern])
                families[LAST_MATCH.name].add_metric([name, pattern], state.last_match[pattern])
            if state.trace is not None:
                families[TRACE_INVALID.name].add_metric([name], state.trace.invalid)
                for stage, hist in sorted(state.trace.stages.items()):
                    families[TRACE_DURATION.name].add_metric([name, stage], hist.cumulative(), hist.total)
        return list(families.values())
